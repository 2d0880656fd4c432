"""T-Revision (Xia et al., NeurIPS 2019, "Are Anchor Points Really Indispensable in Label-Noise
Learning?"), after the official code xiaoboxia/T-Revision (`main.py`, `loss.py`, `tools.py`).

Three stages, run in this order and recorded in `task.history` with consecutive epoch numbers and
`extra={"stage": k, "stage_epoch": e}` (k = 0 warmup, 1 reweight, 2 revision; `STAGES`); each stage's
wall time (training, its per-epoch evaluation and, for ``warmup``, the estimation of T̂) goes to
`task.history.stage_seconds[name]`. The estimated T̂ and ΔT are kept on the method instance
(`transition`, `correction`) for inspection:

1. ``warmup`` — cross-entropy on the noisy labels. After every epoch the accuracy on the noisy
   validation set is recorded; the epoch with the best one (first on ties) gives the model that is
   kept and the noisy posteriors p(ỹ|x) of the training set from which `estimate_transition` builds
   T̂ (`main.py`: `val_acc_list`, `model_index = argmax`, `tools.fit`, `tools.norm`).
2. ``reweight`` — importance reweighting with the fixed T̂: loss = mean_i β_i·CE(f(x_i), ỹ_i) with
   β_i = p_ỹ / (T̂ᵀp)_ỹ, p = softmax(f(x_i)), β detached (`loss.py: reweight_loss`, which wraps β in
   a new leaf `Variable`). The model of the epoch with the best forward-corrected validation accuracy
   (argmax of T̂ᵀp against the noisy validation labels, `main.py`) is kept.
3. ``revision`` — T̂ is revised by a slack ΔT (C×C, zero init; the official `T_revision` bias-free
   Linear's weight) learnt jointly with the network by Adam (lr 5e-7, weight decay) on
   mean_i β_i·CE with β_i = p_ỹ / ((T̂+ΔT)ᵀp)_ỹ *not* detached, so ΔT (and the network) get gradient
   through β (`loss.py: reweighting_revision_loss`). The last epoch's model is the final one.

The official revision loss has a bug (its PR #3): `T = T + correction` sits inside the per-sample loop,
so the i-th sample of a batch (0-based) uses T̂ + (i+1)·ΔT. echobench implements the intended
T̂ + ΔT by default; ``official_correction_bug=True`` reproduces the official behaviour. (The `_v2`
losses the maintainer added after that PR wrap β of the revision loss in a `Variable` too, which cuts
ΔT off from all gradient; echobench does not follow that.)

Defaults (CIFAR-10 values for ``shapes``, ``cifar10``, ``cifar10n``; CIFAR-100 for ``cifar100``,
``cifar100n``), all from xiaoboxia/T-Revision `main.py` unless noted:
- ``warmup_epochs`` 20 (CIFAR-10) / 15 (CIFAR-100): `args.n_epoch_estimate`;
- ``reweight_epochs`` 200: `args.n_epoch`; ``revision_epochs`` 200: `args.n_epoch_revision`;
- ``anchor_percentile`` 97 for CIFAR-10, None (plain argmax) for CIFAR-100: `tools.fit` drops the
  values at or above `np.percentile(…, 97, interpolation='higher')` only when `estimate_state` is
  True, which `main.py` sets for MNIST and CIFAR-10 and not for CIFAR-100;
- ``warmup_lr`` 0.01 (SGD without momentum, `optimizer_es`), ``reweight_lr`` 0.01 (SGD momentum 0.9,
  `optimizer`, MultiStepLR [40, 80]), ``revision_lr`` 5e-7 (Adam, `optimizer_revision`, `--lr_revision`);
  weight decay 1e-4 everywhere (`--weight_decay`), which is the paper protocol's.

How echobench maps these onto a protocol (deliberate deviations, each a parameter):
- Epochs: the stage-length rule of `echobench.training.stages`, shared by every multi-stage method.
  The official lengths are read as lengths for the paper's 200-epoch protocol (``reference_epochs``)
  and scaled by E/200 under a shorter protocol of E epochs (longer protocols keep them); the warm-up
  reads its network (T̂ comes from it), so it is no shorter than the protocol's ``ce_levels_off``.
  The revision stage is skipped, and reported in the diagnostics as `skipped_stages`, when Adam at
  ``revision_lr`` cannot move any entry of ΔT by ``min_revision_reach`` (0.01) in the stage's steps
  (`stages.reach` = lr·steps). Officially (200 epochs × 352 steps at 5e-7) the reach is 0.035; under
  a 30-epoch protocol on 3,600 images it is 0.0017, and the stage cost 40% of a cell while changing
  T̂ by 0.09 summed over its 100 entries. The dry run's cost model counts the stage either way (an
  upper bound) unless told the training split's size. ``scale_epochs=False`` takes the numbers as given.
- Learning rates. ``lr_source="protocol"`` (default): the warm-up and reweight stages use the
  protocol's optimizer and learning rate, which is what the paper's common protocol prescribes for
  every method (SGD lr 0.1, momentum 0.9, weight decay 1e-4). ``lr_source="official"``: the official
  rates relative to the paper's 0.1, i.e. ``warmup_lr``·lr_p/0.1 with no momentum for the warm-up and
  ``reweight_lr``·lr_p/0.1 with the protocol's optimizer for the reweight stage. The revision stage is
  Adam at ``revision_lr`` (weight decay from the protocol) in both modes.
- Schedules. Warm-up and revision run at a constant rate, as officially. The reweight stage follows
  the protocol's milestones scaled to the stage's length (round(m·n/E)); the official [40, 80] of its
  200 epochs is not used.
- The official code computes the anchor posteriors on augmented training images (its estimate loader
  uses the training transform); echobench uses the un-augmented images (`task.predict`), which is
  deterministic. It also selects anchors on an unmodified copy of the posteriors (the official
  `tools.fit` zeroes the top 3% of each column in place, which can touch later rows of T̂) and
  normalises rows properly (`tools.norm` divides by `row_sum` broadcast along columns; harmless there
  because softmax rows already sum to 1).
- β is not clamped, as officially: T̂ is built from softmax rows, so (T̂ᵀp)_ỹ > 0.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from echobench.errors import EchobenchError
from echobench.training.method import Method, Passes, register_method, uses_cifar100_defaults

from echobench.training.stages import ce_warmup_keep_best, reach, reading_epochs, scaled_epochs, scaled_milestones
from echobench.training.trainer import model_state, steps_per_epoch

STAGES = ("warmup", "reweight", "revision")
PAPER_LR = 0.1  # the paper protocol's SGD learning rate, the base the official rates are read against


def estimate_transition(probs: torch.Tensor, *, percentile: float | None = 97.0) -> torch.Tensor:
    """T̂ from noisy posteriors `probs` (N, C) of the training samples (xiaoboxia/T-Revision `tools.fit`).

    For each class i the anchor is the sample with the largest p(ỹ=i|x) after the values at or above
    the `percentile`-th percentile of column i (numpy's 'higher' interpolation) are set aside; row i of
    T̂ is that sample's posterior. `percentile=None` takes the plain argmax. Rows are normalised to sum
    to 1. Returns a (C, C) float tensor on `probs`' device.
    """
    probs = probs.float()
    n, c = probs.shape
    if percentile is not None and not 0.0 < percentile <= 100.0:
        raise EchobenchError(f"anchor percentile must be in (0, 100] or None, got {percentile}")
    anchors = []
    for i in range(c):
        column = probs[:, i]
        if percentile is not None:
            threshold = torch.quantile(column, percentile / 100.0, interpolation="higher")
            column = torch.where(column >= threshold, torch.zeros_like(column), column)
        anchors.append(int(torch.argmax(column)))
    T = probs[torch.tensor(anchors, device=probs.device)].clone()
    return T / T.sum(dim=1, keepdim=True)


def reweight_loss(logits: torch.Tensor, targets: torch.Tensor, T: torch.Tensor, *,
                  correction: torch.Tensor | None = None, detach_beta: bool = True,
                  official_correction_bug: bool = False) -> torch.Tensor:
    """Importance-reweighted cross-entropy: mean_i β_i·CE(logits_i, y_i), β_i = p_y / (T'ᵀp)_y.

    p = softmax(logits_i); T' = T (reweight stage, `loss.py: reweight_loss`, β detached) or
    T + `correction` (revision stage, `reweighting_revision_loss`, call with `detach_beta=False` so
    that ΔT gets gradient through β). `official_correction_bug=True` reproduces the official loop,
    in which sample i (0-based, in batch order) uses T + (i+1)·ΔT.
    """
    log_p = F.log_softmax(logits, dim=1)
    p = log_p.exp()
    ce = -log_p.gather(1, targets[:, None]).squeeze(1)
    p_y = p.gather(1, targets[:, None]).squeeze(1)
    noisy = p @ T  # row i: (Tᵀ p_i)ᵀ
    noisy_y = noisy.gather(1, targets[:, None]).squeeze(1)
    if correction is not None:
        extra = (p @ correction).gather(1, targets[:, None]).squeeze(1)
        if official_correction_bug:
            extra = extra * torch.arange(1, len(targets) + 1, device=extra.device, dtype=extra.dtype)
        noisy_y = noisy_y + extra
    beta = p_y / noisy_y
    if detach_beta:
        beta = beta.detach()
    return (beta * ce).mean()


@dataclass(frozen=True)
class Params:
    """T-Revision hyperparameters; see the module docstring for sources and the protocol mapping."""

    warmup_epochs: int = 20
    reweight_epochs: int = 200
    revision_epochs: int = 200
    scale_epochs: bool = True
    reference_epochs: int = 200
    anchor_percentile: float | None = 97.0
    lr_source: str = "protocol"  # "protocol" or "official"
    warmup_lr: float = 0.01
    reweight_lr: float = 0.01
    revision_lr: float = 5e-7
    official_correction_bug: bool = False
    min_revision_reach: float = 0.01  # below it the revision stage is skipped (module docstring)

    def __post_init__(self):
        if self.lr_source not in ("protocol", "official"):
            raise EchobenchError(f"t-revision: lr_source must be 'protocol' or 'official', got {self.lr_source!r}")


def stage_epochs(params: Params, protocol) -> dict[str, int]:
    """Epochs of each stage under `protocol` (the stage-length rule, `echobench.training.stages`)."""
    out = {"warmup": reading_epochs(params.warmup_epochs, params, protocol),
           "reweight": scaled_epochs(params.reweight_epochs, params, protocol.epochs),
           "revision": scaled_epochs(params.revision_epochs, params, protocol.epochs)}
    if min(out.values()) < 1:
        raise EchobenchError(f"t-revision: every stage needs at least one epoch, got {out}")
    return out


def revision_skipped(params: Params, protocol, steps: int) -> bool:
    """Rule 3 of the stage-length rule for the revision stage: Adam at ``revision_lr`` for `steps` steps
    cannot move any entry of ΔT by ``min_revision_reach``."""
    return reach(params.revision_lr, steps) < params.min_revision_reach


@register_method("t-revision")
class TRevision(Method):
    """Warm-up CE → anchor-point T̂ → importance reweighting → revision of T̂ by ΔT."""

    Params = Params

    @classmethod
    def default_params(cls, dataset: str) -> Params:
        if uses_cifar100_defaults(dataset):
            return Params(warmup_epochs=15, anchor_percentile=None)
        return Params()

    @classmethod
    def passes(cls, params: Params, protocol, kept_fraction: float = 1.0, n_train: int | None = None) -> Passes:
        """Warm-up, reweight and revision epochs (each evaluated; the last two also score the forward-
        corrected validation accuracy), and one forward pass over the training split for T̂."""
        e = stage_epochs(params, protocol)
        if n_train is not None and revision_skipped(params, protocol, e["revision"] * steps_per_epoch(n_train, protocol)):
            e["revision"] = 0
        trained = e["warmup"] + e["reweight"] + e["revision"]
        return Passes(train=trained, train_forward=1, evaluations=trained, val_forward=e["reweight"] + e["revision"])

    def fit(self, task) -> None:
        p = self.params
        epochs = stage_epochs(p, task.protocol)
        n_warm, n_rew, n_rev = epochs["warmup"], epochs["reweight"], epochs["revision"]
        official = p.lr_source == "official"
        lr_scale = task.protocol.lr / PAPER_LR
        model = task.new_model()
        generator = task.generator("batches")
        epoch = 0

        # --- stage 0: warm-up CE, keep the best-validation epoch --------------------------------
        started_stage = time.perf_counter()
        if official:
            optimizer = torch.optim.SGD(model.parameters(), lr=p.warmup_lr * lr_scale, momentum=0.0,
                                        weight_decay=task.protocol.weight_decay)
        else:
            optimizer = task.new_optimizer(model.parameters())
        epoch = ce_warmup_keep_best(task, model, optimizer, generator, n_warm, first_epoch=epoch)
        probs = torch.softmax(task.predict(model, task.train), dim=1)
        T = estimate_transition(probs, percentile=p.anchor_percentile).to(task.device)
        self.transition = T.detach().cpu()
        task.history.stage_seconds["warmup"] = time.perf_counter() - started_stage

        # --- stage 1: importance reweighting with fixed T̂, keep the best forward-val epoch -------
        started_stage = time.perf_counter()
        lr = p.reweight_lr * lr_scale if official else None
        optimizer = task.new_optimizer(model.parameters(), lr=lr)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, scaled_milestones(task, n_rew), gamma=task.protocol.gamma)
        best_val, best_state = -1.0, None
        for e in range(1, n_rew + 1):
            started = time.perf_counter()
            sums = task.train_epoch(model, optimizer, generator, lambda logits, y, idx: reweight_loss(logits, y, T))
            val_forward = self._forward_val_acc(task, model, T)
            epoch += 1
            task.record_epoch(epoch, model, optimizer, *sums, started, stage=1.0, stage_epoch=float(e), val_acc_forward=val_forward)
            if val_forward > best_val:
                best_val, best_state = val_forward, model_state(model)
            scheduler.step()
        if best_state is not None:
            model.load_state_dict(best_state)
        task.history.stage_seconds["reweight"] = time.perf_counter() - started_stage

        # --- stage 2: revision — learn ΔT with the network, β not detached ----------------------
        steps = n_rev * task.steps_per_epoch()
        if revision_skipped(p, task.protocol, steps):
            self.skipped = {"revision": f"Adam at lr {p.revision_lr:g} for {steps} steps moves any entry of ΔT by at "
                                        f"most {reach(p.revision_lr, steps):.2g} < {p.min_revision_reach:g}: it cannot "
                                        f"revise T̂ at this protocol's length"}
            return
        started_stage = time.perf_counter()
        delta = torch.nn.Parameter(torch.zeros_like(T))
        optimizer = torch.optim.Adam([*model.parameters(), delta], lr=p.revision_lr, weight_decay=task.protocol.weight_decay)

        def revision_loss(logits, y, idx):
            return reweight_loss(logits, y, T, correction=delta, detach_beta=False,
                                 official_correction_bug=p.official_correction_bug)

        for e in range(1, n_rev + 1):
            started = time.perf_counter()
            sums = task.train_epoch(model, optimizer, generator, revision_loss)
            revised = (T + delta).detach()
            val_forward = self._forward_val_acc(task, model, revised)
            epoch += 1
            task.record_epoch(epoch, model, optimizer, *sums, started, stage=2.0, stage_epoch=float(e),
                              val_acc_forward=val_forward, delta_t_abs_sum=float(delta.detach().abs().sum()))
        self.correction = delta.detach().cpu()
        task.history.stage_seconds["revision"] = time.perf_counter() - started_stage

    def diagnostics(self) -> dict:
        out = {"skipped_stages": self.skipped} if getattr(self, "skipped", None) else {}
        if getattr(self, "transition", None) is not None:
            out["estimated_transition"] = self.transition.round(decimals=6).tolist()
        if getattr(self, "correction", None) is not None:
            out["revised_transition"] = (self.transition + self.correction).round(decimals=6).tolist()
        return out

    @staticmethod
    def _forward_val_acc(task, model, T: torch.Tensor) -> float:
        """Accuracy of argmax(Tᵀp) against the noisy validation labels (the official model selection)."""
        noisy = torch.softmax(task.predict(model, task.val), dim=1) @ T
        return float((noisy.argmax(1) == task.val.labels).float().mean())
