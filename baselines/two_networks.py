"""Shared machinery of the small-loss sample-selection baselines (Co-teaching, SIGUA, Co-Dis).

All three descend from bhanML/Co-teaching `main.py`: per epoch a forget rate τ_t, per batch a ranking
of the samples by loss and a kept "small-loss" fraction 1 − τ_t. This module holds the pieces they
share, as pure functions that tests can call, and the training loop:

- `forget_rate_schedule(t, τ)`: τ_t = τ·min(t/T_k, 1)^c (Co-teaching paper, R(T) = 1 − τ_t), with T_k =
  `num_gradual` = 10 and c = `exponent` = 1 (bhanML/Co-teaching `main.py`, `--num_gradual`,
  `--exponent`), τ = the nominal noise rate unless a method's `forget_rate` says otherwise (`main.py`:
  `forget_rate = args.noise_rate` when `--forget_rate` is unset). t counts the epochs completed before
  the current one, so the first epoch keeps every sample and τ is reached at the start of epoch
  T_k + 1 — the order of the paper's Algorithm 1 (R(T) is updated at the end of epoch T) and of
  tmllab/2023_ICCV_CoDis `main.py` (`rate_schedule[epoch]` with epoch from 0).
  Official-code differences, kept out: both repositories build the ramp with
  `np.linspace(0, τ**c, T_k)`, i.e. steps of τ/(T_k − 1) that reach τ one epoch early, and raise τ
  (not the ramp) to the power c; Co-teaching's loop starts at `rate_schedule[1]` (τ/9 in its first
  training epoch). With c = 1 these shift the ramp by one epoch at most.
- `num_remember(n, τ)` and `small_loss_selection(losses, τ)`: the kept count is ⌊(1 − τ)·n⌋ as in the
  official `int(remember_rate * len(loss))`, computed with a 1e-9 tolerance so that float error
  (e.g. (1 − 0.3)·10 = 6.999…) does not drop a sample, and at least 1 for a non-empty batch: with an
  empty kept set the official Co-teaching loss is 0/0 = NaN and CoDis falls back to the whole batch;
  it can only happen on a partial last batch of fewer than 1/(1 − τ) samples, which echobench keeps
  (the official loaders use `drop_last=True`). Ties are broken by position in the batch (a stable
  sort; the official `np.argsort` quicksort leaves their order unspecified).
- `co_teaching_adam_plan(epoch, ...)`: the official Adam schedule (lr linearly to 0 from
  `epoch_decay_start`, β1 0.9 → 0.1 from then on), applied only when the task's protocol is the
  `co-teaching` protocol (see `echobench.baselines.co_teaching.CO_TEACHING_PROTOCOL`); under any other protocol
  the task's own optimizer and MultiStepLR schedule are used, as for every other method.
- `SampleSelectionMethod.fit`: k networks (1 for SIGUA, 2 otherwise) over the same shuffled batches.
  `TwoNetworkMethod` is the two-network case.

Gradients: each network is stepped on the gradient of ITS OWN loss with respect to ITS OWN
parameters, computed for every network before any optimizer steps (`backward_each`). That is what the
official loops compute: `loss_1.backward(); optimizer1.step(); loss_2.backward(); optimizer2.step()`
with `zero_grad` before each backward discards cross-network gradients (CoDis's JS term connects the
two graphs). CoDis's official order — step network 1, then backward through a graph that saved
network 1's pre-step weights — raises "modified by an inplace operation" on PyTorch ≥ 1.5; taking both
gradients before either step is the fix and gives the same numbers the official code intended.
"""

from __future__ import annotations

import abc
import math
import time
from typing import Any, ClassVar, Sequence

import torch

from echobench.training.method import Method, Passes

CO_TEACHING_PROTOCOL_NAME = "co-teaching"


# --- pure rules --------------------------------------------------------------------------------------

