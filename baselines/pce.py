"""PCE: partially Huberised cross-entropy (Menon et al., "Can gradient clipping mitigate label
noise?", ICLR 2020), the paper's "PCE" row.

    loss(p_y) = -tau * p_y + log(tau) + 1    if p_y <= 1/tau
              = -log(p_y)                     otherwise

The linear piece is the tangent of -log p at p = 1/tau, so the loss and its derivative are continuous
there (both pieces give log(tau), both slopes -tau). The gradient in p_y is bounded by tau.

There is no official code. Source: the reproduction dmizr/phuber, `phuber/loss.py`
(`PHuberCrossEntropy`: threshold 1/tau, boundary term log(tau) + 1, softmax probabilities).
Defaults: tau = 2 for CIFAR-10 (dmizr/phuber `README.md`: example command and results table
"PHuber-CE tau=2" on CIFAR-10) and tau = 10 for CIFAR-100 (dmizr/phuber `conf/loss/phuber_ce.yaml`
default `tau: 10`, and the README's CIFAR-100 table "PHuber-CE tau=10").
The reproduction trains without gradient clipping (`conf/hparams/cifar*_resnet*.yaml`:
`grad_clip_max_norm: null`): `grad_clip = None`. `cifar10`, `cifar10n` and `shapes` take the CIFAR-10
value, `cifar100` and `cifar100n` the CIFAR-100 one.

Deliberate deviations:
- Numerics: the reference takes `softmax` then indexes and writes each branch with boolean-mask
  assignment. Here log p_y comes from `log_softmax` (finite for any finite logits), the log branch is
  -log p_y from it directly (no log of an underflowed 0), p_y = exp(log p_y) feeds the linear branch,
  and the branch is chosen in log space (log p_y <= -log tau) with `torch.where`. Same values.
- The dmizr/phuber README shows tau = 50 doing better on CIFAR-100; echobench keeps tau = 10.
- Network, optimizer and schedule are the common protocol's, not the reproduction's (ResNet, SGD
  Nesterov lr 0.1, weight decay 5e-4, steps at 60/120/160 by 0.2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from echobench.errors import EchobenchError
from echobench.training.method import SingleNetworkMethod, register_method, uses_cifar100_defaults



def pce_loss(logits: torch.Tensor, targets: torch.Tensor, *, tau: float) -> torch.Tensor:
    """Mean partially Huberised cross-entropy of `logits` (N, C) against `targets` (N,); tau > 1."""
    if not tau > 1:
        raise ValueError(f"pce_loss: tau must be > 1 (got {tau})")
    log_p_y = F.log_softmax(logits, dim=1).gather(1, targets.unsqueeze(1)).squeeze(1)
    log_tau = math.log(tau)
    linear = -tau * torch.exp(log_p_y) + (log_tau + 1.0)
    clipped = log_p_y <= -log_tau  # p_y <= 1/tau
    return torch.where(clipped, linear, -log_p_y).mean()


@dataclass(frozen=True)
class PCEParams:
    tau: float = 2.0  # CIFAR-10 value (dmizr/phuber README)
    grad_clip: float | None = None  # the reproduction does not clip

    def __post_init__(self):
        if not self.tau > 1:
            raise EchobenchError(f"pce: tau must be > 1 (got {self.tau})")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise EchobenchError(f"pce: grad_clip must be > 0 or null (got {self.grad_clip})")


@register_method("pce")
class PartiallyHuberisedCE(SingleNetworkMethod):
    """Partially Huberised cross-entropy on the noisy labels under the common protocol."""

    Params = PCEParams

    @classmethod
    def default_params(cls, dataset: str) -> PCEParams:
        return PCEParams(tau=10.0 if uses_cifar100_defaults(dataset) else 2.0)

    def loss(self, logits, targets, indices, epoch, task):
        return pce_loss(logits, targets, tau=self.params.tau)
