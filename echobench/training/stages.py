"""Stage lengths of the multi-stage methods (T-Revision, Joint Optimization, Identifiability), and the
CE warm-up they share. The epochs themselves run through the one CE epoch loop,
`echobench.training.trainer.train_epochs`.

The stage-length rule, the same for every multi-stage method. Official stage lengths are written for
the paper's 200-epoch protocol (a method's ``reference_epochs``). Under a protocol of E epochs:

1. Every stage, and every epoch count inside one (Joint's averaging window), gets its official length
   scaled by E/reference (rounded, at least 1), so that a method costs about as much, relative to the
   protocol, as it does officially. Protocols at least as long as the reference keep the official
   numbers. ``scale_epochs=False`` in a method's parameters takes the numbers as given.
2. A stage that *reads* a CE network — a warm-up whose network estimates T̂ or features (T-Revision,
   Identifiability), the epoch from which Joint replaces labels by predictions — is no shorter than
   the protocol's ``ce_levels_off``: the epoch by which CE's noisy-validation accuracy has levelled
   off under that protocol (measured with CE alone and recorded with the protocol). Before it the
   network has not fitted the clean signal, and what it estimates is noise: scaling T-Revision's
   20-epoch warm-up to 3 epochs gave a network at 17% and a T̂ whose diagonal was 0.12–0.57 against a
   true 0.7. A protocol without a measured value (0) imposes no floor.
3. A stage that cannot do what it is for at the protocol's length is skipped and reported in the
   cell's diagnostics (`skipped_stages`) instead of being run uselessly. Which stages can be skipped,
   and the test, live with the method (T-Revision's revision stage: `reach`).
"""

from __future__ import annotations

import torch

from echobench.training.trainer import train_epochs


def scaled_epochs(n: int, params, total: int) -> int:
    """Rule 1: `n` official epochs under a protocol of `total` epochs: n·total/reference (≥ 1) when
    `params.scale_epochs` and the protocol is shorter than `params.reference_epochs`, else n."""
    if params.scale_epochs and total < params.reference_epochs:
        return max(1, int(n * total / params.reference_epochs + 0.5))
    return n


def reading_epochs(n: int, params, protocol) -> int:
    """Rule 2: a stage (or start epoch) that reads a CE network: rule 1's length, at least the
    protocol's `ce_levels_off`. With ``scale_epochs=False`` the numbers are taken as given."""
    scaled = scaled_epochs(n, params, protocol.epochs)
    return max(scaled, protocol.ce_levels_off) if params.scale_epochs else scaled


def reach(lr: float, steps: int) -> float:
    """Rule 3's measure for a stage trained by Adam: Adam moves each parameter by at most about `lr` per
    step (its update is lr·m̂/(√v̂+ε), |m̂/√v̂| ≤ 1 up to bias-correction transients), so `lr·steps`
    bounds how far the stage can move any entry of what it learns."""
    return lr * steps


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
