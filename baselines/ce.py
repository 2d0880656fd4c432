"""CE: standard cross-entropy with mean reduction, the paper's first baseline row."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from echobench.training.method import SingleNetworkMethod, register_method


def ce_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of `logits` (N, C) against integer `targets` (N,)."""
    return F.cross_entropy(logits, targets)


@register_method("ce")
class CrossEntropy(SingleNetworkMethod):
    """Cross-entropy on the noisy labels under the common protocol."""

    def loss(self, logits, targets, indices, epoch, task):
        return ce_loss(logits, targets)
