"""Helpers shared by the multi-stage methods (T-Revision, Joint Optimization, Identifiability).

The epochs themselves run through the one CE epoch loop, `echobench.training.trainer.train_epochs`.

Their official stage lengths are written for a 200-epoch protocol; under a shorter protocol every
stage is scaled by the same factor so that the whole method costs about as much as the protocol.
"""

from __future__ import annotations

import torch

from echobench.training.trainer import train_epochs


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


def ce_warmup_keep_best(task, model: torch.nn.Module, optimizer, generator: torch.Generator, epochs: int, *,
                        first_epoch: int, scheduler=None) -> int:
    """Stage 0 of the multi-stage methods: `epochs` epochs of CE, each recorded in the history as stage 0
    (numbered from `first_epoch` + 1), then the weights of the best noisy-validation epoch (first on
    ties) are restored. Returns the last epoch number used."""
    run = train_epochs(task, model, optimizer, generator, epochs, scheduler=scheduler, first_epoch=first_epoch,
                       stage=0.0, number_stage_epochs=True, keep="best_val")
    return run.last_epoch
