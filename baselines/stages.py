"""Helpers shared by the multi-stage methods (T-Revision, Joint Optimization, Identifiability).

Their official stage lengths are written for a 200-epoch protocol; under a shorter protocol every
stage is scaled by the same factor so that the whole method costs about as much as the protocol.
"""

from __future__ import annotations

import torch


def scaled_epochs(n: int, params, total: int) -> int:
    """`n` official epochs under a protocol of `total` epochs: n·total/reference (≥ 1) when
    `params.scale_epochs` and the protocol is shorter than `params.reference_epochs`, else n."""
    if params.scale_epochs and total < params.reference_epochs:
        return max(1, int(n * total / params.reference_epochs + 0.5))
    return n


def scaled_milestones(task, length: int) -> list[int]:
    """The protocol's lr milestones mapped onto a stage of `length` epochs."""
    total = task.protocol.epochs
    return sorted({max(1, int(m * length / total + 0.5)) for m in task.protocol.milestones})


def model_state(model: torch.nn.Module) -> dict:
    """A detached copy of the weights, to restore the best epoch of a stage."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
