"""SIGUA-SL (Han et al., ICML 2020), after bhanML/SIGUA `loss.py` (`loss_sigua_sl`), `utils.py`
(`train`, the drop-rate and Adam schedules), `main.py`, `arguments.py` and
`scripts/cifar10_sigua_sl.sh`.

One network. The batch is ranked by cross-entropy; the ⌊(1 − τ_t)·N⌋ smallest ("good" data) get
ordinary gradient descent, and the next ⌊sigua_rate·N_forget⌋ samples past the cut ("bad" data,
N_forget = N − kept) get gradient ASCENT scaled by γ:

    loss = mean(CE over kept) − γ · mean(CE over the next ⌊sigua_rate·N_forget⌋ samples).

SIGUA-SL is a single-network method: the official `main.py` builds one `CNN` and one optimizer and
`loss_sigua_sl` ranks the batch by that network's own loss (no peer, no exchange); it borrows
Co-teaching's forget-rate schedule and Adam plan (`utils.py`: `drop_rate_schedule` is Co-teaching's
`rate_schedule`, `adjust_learning_rate_adam_sl` its lr / β1 plan). So `Sigua` runs the shared
selection loop with one network, from the seed stream "model" (the stream CE's network uses).

Deliberate deviations from the official code:
- Empty ascent set. The official code takes `loss_big[:1]` when ⌊sigua_rate·N_forget⌋ = 0 (one ascent
  sample even though the rate asks for none) and divides by `len(loss_sigua)`, which is 0/0 = NaN
  when nothing is forgotten. echobench follows the stated rule: the ascent set has exactly
  ⌊sigua_rate·N_forget⌋ samples and an empty one contributes 0, so the loss is then the plain
  small-loss mean. `official_min_one_ascent=True` restores the one-sample minimum (still without
  the 0/0 when nothing is forgotten).
- Kept count and ties as in `two_networks.num_remember` / `small_loss_order`; forget-rate ramp as in
  `two_networks.forget_rate_schedule` (first epoch keeps all).
- The official `main.py` creates Adam with betas (0.9, `--momentum` = 0.1), but `adjust_learning_rate_adam_sl`
  resets them to (β1 plan, 0.999) before the first step, so β2 = 0.999 (echobench's Adam) in effect.

Defaults (`scripts/cifar10_sigua_sl.sh`, CIFAR-10): γ (`--sigua_scale`) = 0.01 and `--sigua_rate`
0.3 for pairflip 45% and symmetric 50%, 0.4 for symmetric 20% (a setting the EchoAlign paper does not
use; pass `sigua_rate: 0.4` there). MNIST pairflip 45% uses γ 0.001, rate 0.7
(`scripts/mnist_sigua_sl.sh`). The repository has no CIFAR-100 configuration; CIFAR-100 and
CIFAR-100N use the CIFAR-10 values (including `epoch_decay_start` 80, `arguments.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from echobench.training.method import register_method

from echobench.baselines.two_networks import SampleSelectionMethod, mean_over, num_remember, small_loss_order


def sigua_loss(logits: torch.Tensor, targets: torch.Tensor, *, forget_rate: float, sigua_rate: float,
               gamma: float, official_min_one_ascent: bool = False) -> torch.Tensor:
    """SIGUA-SL loss of one batch: small-loss mean − γ·mean over the next ⌊sigua_rate·N_forget⌋ samples.

    An empty ascent set contributes 0 (the loss is then the small-loss mean). With
    `official_min_one_ascent`, one ascent sample is used whenever any sample is forgotten, as the
    official `loss_big[:1]` fallback does.
    """
    ce = F.cross_entropy(logits, targets, reduction="none")
    order = small_loss_order(ce)
    keep = num_remember(ce.shape[0], forget_rate)
    n_forget = ce.shape[0] - keep
    n_ascent = int(n_forget * sigua_rate + 1e-9)
    if official_min_one_ascent and n_forget > 0:
        n_ascent = max(n_ascent, 1)
    n_ascent = min(n_ascent, n_forget)
    descent = mean_over(ce, order[:keep])
    ascent = mean_over(ce, order[keep : keep + n_ascent])
    return descent - gamma * ascent


@register_method("sigua")
class Sigua(SampleSelectionMethod):
    """SIGUA-SL: one network, descent on its small-loss samples, γ-scaled ascent on the next ones."""

    model_streams: ClassVar[tuple[str, ...]] = ("model",)

    @dataclass(frozen=True)
    class Params:
        # τ; None: the nominal noise rate (`utils.py`: forget_rate = noise_rate unless --forget_rate).
        forget_rate: float | None = None
        num_gradual: int = 10  # T_k (`arguments.py --num_gradual`)
        exponent: float = 1.0  # c (`arguments.py --exponent`)
        gamma: float = 0.01  # γ, `--sigua_scale` in scripts/cifar10_sigua_sl.sh
        sigua_rate: float = 0.3  # `--sigua_rate` in scripts/cifar10_sigua_sl.sh (pairflip 45%, symmetric 50%)
        epoch_decay_start: int = 80  # co-teaching protocol only (`arguments.py --epoch_decay_start`)
        official_min_one_ascent: bool = False  # the official `loss_big[:1]` fallback

    @classmethod
    def default_params(cls, dataset: str) -> "Sigua.Params":
        # One configuration for every dataset: the CIFAR-10 script's (no CIFAR-100 script exists).
        return cls.Params()

    def batch_losses(self, logits, targets, indices, forget_rate, epoch, task):
        p = self.params
        return (sigua_loss(logits[0], targets, forget_rate=forget_rate, sigua_rate=p.sigua_rate, gamma=p.gamma,
                           official_min_one_ascent=p.official_min_one_ascent),)
