"""AUL: the asymmetric unhinged loss (Zhou et al., "Asymmetric loss functions for noise-tolerant
learning: theory and applications", TPAMI 2023; ICML 2021 version), the paper's "AUL" row.

    AUL(p_y)  = ((a - p_y)^q - (a - 1)^q) / q          (a > 1, q > 0; zero at p_y = 1)
    AGCE(p_y) = ((a + 1)^q - (a + p_y)^q) / q          (a > 0, q > 0)
    AEL(p_y)  = exp(-p_y / a)                          (a > 0)
    NCE+AUL   = alpha * NCE + beta * AUL

Source: hitcszx/ALFs (official). Losses: `lnl/losses.py` (`AUELoss`, `AGCELoss`, `AExpLoss`,
`NCEandAUE`; p = softmax, no clamping of p, batch mean times `scale`). Defaults: `lnl/config.py`:
- `"AUL": AUELoss(a=5.5, q=3)` in both `CIFAR10_CONFIG` and `CIFAR100_CONFIG` (the same values);
- `"NCEandAUL"`: CIFAR-10 `NCEandAUE(alpha=1, beta=4, a=6.3, q=1.5)`,
  CIFAR-100 `NCEandAUE(alpha=10, beta=0.015, a=6, q=3)`;
- `lnl/main.py` clips the gradient norm at `--grad_bound` (default 5.0) after every backward:
  `grad_clip = 5.0`.
`cifar10`, `cifar10n` and `shapes` take the CIFAR-10 values, `cifar100` and `cifar100n` the CIFAR-100
values.

Which loss the paper's row is: the row is named "AUL" and cites Zhou et al. 2023, which defines AUL as a
loss of its own and names the combination separately ("NCEandAUL" in `lnl/config.py`, "NCE+AUL" in
the paper). Where EchoAlign means a combination it names the framework ("APL" for NCE+RCE). So the
default is plain AUL (`variant = "aul"`); `variant = "nce_aul"` trains NCE+AUL with its own official
per-dataset alpha, beta, a, q (fields `alpha`, `beta`, `nce_aul_a`, `nce_aul_q`), so switching the
variant needs no other override. Caveat: the row's CIFAR-100 numbers (about 70% at 30% symmetric noise)
are high for a plain bounded loss, which are usually slow to fit 100 classes; the paper does not say
which, and this choice is a judgement.

Deliberate deviations:
- `aul_loss`, `agce_loss`, `ael_loss` take p_y = exp(log_softmax) at the target instead of the
  official softmax · one-hot sum; same value without building the one-hot.
- NCE is `echobench.baselines.apl.nce_loss` (same formula as ALFs' `NCELoss`).
- Network, optimizer and schedule are the common protocol's, not the repository's (CIFAR-10: CNN,
  SGD lr 0.01, cosine over 120 epochs; CIFAR-100: ResNet-34, SGD lr 0.1, cosine over 200 epochs).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from echobench.baselines.apl import nce_loss
from echobench.errors import EchobenchError
from echobench.training.method import SingleNetworkMethod, register_method, uses_cifar100_defaults

VARIANTS = ("aul", "nce_aul")


def _p_target(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Softmax probability of the target class, (N,)."""
    return F.log_softmax(logits, dim=1).gather(1, targets.unsqueeze(1)).squeeze(1).exp()


def aul_loss(logits: torch.Tensor, targets: torch.Tensor, *, a: float, q: float) -> torch.Tensor:
    """Mean asymmetric unhinged loss ((a - p_y)^q - (a - 1)^q) / q; a > 1, q > 0. No clamping of p."""
    if not (a > 1 and q > 0):
        raise ValueError(f"aul_loss: needs a > 1 and q > 0 (got a={a}, q={q})")
    p_y = _p_target(logits, targets)
    return ((torch.pow(a - p_y, q) - (a - 1) ** q) / q).mean()


def agce_loss(logits: torch.Tensor, targets: torch.Tensor, *, a: float, q: float) -> torch.Tensor:
    """Mean asymmetric generalized cross-entropy ((a + 1)^q - (a + p_y)^q) / q; a > 0, q > 0."""
    if not (a > 0 and q > 0):
        raise ValueError(f"agce_loss: needs a > 0 and q > 0 (got a={a}, q={q})")
    p_y = _p_target(logits, targets)
    return (((a + 1) ** q - torch.pow(a + p_y, q)) / q).mean()


def ael_loss(logits: torch.Tensor, targets: torch.Tensor, *, a: float) -> torch.Tensor:
    """Mean asymmetric exponential loss exp(-p_y / a); a > 0."""
    if not a > 0:
        raise ValueError(f"ael_loss: needs a > 0 (got a={a})")
    return torch.exp(-_p_target(logits, targets) / a).mean()


def nce_aul_loss(logits: torch.Tensor, targets: torch.Tensor, *, alpha: float, beta: float, a: float, q: float) -> torch.Tensor:
    """NCE+AUL (the official `NCEandAUE`): alpha * NCE + beta * AUL, each a batch mean."""
    return alpha * nce_loss(logits, targets) + beta * aul_loss(logits, targets, a=a, q=q)


@dataclass(frozen=True)
class AULParams:
    variant: str = "aul"  # "aul" (the paper's row, see the module docstring) or "nce_aul"
    a: float = 5.5  # plain AUL, lnl/config.py "AUL" (CIFAR-10 and CIFAR-100)
    q: float = 3.0
    alpha: float = 1.0  # NCE+AUL only: NCE weight (lnl/config.py CIFAR10_CONFIG "NCEandAUL")
    beta: float = 4.0  # NCE+AUL only: AUL weight
    nce_aul_a: float = 6.3  # NCE+AUL only: AUL's a
    nce_aul_q: float = 1.5  # NCE+AUL only: AUL's q
    grad_clip: float | None = 5.0  # lnl/main.py --grad_bound

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise EchobenchError(f"aul: variant must be one of {list(VARIANTS)} (got {self.variant!r})")
        for name, a, q in (("a, q", self.a, self.q), ("nce_aul_a, nce_aul_q", self.nce_aul_a, self.nce_aul_q)):
            if not (a > 1 and q > 0):
                raise EchobenchError(f"aul: {name} need a > 1 and q > 0 (got {a}, {q})")
        if self.alpha < 0 or self.beta < 0:
            raise EchobenchError(f"aul: alpha and beta must be >= 0 (got {self.alpha}, {self.beta})")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise EchobenchError(f"aul: grad_clip must be > 0 or null (got {self.grad_clip})")


@register_method("aul")
class AsymmetricUnhingedLoss(SingleNetworkMethod):
    """Plain AUL (or NCE+AUL with `variant: nce_aul`) under the common protocol, gradient norm clipped at 5."""

    Params = AULParams

    @classmethod
    def default_params(cls, dataset: str) -> AULParams:
        if uses_cifar100_defaults(dataset):  # lnl/config.py CIFAR100_CONFIG
            return AULParams(a=5.5, q=3.0, alpha=10.0, beta=0.015, nce_aul_a=6.0, nce_aul_q=3.0)
        return AULParams(a=5.5, q=3.0, alpha=1.0, beta=4.0, nce_aul_a=6.3, nce_aul_q=1.5)  # CIFAR10_CONFIG

    def loss(self, logits, targets, indices, epoch, task):
        p = self.params
        if p.variant == "nce_aul":
            return nce_aul_loss(logits, targets, alpha=p.alpha, beta=p.beta, a=p.nce_aul_a, q=p.nce_aul_q)
        return aul_loss(logits, targets, a=p.a, q=p.q)

