"""Co-Dis / CoDis (Xia et al., ICCV 2023), after tmllab/2023_ICCV_CoDis `loss.py` (`loss_ours`,
`js_loss_compute`) and `main.py`.

Two networks. Per sample, each network's score is ℓ_k = CE(f_k(x), ỹ) − λ·JS(p₁, p₂), with p_k the
softmax of network k and JS the Jensen–Shannon divergence between the two networks' predictions:
samples with a small loss AND a high discrepancy rank first. Each network keeps its (1 − τ_t)
smallest ℓ_k, and each is trained on the mean of its own ℓ over its PEER's kept samples (the JS term
stays in the training loss, pushing the networks apart on the selected data).

Defaults: λ = 0.15 (`main.py --co_lam`; `loss_ours`'s own default 0.1 is always overridden by it);
the repository has one value for every dataset. T_k = 10 (`--num_gradual`), τ = the noise rate
(`--forget_rate` unset), linear ramp (`--fr_type type_1`, no exponent; c = 1 here),
`epoch_decay_start` 80 for every dataset (used under the co-teaching protocol only).

Deliberate deviations from the official code:
- JS divergence. `js_loss_compute` calls `F.kl_div(log_softmax(pred), mean)`, which computes
  KL(M‖P) (kl_div's target is the first argument of the KL), so it returns ½KL(M‖P₁) + ½KL(M‖P₂),
  not the paper's JS = ½KL(P₁‖M) + ½KL(P₂‖M). The two agree to leading order for close predictions,
  but the official form is unbounded where it differs most (JS ≤ log 2). echobench uses the true JS;
  `official_js=True` uses the official form (λ = 0.15 was tuned with it).
- Update order. The official loop steps network 1 before back-propagating network 2's loss through
  a graph holding network 1's pre-step weights, which fails on PyTorch ≥ 1.5; both gradients are taken
  before either step (`two_networks.backward_each`), each network getting only the gradient of its own
  loss with respect to its own weights — what the official code intended and computed.
- The official training loader has `shuffle=False`; echobench shuffles every epoch. The official
  `CNN(n_outputs=args.c)` has `--c` default 10 even for CIFAR-100 unless passed; echobench always uses
  the dataset's class count. The official CoDis `model.py` CNN is Co-teaching's 9-layer CNN with
  BatchNorm momentum 0.999 (PyTorch convention: running statistics ≈ the last batch); echobench trains
  the protocol's network, which under the co-teaching protocol is Co-teaching's CNN (momentum 0.1).
- Kept count, ties and the forget-rate ramp as in `two_networks` (the official fallback to the whole
  batch when nothing would be kept becomes a one-sample minimum).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from echobench.training.method import register_method

from echobench.baselines.two_networks import TwoNetworkMethod, mean_over, num_remember, small_loss_order

_LOG2 = math.log(2.0)


def js_divergence(logits1: torch.Tensor, logits2: torch.Tensor) -> torch.Tensor:
    """Per-sample Jensen–Shannon divergence (nats) between softmax(logits1) and softmax(logits2): (N,)."""
    log_p = F.log_softmax(logits1, dim=1)
    log_q = F.log_softmax(logits2, dim=1)
    log_m = torch.logsumexp(torch.stack([log_p, log_q]), dim=0) - _LOG2
    kl_pm = (log_p.exp() * (log_p - log_m)).sum(1)
    kl_qm = (log_q.exp() * (log_q - log_m)).sum(1)
    return 0.5 * (kl_pm + kl_qm)


def official_js_term(logits1: torch.Tensor, logits2: torch.Tensor) -> torch.Tensor:
    """Per-sample ½KL(M‖P₁) + ½KL(M‖P₂), what tmllab/2023_ICCV_CoDis `js_loss_compute` returns: (N,)."""
    log_p = F.log_softmax(logits1, dim=1)
    log_q = F.log_softmax(logits2, dim=1)
    log_m = torch.logsumexp(torch.stack([log_p, log_q]), dim=0) - _LOG2  # no log(0) when both underflow
    m = log_m.exp()
    return 0.5 * ((m * (log_m - log_p)).sum(1) + (m * (log_m - log_q)).sum(1))


def co_dis_loss(logits1: torch.Tensor, logits2: torch.Tensor, targets: torch.Tensor, *, forget_rate: float,
                co_lambda: float = 0.15, official_js: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss1, loss2): ℓ_k = CE_k − λ·JS(p₁, p₂) per sample; network k's loss is the mean of ℓ_k over
    the ⌊(1 − τ)·N⌋ samples with the smallest ℓ under its PEER."""
    js = (official_js_term if official_js else js_divergence)(logits1, logits2)
    score1 = F.cross_entropy(logits1, targets, reduction="none") - co_lambda * js
    score2 = F.cross_entropy(logits2, targets, reduction="none") - co_lambda * js
    keep = num_remember(targets.shape[0], forget_rate)
    kept1 = small_loss_order(score1)[:keep]
    kept2 = small_loss_order(score2)[:keep]
    return mean_over(score1, kept2), mean_over(score2, kept1)


@register_method("co-dis")
class CoDis(TwoNetworkMethod):
    """Co-Dis: Co-teaching's exchange, ranking by CE minus the networks' JS discrepancy."""

    @dataclass(frozen=True)
    class Params:
        forget_rate: float | None = None  # τ; None: the nominal noise rate (`main.py`, --forget_rate unset)
        num_gradual: int = 10  # T_k (`main.py --num_gradual`)
        exponent: float = 1.0  # c; CoDis's `type_1` ramp is linear (no exponent option)
        co_lambda: float = 0.15  # λ (`main.py --co_lam`)
        epoch_decay_start: int = 80  # co-teaching protocol only (`main.py --epoch_decay_start`, every dataset)
        official_js: bool = False  # ½KL(M‖P₁) + ½KL(M‖P₂) as `js_loss_compute` computes it

    @classmethod
    def default_params(cls, dataset: str) -> "CoDis.Params":
        return cls.Params()  # the repository uses the same values for every dataset

    def pair_losses(self, logits1, logits2, targets, forget_rate):
        p = self.params
        return co_dis_loss(logits1, logits2, targets, forget_rate=forget_rate, co_lambda=p.co_lambda,
                           official_js=p.official_js)
