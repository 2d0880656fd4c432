"""APL: Active Passive Losses, the NCE+RCE instance (Ma et al., ICML 2020), the paper's "APL" row.

Source: HanxunH/Active-Passive-Losses (official).
- Losses, `loss.py`: `NormalizedCrossEntropy` (NCE = (-log p_y) / (-sum_k log p_k), from log_softmax),
  `ReverseCrossEntropy` (RCE = -sum_k clamp(p, 1e-7, 1)_k * log clamp(onehot, 1e-4, 1)_k, which is
  -log(1e-4) * sum_{k != y} clamp(p_k, 1e-7, 1), i.e. about -log(1e-4) * (1 - p_y)) and `NCEandRCE`
  (alpha * mean NCE + beta * mean RCE).
- Defaults: `configs/cifar10/{sym,asym}/nce+rce.yaml` alpha = 1.0, beta = 1.0;
  `configs/cifar100/{sym,asym}/nce+rce.yaml` alpha = 10.0, beta = 0.1. Every config there sets
  `grad_bound: 5.0`, which `trainer.py` applies as `clip_grad_norm_(model.parameters(), grad_bound)`
  after each backward: here `grad_clip = 5.0`.
- Dataset mapping: `cifar10`, `cifar10n` and `shapes` take the CIFAR-10 values, `cifar100` and
  `cifar100n` the CIFAR-100 values.

Deliberate deviations:
- Only the loss and the gradient clipping come from the repository. Network, optimizer, learning rate
  and schedule are the common protocol's (the paper keeps one protocol for every method), not the
  repository's (CIFAR-10: 8-layer CNN, SGD lr 0.01, weight decay 1e-4, cosine over 120 epochs;
  CIFAR-100: ResNet-50, SGD lr 0.1, weight decay 1e-5, cosine over 200 epochs).
- The official modules move the one-hot to a module-level global device; here it lives on the logits'
  device. The number of classes is the logits' width instead of a constructor argument.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from echobench.errors import EchobenchError
from echobench.training.method import SingleNetworkMethod, register_method, uses_cifar100_defaults


RCE_PROB_FLOOR = 1e-7  # clamp(p, 1e-7, 1) in the official RCE
RCE_LABEL_FLOOR = 1e-4  # clamp(onehot, 1e-4, 1): log(1e-4) is the RCE's "log 0"


def nce_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean normalized cross-entropy: (-log p_y) / (-sum_k log p_k), both from `log_softmax`.

    `log_softmax` stays finite for finite logits, and the denominator is strictly negative for two or
    more classes, so the ratio is finite even for extreme logits.
    """
    log_p = F.log_softmax(logits, dim=1)
    log_p_y = log_p.gather(1, targets.unsqueeze(1)).squeeze(1)
    return (log_p_y / log_p.sum(dim=1)).mean()


def rce_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean reverse cross-entropy with the official clamps: -sum_k clamp(p)_k log clamp(onehot)_k.

    Equals -log(1e-4) * sum_{k != y} max(p_k, 1e-7) = -log(1e-4) * (1 - p_y) up to the 1e-7 floor.
    """
    p = F.softmax(logits, dim=1).clamp(min=RCE_PROB_FLOOR, max=1.0)
    one_hot = F.one_hot(targets, logits.shape[1]).to(p.dtype).clamp(min=RCE_LABEL_FLOOR, max=1.0)
    return (-(p * torch.log(one_hot)).sum(dim=1)).mean()


def nce_rce_loss(logits: torch.Tensor, targets: torch.Tensor, *, alpha: float, beta: float) -> torch.Tensor:
    """NCE+RCE (the official `NCEandRCE`): alpha * NCE + beta * RCE, each a batch mean."""
    return alpha * nce_loss(logits, targets) + beta * rce_loss(logits, targets)


@dataclass(frozen=True)
class APLParams:
    alpha: float = 1.0  # NCE weight (configs/cifar10/*/nce+rce.yaml)
    beta: float = 1.0  # RCE weight (configs/cifar10/*/nce+rce.yaml)
    grad_clip: float | None = 5.0  # `grad_bound` in every config, applied in trainer.py

    def __post_init__(self):
        if self.alpha < 0 or self.beta < 0 or self.alpha + self.beta == 0:
            raise EchobenchError(f"apl: alpha and beta must be >= 0 and not both 0 (got alpha={self.alpha}, beta={self.beta})")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise EchobenchError(f"apl: grad_clip must be > 0 or null (got {self.grad_clip})")


@register_method("apl")
class ActivePassiveLoss(SingleNetworkMethod):
    """NCE+RCE on the noisy labels under the common protocol, gradient norm clipped at 5."""

    Params = APLParams

    @classmethod
    def default_params(cls, dataset: str) -> APLParams:
        if uses_cifar100_defaults(dataset):
            return APLParams(alpha=10.0, beta=0.1)  # configs/cifar100/*/nce+rce.yaml
        return APLParams(alpha=1.0, beta=1.0)  # configs/cifar10/*/nce+rce.yaml

    def loss(self, logits, targets, indices, epoch, task):
        return nce_rce_loss(logits, targets, alpha=self.params.alpha, beta=self.params.beta)
