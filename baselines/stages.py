"""Helpers shared by the multi-stage methods (T-Revision, Joint Optimization, Identifiability).

Their official stage lengths are written for a 200-epoch protocol; under a shorter protocol every
stage is scaled by the same factor so that the whole method costs about as much as the protocol.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F


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


def ce_warmup_keep_best(task, model: torch.nn.Module, optimizer, generator: torch.Generator, epochs: int, *,
                        first_epoch: int, scheduler=None) -> int:
    """Stage 0 of the multi-stage methods: `epochs` epochs of CE, each recorded in the history as stage 0
    (numbered from `first_epoch` + 1), then the weights of the best noisy-validation epoch (first on
    ties) are restored. Returns the last epoch number used."""
    best_val, best_state = -1.0, None
    epoch = first_epoch
    for e in range(1, epochs + 1):
        started = time.perf_counter()
        sums = task.train_epoch(model, optimizer, generator, lambda logits, y, idx: F.cross_entropy(logits, y))
        epoch += 1
        record = task.record_epoch(epoch, model, optimizer, *sums, started, stage=0.0, stage_epoch=float(e))
        if record.val_acc > best_val:
            best_val, best_state = record.val_acc, model_state(model)
        if scheduler is not None:
            scheduler.step()
    if best_state is not None:  # None only when every validation accuracy was NaN
        model.load_state_dict(best_state)
    return epoch