def forget_rate_schedule(t: int, forget_rate: float, num_gradual: int = 10, exponent: float = 1.0) -> float:
    """τ_t = τ·min(t/T_k, 1)^c after `t` completed epochs (T_k = `num_gradual`, c = `exponent`)."""
    if t < 0:
        raise ValueError(f"t counts completed epochs and cannot be negative, got {t}")
    if num_gradual <= 0:
        return float(forget_rate)
    return float(forget_rate) * min(t / num_gradual, 1.0) ** exponent


def num_remember(n: int, forget_rate: float) -> int:
    """How many of `n` samples the small-loss rule keeps: ⌊(1 − τ)·n⌋, at least 1 when n > 0."""
    if not 0.0 <= forget_rate <= 1.0:
        raise ValueError(f"forget rate must lie in [0, 1], got {forget_rate}")
    if n <= 0:
        return 0
    return min(n, max(1, math.floor((1.0 - forget_rate) * n + 1e-9)))


def small_loss_order(losses: torch.Tensor) -> torch.Tensor:
    """Positions of `losses` (N,) from the smallest loss to the largest, ties in batch order."""
    return torch.argsort(losses.detach(), stable=True)


def small_loss_selection(losses: torch.Tensor, forget_rate: float) -> torch.Tensor:
    """Positions of the kept small-loss samples (the ⌊(1 − τ)·N⌋ smallest), smallest loss first."""
    return small_loss_order(losses)[: num_remember(losses.shape[0], forget_rate)]


