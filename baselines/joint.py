"""Joint Optimization (Tanaka, Ikami, Yamasaki & Aizawa, CVPR 2018, "Joint Optimization Framework
for Learning with Noisy Labels"), after the official Chainer code DaikiTanaka-UT/JointOptimization
(`first_step_train.py`, `second_step_train.py`) and its PyTorch port YU1ut/JointOptimization
(`train.py`, `retrain.py`, `dataset/cifar10.py`).

Two stages, run in this order and recorded in `task.history` with consecutive epoch numbers and
`extra={"stage": k, "stage_epoch": e}` (k = 0 relabel, 1 retrain; `STAGES`); each stage's wall time goes
to `task.history.stage_seconds[name]`:

1. ``relabel`` (the official first step) — one network trained on per-sample soft labels s_i
   (initialised to the one-hot noisy labels, kept by dataset index) with
   L = −mean_i Σ_c s_ic log p_ic + α·KL(prior ‖ mean_i p_i) + β·(−mean_i Σ_c p_ic log p_ic)
   (`joint_loss`; `TrainChain.__call__` / `mycriterion`). The softmax outputs of every training
   forward pass (training mode, augmented images, as officially) are kept for the epoch; after each
   epoch they enter a ring of the last ``window`` epochs, and from epoch ``begin_epoch`` on the soft
   labels are *replaced* by the mean of that ring and the hard labels by its argmax
   (`TrainData.label_update`: `prediction[:, (count-1) % 10] = results`; `if count >= begin:
   soft_labels = prediction.mean(axis=1)`). `LabelUpdater` is that bookkeeping.
2. ``retrain`` (the official second step) — a fresh network trained from scratch by soft-label
   cross-entropy on the final soft labels (`second_step_train.py` uses `soft_label`; the hard labels
   only feed its accuracy report). ``step2_hard=True`` trains on the argmax instead.
   The last epoch's model is the final one. The final labels stay on the method instance
   (`soft_labels`, `hard_labels`, in training-split order) for inspection.

Defaults (CIFAR-10 values for ``shapes``, ``cifar10``, ``cifar10n``; CIFAR-100 for ``cifar100``,
``cifar100n``):
- ``alpha`` 1.2, ``beta`` 0.8, ``step1_lr`` 0.08: the README's symmetric-noise command
  (`--learnrate 0.08 --alpha 1.2 --beta 0.8`; both repositories). Its asymmetric-noise command uses
  lr 0.03, α 0.8, β 0.4 (a suite can override). The argparse defaults are α 1.0, β 0.5, lr 0.1.
- ``step1_epochs`` 200 (`--epoch`), ``begin_epoch`` 70 (`--begin`), ``window`` 10 (the ring of
  `prediction`, "average output probability of the network of the past 10 epochs"):
  `first_step_train.py`.
- ``step2_epochs`` 120, ``step2_lr`` 0.2 with ×0.1 at 1/3 and 2/3 of the epochs:
  `second_step_train.py` (`--epoch`, `--learnrate`, `ExponentialShift` at `trigger_epochs`).
- Both steps: MomentumSGD 0.9, weight decay 1e-4, batch 128; the first step's rate is constant.
- Prior: uniform 1/C ("a distribution of classes among all training data"; CIFAR is balanced).
- CIFAR-100: no official configuration exists (the paper covers CIFAR-10 and Clothing1M);
  echobench keeps the CIFAR-10 values with a uniform 1/100 prior.

How echobench maps these onto a protocol (deliberate deviations, each a parameter):
- Epochs: the stage-length rule of `echobench.training.stages`, shared by every multi-stage method:
  under a protocol of E < ``reference_epochs`` (200) epochs ``step1_epochs``, ``step2_epochs`` and
  ``window`` become max(1, round(n·E/200)); ``begin_epoch`` is where labels start being replaced by
  the network's predictions, so it reads the network and is also no earlier than the protocol's
  ``ce_levels_off`` (under the old pure scaling, 30 epochs gave begin 11 with a network at 16–34%,
  and 83% of the labels were changed at 50% noise). When the first step ends before ``begin_epoch``
  the labels are never updated; the cell's diagnostics say so (`skipped_stages`).
- Learning rates: ``lr_source="protocol"`` (default) runs both steps with the protocol's optimizer and
  learning rate, as the paper's common protocol prescribes for every method; ``"official"`` uses
  ``step1_lr``·lr_p/0.1 and ``step2_lr``·lr_p/0.1 (the official rates read against the paper
  protocol's 0.1) with the protocol's optimizer. In both modes the first step keeps a constant rate
  (the method relies on a high rate to avoid memorising noise) and the second step follows the
  protocol's milestones scaled to its length.
- The prior term is the KL divergence of the paper; the official code writes the cross-entropy
  −Σ p log s̄, which differs by the constant entropy of the prior (log C for uniform) and has the same
  gradient, so reported training losses are lower by log C than the official ones.
- Before the ring is full (only when ``begin_epoch`` < ``window``) the mean is over the epochs
  recorded so far; the official ring starts at zeros, which never matters there since begin ≥ 10.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from echobench.errors import EchobenchError
from echobench.training.method import Method, Passes, register_method

from echobench.training.stages import reading_epochs, scaled_epochs, scaled_milestones

STAGES = ("relabel", "retrain")
PAPER_LR = 0.1


def joint_loss(logits: torch.Tensor, soft_targets: torch.Tensor, prior: torch.Tensor, *,
               alpha: float, beta: float) -> torch.Tensor:
    """Tanaka et al.'s loss: soft-label CE + α·KL(prior ‖ batch-mean prediction) + β·mean entropy.

    `logits` (N, C), `soft_targets` (N, C) rows summing to 1, `prior` (C,).
    """
    log_p = F.log_softmax(logits, dim=1)
    p = log_p.exp()
    l_c = -(soft_targets * log_p).sum(dim=1).mean()
    mean_p = p.mean(dim=0)
    l_p = (torch.xlogy(prior, prior) - prior * torch.log(mean_p)).sum()
    l_e = -(p * log_p).sum(dim=1).mean()
    return l_c + alpha * l_p + beta * l_e


def soft_cross_entropy(logits: torch.Tensor, soft_targets: torch.Tensor) -> torch.Tensor:
    """−mean_i Σ_c s_ic log softmax(logits)_ic (the official second-step loss)."""
    return -(soft_targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


class LabelUpdater:
    """Per-sample labels of the first step (`TrainData.label_update` of the official code).

    `soft` (N, C) starts as the one-hot noisy labels; `push(epoch, predictions)` stores the epoch's
    softmax outputs (N, C) in a ring of the last `window` epochs and, from `epoch >= begin` on, replaces
    `soft` by the ring's mean and `hard` by its argmax. Returns whether the labels were updated.
    """

    def __init__(self, noisy_labels: torch.Tensor, num_classes: int, *, window: int, begin: int):
        if window < 1 or begin < 1:
            raise EchobenchError(f"joint: window and begin_epoch must be ≥ 1, got {window}, {begin}")
        self.window, self.begin = window, begin
        self.soft = F.one_hot(noisy_labels, num_classes).float()
        self.hard = noisy_labels.clone()
        self.ring = torch.zeros((window, *self.soft.shape), device=self.soft.device)
        self.count = 0

    def push(self, epoch: int, predictions: torch.Tensor) -> bool:
        self.ring[self.count % self.window] = predictions
        self.count += 1
        if epoch < self.begin:
            return False
        self.soft = self.ring[: min(self.count, self.window)].mean(dim=0)
        self.hard = self.soft.argmax(dim=1)
        return True


@dataclass(frozen=True)
class Params:
    """Joint Optimization hyperparameters; see the module docstring for sources and mapping."""

    alpha: float = 1.2
    beta: float = 0.8
    step1_epochs: int = 200
    begin_epoch: int = 70
    window: int = 10
    step2_epochs: int = 120
    step2_hard: bool = False
    scale_epochs: bool = True
    reference_epochs: int = 200
    lr_source: str = "protocol"  # "protocol" or "official"
    step1_lr: float = 0.08
    step2_lr: float = 0.2

    def __post_init__(self):
        if self.lr_source not in ("protocol", "official"):
            raise EchobenchError(f"joint: lr_source must be 'protocol' or 'official', got {self.lr_source!r}")


def stage_epochs(params: Params, protocol) -> dict[str, int]:
    """Epochs of each stage, and the label-update start and window, under `protocol` (the stage-length
    rule, `echobench.training.stages`)."""
    out = {"relabel": scaled_epochs(params.step1_epochs, params, protocol.epochs),
           "retrain": scaled_epochs(params.step2_epochs, params, protocol.epochs),
           "begin_epoch": reading_epochs(params.begin_epoch, params, protocol),
           "window": scaled_epochs(params.window, params, protocol.epochs)}
    if min(out.values()) < 1:
        raise EchobenchError(f"joint: stage lengths, begin_epoch and window must be ≥ 1, got {out}")
    return out


@register_method("joint")
class JointOptimization(Method):
    """Relabel by the running mean of predictions under the joint loss, then retrain from scratch."""

    Params = Params

    @classmethod
    def default_params(cls, dataset: str) -> Params:
        return Params()  # CIFAR-100 has no official configuration: the CIFAR-10 values (docstring)

    @classmethod
    def passes(cls, params: Params, protocol, kept_fraction: float = 1.0, n_train: int | None = None) -> Passes:
        """The relabelling network's epochs, then the retrained network's (each evaluated)."""
        e = stage_epochs(params, protocol)
        trained = e["relabel"] + e["retrain"]
        return Passes(train=trained, evaluations=trained)

    def diagnostics(self) -> dict:
        fraction = getattr(self, "relabelled_fraction", None)
        out = {} if fraction is None else {"relabelled_fraction": fraction}
        if getattr(self, "skipped", None):
            out["skipped_stages"] = self.skipped
        return out

    def fit(self, task) -> None:
        p = self.params
        epochs = stage_epochs(p, task.protocol)
        n1, n2, begin, window = epochs["relabel"], epochs["retrain"], epochs["begin_epoch"], epochs["window"]
        official = p.lr_source == "official"
        lr_scale = task.protocol.lr / PAPER_LR
        train = task.train
        n, c = len(train), task.num_classes
        position = torch.full((int(train.indices.max()) + 1,), -1, dtype=torch.long, device=train.indices.device)
        position[train.indices] = torch.arange(n, device=train.indices.device)
        labels = LabelUpdater(train.labels, c, window=window, begin=begin)
        if begin > n1:  # rule 3 of the stage-length rule: say so rather than run a relabelling that never relabels
            self.skipped = {"label update": f"the first step ends at epoch {n1}, before label updates begin at epoch "
                                            f"{begin}: the labels stay the noisy ones"}
        prior = torch.full((c,), 1.0 / c, device=task.device)
        generator = task.generator("batches")
        epoch = 0

        # --- stage 0: first step — joint loss on soft labels, labels updated each epoch ---------
        started_stage = time.perf_counter()
        model = task.new_model()
        optimizer = task.new_optimizer(model.parameters(), lr=p.step1_lr * lr_scale if official else None)
        predictions = torch.zeros((n, c), device=task.device)

        def step1_loss(logits, y, idx):
            pos = position[idx]
            predictions[pos] = torch.softmax(logits.detach(), dim=1)
            return joint_loss(logits, labels.soft[pos], prior, alpha=p.alpha, beta=p.beta)

        for e in range(1, n1 + 1):
            started = time.perf_counter()
            sums = task.train_epoch(model, optimizer, generator, step1_loss)
            updated = labels.push(e, predictions)
            epoch += 1
            changed = float((labels.hard != train.labels).float().mean())
            task.record_epoch(epoch, model, optimizer, *sums, started, stage=0.0, stage_epoch=float(e),
                              labels_updated=float(updated), relabelled_fraction=changed)
        self.soft_labels, self.hard_labels = labels.soft.detach().cpu(), labels.hard.detach().cpu()
        self.relabelled_fraction = float((labels.hard != train.labels).float().mean())
        task.history.stage_seconds["relabel"] = time.perf_counter() - started_stage

        # --- stage 1: second step — retrain from scratch on the final labels --------------------
        started_stage = time.perf_counter()
        targets = F.one_hot(labels.hard, c).float() if p.step2_hard else labels.soft
        model = task.new_model("model_retrain")
        optimizer = task.new_optimizer(model.parameters(), lr=p.step2_lr * lr_scale if official else None)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, scaled_milestones(task, n2), gamma=task.protocol.gamma)
        for e in range(1, n2 + 1):
            started = time.perf_counter()
            sums = task.train_epoch(model, optimizer, generator,
                                    lambda logits, y, idx: soft_cross_entropy(logits, targets[position[idx]]))
            epoch += 1
            task.record_epoch(epoch, model, optimizer, *sums, started, stage=1.0, stage_epoch=float(e))
            scheduler.step()
        task.history.stage_seconds["retrain"] = time.perf_counter() - started_stage