def mean_over(values: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Mean of `values` at `positions`; an empty selection gives 0 that still backpropagates (no 0/0)."""
    if positions.numel() == 0:
        return values.sum() * 0.0
    return values[positions].mean()


def co_teaching_adam_plan(epoch: int, *, lr: float, epochs: int, decay_start: int,
                          beta1: float = 0.9, beta1_decayed: float = 0.1) -> tuple[float, float]:
    """(lr, β1) of 1-based `epoch` under the official Adam schedule (bhanML/Co-teaching `main.py`).

    The official plan is indexed by i = 0 … n_epoch − 1: lr_i = lr and β1 = 0.9 for i < decay_start,
    lr_i = lr·(n_epoch − i)/(n_epoch − decay_start) and β1 = 0.1 from there on (β2 stays 0.999).
    echobench's epoch e uses i = e − 1, so all `epochs` epochs are trained and the lr never reaches 0.
    (Co-teaching's own loop evaluates the random network as "epoch 0" and trains i = 1 … 199, 199
    epochs; CoDis's trains i = 0 … 199, as here.)
    """
    i = epoch - 1
    if i < decay_start or epochs <= decay_start:
        return lr, beta1
    return lr * (epochs - i) / (epochs - decay_start), beta1_decayed


def apply_adam_plan(optimizer: torch.optim.Optimizer, lr: float, beta1: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
        if "betas" in group:
            group["betas"] = (beta1, group["betas"][1])


def backward_each(losses: Sequence[torch.Tensor], models: Sequence[torch.nn.Module]) -> None:
    """Accumulate ∂loss_k/∂θ_k into network k's `.grad` for every k, before anything is stepped.

    Gradients of loss_k reaching another network (through a term such as CoDis's JS divergence) are
    not accumulated: each network gets its own loss's gradient only, as in the official loops.
    """
    for k, (loss, model) in enumerate(zip(losses, models)):
        params = [p for p in model.parameters() if p.requires_grad]
        loss.backward(inputs=params, retain_graph=k < len(losses) - 1)


# --- the training loop -------------------------------------------------------------------------------

class SampleSelectionMethod(Method):
    """Small-loss selection with `len(model_streams)` networks trained on shared batches.

    Subclasses write `batch_losses()`. Their `Params` must have `forget_rate` (None: the task's
    nominal noise rate), `num_gradual`, `exponent` and `epoch_decay_start` (used under the
    `co-teaching` protocol only).
    """

    model_streams: ClassVar[tuple[str, ...]] = ("model1", "model2")

    @abc.abstractmethod
    def batch_losses(self, logits: Sequence[torch.Tensor], targets: torch.Tensor, indices: torch.Tensor,
                     forget_rate: float, epoch: int, task) -> tuple[torch.Tensor, ...]:
        """One loss per network for this batch (float32 `logits` of each network, same order)."""

    @classmethod
    def passes(cls, params, protocol, kept_fraction: float = 1.0, n_train: int | None = None) -> Passes:
        """Every network trains and is evaluated every epoch."""
        k = len(cls.model_streams)
        return Passes(train=k * protocol.epochs, evaluations=k * protocol.epochs)

    def tau(self, task) -> float:
        """The final forget rate τ: the method's `forget_rate`, or the task's nominal noise rate."""
        rate = getattr(self.params, "forget_rate", None)
        return float(task.noise_rate if rate is None else rate)

    def epoch_forget_rate(self, epoch: int, task) -> float:
        p = self.params
        return forget_rate_schedule(epoch - 1, self.tau(task), p.num_gradual, p.exponent)

    def fit(self, task) -> None:
        models = [task.new_model(stream) for stream in self.model_streams]
        optimizers = [task.new_optimizer(m.parameters()) for m in models]
        official_schedule = task.protocol.name == CO_TEACHING_PROTOCOL_NAME
        schedulers = [] if official_schedule else [task.new_scheduler(o) for o in optimizers]
        generator = task.generator("batches")
        n = len(models)
        for epoch in range(1, task.protocol.epochs + 1):
            started = time.perf_counter()
            if official_schedule:
                lr, beta1 = co_teaching_adam_plan(epoch, lr=task.protocol.lr, epochs=task.protocol.epochs,
                                                  decay_start=self.params.epoch_decay_start)
                for optimizer in optimizers:
                    apply_adam_plan(optimizer, lr, beta1)
            rate = self.epoch_forget_rate(epoch, task)
            for model in models:
                model.train()
            loss_sums: list[Any] = [0.0] * n
            corrects: list[Any] = [0] * n
            seen = 0
            for x, y, idx in task.batches(task.train, generator):
                with task.autocast():
                    outputs = [model(x) for model in models]
                logits = [out.float() for out in outputs]
                losses = self.batch_losses(logits, y, idx, rate, epoch, task)
                for optimizer in optimizers:
                    optimizer.zero_grad(set_to_none=True)
                backward_each(losses, models)  # every gradient first ...
                for optimizer in optimizers:  # ... then every step
                    optimizer.step()
                for k in range(n):  # accumulated on the device: no sync per batch
                    loss_sums[k] = loss_sums[k] + losses[k].detach() * len(y)
                    corrects[k] = corrects[k] + (logits[k].argmax(1) == y).sum()
                seen += len(y)
            extra = {"forget_rate": rate}
            for k in range(1, n):
                tag = f"net{k + 1}"
                extra[f"train_loss_{tag}"] = float(loss_sums[k]) / max(seen, 1)
                extra[f"train_acc_{tag}"] = float(corrects[k]) / max(seen, 1)
                extra[f"val_acc_{tag}"] = task.accuracy(models[k], task.val)
                extra[f"test_acc_{tag}"] = task.accuracy(models[k], task.test)
            task.record_epoch(epoch, models[0], optimizers[0], loss_sums[0], corrects[0], seen, started, **extra)
            for scheduler in schedulers:
                scheduler.step()


class TwoNetworkMethod(SampleSelectionMethod):
    """Two networks from the seed streams "model1" and "model2"; the history follows network 1 and
    records network 2's accuracies in `extra` (`val_acc_net2`, `test_acc_net2`, ...)."""

    model_streams: ClassVar[tuple[str, ...]] = ("model1", "model2")

    def batch_losses(self, logits, targets, indices, forget_rate, epoch, task):
        return self.pair_losses(logits[0], logits[1], targets, forget_rate)

    @abc.abstractmethod
    def pair_losses(self, logits1: torch.Tensor, logits2: torch.Tensor, targets: torch.Tensor,
                    forget_rate: float) -> tuple[torch.Tensor, torch.Tensor]:
        """The two networks' losses for this batch: the selection rule of a two-network method."""
