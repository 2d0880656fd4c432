"""Training machinery shared by every method: data on the device, batched augmentation, the epoch
loop's pieces, evaluation, the per-epoch history, and the one CE epoch loop (`train_epochs`) that the
EchoAlign methods, the multi-stage methods' warm-up and the selection peers' networks all run.

Data stays put (after KellerJordan/cifar10-airbench `airbench/utils.py`): each split is one uint8
tensor moved to the device once; shuffling is a `torch.randperm` and pad-crop + flip are done on the
whole batch with tensor indexing, no DataLoader workers and no per-sample PIL loop. Batches carry
the samples' indices so that methods can keep per-sample state (labels, losses, weights).

Randomness: the model's initial weights, the shuffling and the augmentation each come from their
own seeded `torch.Generator` (CPU, so runs are reproducible across devices' RNG differences).

No host syncs inside the epoch loop: the CPU-drawn random numbers go to a GPU through pinned memory
without blocking (`to_device`), the loss and accuracy sums stay on the device, and `record_epoch`
reads them once per epoch. The protocol's `last_batch: drop` drops each epoch's last partial batch
(`Task.batches`), and `compile: true` runs `Task.train_epoch`'s step compiled (`Task.compiled_step`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from echobench.errors import EchobenchError
from echobench.training.networks import build_model
from echobench.training.protocols import Protocol
from echobench.seeding import torch_seed


@dataclass
class DeviceSplit:
    """One split on the device: uint8 NCHW images, int64 labels and the samples' dataset indices."""

    images: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor

    @classmethod
    def from_numpy(cls, images: np.ndarray, labels: np.ndarray, indices: np.ndarray, device: torch.device) -> "DeviceSplit":
        images = images if images.flags.writeable else images.copy()  # cached datasets are read-only
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()
        return cls(x.to(device), torch.tensor(labels, dtype=torch.int64, device=device), torch.tensor(indices, dtype=torch.int64, device=device))

    def __len__(self) -> int:
        return self.labels.shape[0]

    def subset(self, positions: torch.Tensor) -> "DeviceSplit":
        positions = positions.to(self.labels.device)
        return DeviceSplit(self.images[positions], self.labels[positions], self.indices[positions])

    def with_labels(self, labels: torch.Tensor) -> "DeviceSplit":
        return DeviceSplit(self.images, labels.to(self.labels.device), self.indices)


class Normalizer:
    """uint8 NCHW → normalized float (channels_last and half-ready on GPU)."""

    def __init__(self, mean: np.ndarray, std: np.ndarray, device: torch.device):
        self.mean = torch.as_tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1) * 255.0
        self.std = torch.as_tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1) * 255.0
        self.channels_last = device.type == "cuda"

    def __call__(self, x_uint8: torch.Tensor) -> torch.Tensor:
        x = (x_uint8.float() - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A CPU tensor on `device`; to a GPU through pinned memory, without blocking the host (a plain
    `.to("cuda")` of pageable memory waits for the copy, i.e. for the GPU's queue: a sync per step).
    Same values either way; torch's pinned-memory cache keeps the buffer until the copy is done."""
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def augment(x: torch.Tensor, padding: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Batched pad-`padding` random crop (zero fill, as torchvision's RandomCrop) and horizontal flip."""
    n, _, h, w = x.shape
    device = x.device
    if padding > 0:
        padded = F.pad(x, (padding,) * 4)
        dy = to_device(torch.randint(0, 2 * padding + 1, (n,), generator=generator), device)
        dx = to_device(torch.randint(0, 2 * padding + 1, (n,), generator=generator), device)
        rows = (dy[:, None] + torch.arange(h, device=device))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w, device=device))[:, None, None, :]
        batch = torch.arange(n, device=device)[:, None, None, None]
        chans = torch.arange(x.shape[1], device=device)[None, :, None, None]
        x = padded[batch, chans, rows, cols]
    if flip:
        mask = to_device(torch.rand(n, generator=generator) < 0.5, device)[:, None, None, None]
        x = torch.where(mask, x.flip(-1), x)
    return x


def channel_stats(images: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std in [0, 1] units of uint8 NHWC images, in chunks (a float64 copy of
    CIFAR's training set would take over a gigabyte)."""
    total = np.zeros(images.shape[-1])
    squares = np.zeros(images.shape[-1])
    for start in range(0, len(images), chunk):
        x = images[start : start + chunk].reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
        total += x.sum(axis=0)
        squares += (x * x).sum(axis=0)
    count = len(images) * images.shape[1] * images.shape[2]
    mean = total / count
    return mean, np.sqrt(np.maximum(squares / count - mean**2, 0.0)) + 1e-8


@dataclass
class EpochRecord:
    epoch: int
    lr: float
    train_loss: float
    train_acc: float  # against the (noisy) training labels
    val_acc: float  # against the noisy validation labels
    test_acc: float  # clean test set
    seconds: float
    extra: dict[str, float] = field(default_factory=dict)


class History:
    """Per-epoch records of a run and the three summary accuracies.

    - `test_acc_last`: test accuracy after the last epoch;
    - `test_acc_best_val`: test accuracy at the epoch of best accuracy on the noisy validation set
      (the first such epoch on ties) — the model selection a practitioner can actually do;
    - `test_acc_oracle`: the best test accuracy over all epochs. It peeks at the test set; the
      released EchoAlign code reports this one, so it is kept, and labelled as an oracle.

    Multi-stage methods mark each epoch with `extra["stage"]`; the summary then covers the final
    stage only (the model the method delivers), while the curves keep every stage.
    """

    def __init__(self, on_epoch: Callable[[EpochRecord], None] | None = None):
        self.records: list[EpochRecord] = []
        self.on_epoch = on_epoch
        self.stage_seconds: dict[str, float] = {}

    def add(self, record: EpochRecord) -> None:
        self.records.append(record)
        if self.on_epoch:
            self.on_epoch(record)

    def summary(self) -> dict[str, Any]:
        if not self.records:
            raise RuntimeError("the method finished without recording an epoch")
        final_stage = self.records[-1].extra.get("stage")
        records = [r for r in self.records if r.extra.get("stage") == final_stage]
        test = [r.test_acc for r in records]
        val = [r.val_acc for r in records]
        best_val = int(np.argmax(val))
        return {
            "test_acc_last": test[-1],
            "test_acc_best_val": test[best_val],
            "test_acc_oracle": max(test),
            "best_val_epoch": records[best_val].epoch,
            "val_acc_best": val[best_val],
            "epochs": len(self.records),
        }

    def curves(self) -> list[dict[str, Any]]:
        return [r.__dict__.copy() for r in self.records]


def steps_per_epoch(n_train: int, protocol) -> int:
    """Optimizer steps of one epoch over `n_train` samples under `protocol` (its batch size and
    `last_batch`), as `Task.batches` yields them."""
    bs = protocol.batch_size
    return n_train // bs if protocol.last_batch == "drop" and n_train >= bs else -(-n_train // bs)


@dataclass
class Task:
    """Everything a method may see: images and noisy labels of train and validation, the clean test
    set for evaluation only, and the protocol. Never the clean training labels or hidden parameters."""

    dataset: str
    num_classes: int
    class_names: list[str]
    train: DeviceSplit
    val: DeviceSplit
    test: DeviceSplit
    protocol: Protocol
    device: torch.device
    seed: int
    noise_kind: str
    noise_rate: float  # the nominal rate (methods such as Co-teaching use it as their forget rate)
    normalizer: Normalizer
    history: History
    dataset_options: dict[str, Any] = field(default_factory=dict)  # the loader options: part of EchoMod's cache key
    cache_dir: str | None = None  # EchoMod's cache root (None: $ECHOBENCH_CACHE or <data root>/echomod)
    # (model, optimizer, compiled forward, compiled optimizer step) of `compiled_step`, made once per pair
    _compiled: list = field(default_factory=list, init=False, repr=False, compare=False)

    # --- building blocks for a method's own loop -------------------------------------------------
    def generator(self, stream: str) -> torch.Generator:
        return torch.Generator().manual_seed(torch_seed(self.seed, stream))

    def new_model(self, stream: str = "model") -> torch.nn.Module:
        """A fresh network of the protocol's architecture, initialised from its own seed stream."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(torch_seed(self.seed, stream))
            model = build_model(self.protocol.resolved_model(self.num_classes), self.num_classes)
        model = model.to(self.device)
        if self.device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        return model

    def new_optimizer(self, params, lr: float | None = None) -> torch.optim.Optimizer:
        p = self.protocol
        lr = p.lr if lr is None else lr
        if p.optimizer == "adam":
            return torch.optim.Adam(params, lr=lr, weight_decay=p.weight_decay)
        return torch.optim.SGD(params, lr=lr, momentum=p.momentum, weight_decay=p.weight_decay)

    def new_scheduler(self, optimizer: torch.optim.Optimizer):
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(self.protocol.milestones), gamma=self.protocol.gamma)

    def steps_per_epoch(self, split: DeviceSplit | None = None) -> int:
        """Optimizer steps of one training epoch over `split` (the training split), as `batches` yields them."""
        return steps_per_epoch(len(split if split is not None else self.train), self.protocol)

    def batches(self, split: DeviceSplit, generator: torch.Generator, *, augment_images: bool = True, batch_size: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Shuffled training batches (x normalized, y, dataset index). The last partial batch is kept,
        or dropped under the protocol's `last_batch: drop` (unless it is the only batch: a split smaller
        than one batch still trains)."""
        bs = batch_size or self.protocol.batch_size
        order = to_device(torch.randperm(len(split), generator=generator), split.labels.device)
        end = len(split)
        if self.protocol.last_batch == "drop" and end >= bs:
            end -= end % bs
        for start in range(0, end, bs):
            pos = order[start : start + bs]
            x = split.images[pos]
            if augment_images:
                x = augment(x, self.protocol.crop_padding, self.protocol.flip, generator)
            yield self.normalizer(x), split.labels[pos], split.indices[pos]

    def train_epoch(self, model: torch.nn.Module, optimizer, generator: torch.Generator,
                    loss_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
                    grad_clip: float | None = None, split: DeviceSplit | None = None, train_mode: bool = True,
                    augment_images: bool = True):
        """One pass over `split` (default: train) minimising `loss_fn(logits, y, index)`.

        `train_mode=False` keeps the model in eval mode (e.g. a frozen encoder's batch-norm statistics).

        Returns (loss sum, correct count, samples seen) for `record_epoch`; the sums stay on the
        device because a float() per batch would synchronise the GPU every step.
        """
        model.train(train_mode)
        forward, step = (model, optimizer.step) if not self.protocol.compile else self.compiled_step(model, optimizer)
        graphs = self.protocol.compile and self.device.type == "cuda"
        loss_sum, correct, seen = 0.0, 0, 0
        for x, y, idx in self.batches(split if split is not None else self.train, generator, augment_images=augment_images):
            if graphs:  # a new iteration: the CUDA graphs' outputs of the previous step may be overwritten
                torch.compiler.cudagraph_mark_step_begin()
            with self.autocast():
                logits = forward(x)
            logits = logits.float()
            loss = loss_fn(logits, y, idx)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            step()
            loss_sum = loss_sum + loss.detach() * len(y)
            correct = correct + (logits.argmax(1) == y).sum()
            seen += len(y)
        return loss_sum, correct, seen

    def compiled_step(self, model: torch.nn.Module, optimizer) -> tuple[Callable, Callable]:
        """(forward, optimizer step) compiled with `torch.compile`, made once per (model, optimizer).

        The forward is the network compiled (AOTAutograd compiles its backward with it), on CUDA in
        mode "reduce-overhead" (CUDA graphs: the protocol's `last_batch: drop` keeps one static shape);
        the step is `optimizer.step` compiled (torch's recipe for compiling an optimizer; a learning rate
        changed by the schedule recompiles it once per milestone). The loss stays eager: methods
        supply their own. The compiled forward shares the model's parameters and buffers, so
        evaluation (`predict`, eager) sees the trained weights.

        A cell's first compiled step resets torch's compilation caches (`torch._dynamo.reset`), so every
        cell compiles its own graphs whatever ran before it in the process: a worker that computes
        many cells never reaches dynamo's recompilation limit (past it, steps would silently run eager),
        and a cell's numbers do not depend on the executor (the on-disk inductor cache keeps it fast)."""
        for m, o, forward, step in self._compiled:
            if m is model and o is optimizer:
                return forward, step
        if not self._compiled:
            torch._dynamo.reset()
        forward = torch.compile(model, mode="reduce-overhead" if self.device.type == "cuda" else None)

        @torch.compile(fullgraph=False)
        def step() -> None:
            optimizer.step()

        self._compiled.append((model, optimizer, forward, step))
        return forward, step

    def autocast(self):
        enabled = self.device.type == "cuda" and self.protocol.mixed_precision
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=enabled)

    @torch.no_grad()
    def predict(self, model: torch.nn.Module, split: DeviceSplit) -> torch.Tensor:
        """Logits (float32) for every sample of `split`, in order, without augmentation."""
        was_training = model.training
        model.eval()
        outs = []
        bs = self.protocol.eval_batch_size
        for start in range(0, len(split), bs):
            with self.autocast():
                outs.append(model(self.normalizer(split.images[start : start + bs])).float())
        model.train(was_training)
        return torch.cat(outs)

    def accuracy(self, model: torch.nn.Module, split: DeviceSplit) -> float:
        return float((self.predict(model, split).argmax(1) == split.labels).float().mean())

    def record_epoch(self, epoch: int, model: torch.nn.Module, optimizer, loss_sum, correct, seen: int, started: float, **extra: float) -> EpochRecord:
        """Evaluate `model` on validation and test and append the epoch to the history."""
        record = EpochRecord(
            epoch=epoch,
            lr=float(optimizer.param_groups[0]["lr"]),
            train_loss=float(loss_sum) / max(seen, 1),
            train_acc=float(correct) / max(seen, 1),
            val_acc=self.accuracy(model, self.val),
            test_acc=self.accuracy(model, self.test),
            seconds=time.perf_counter() - started,
            extra=dict(extra),
        )
        self.history.add(record)
        return record


# --- the CE epoch loop ----------------------------------------------------------------------------------

def cross_entropy_loss(logits: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Plain cross-entropy against the (noisy) labels, in `Task.train_epoch`'s loss signature."""
    return F.cross_entropy(logits, y)


def model_state(model: torch.nn.Module) -> dict:
    """A detached copy of the weights, to restore the best epoch of a stage."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@dataclass
class EpochsRun:
    """What `train_epochs` did: the number of its last epoch, the epoch (1…epochs, within this call)
    whose weights the model holds at the end, and the noisy-validation accuracy of each epoch (when
    `keep="best_val"`)."""

    last_epoch: int
    kept_epoch: int
    val_accs: list[float] = field(default_factory=list)


def train_epochs(task: Task, model: torch.nn.Module, optimizer, generator: torch.Generator, epochs: int, *,
                 loss_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                 split: DeviceSplit | None = None, scheduler=None, augment_images: bool = True,
                 record: bool = True, first_epoch: int = 0, stage: float | None = None,
                 number_stage_epochs: bool = False, keep: str = "last") -> EpochsRun:
    """The one CE epoch loop: `epochs` passes of `Task.train_epoch` over `split` (default: train)
    minimising `loss_fn` (default: cross-entropy), the `scheduler` (if any) stepped after each.

    `record=True` appends every epoch to `task.history`, numbered from `first_epoch` + 1, with
    `extra["stage"]` = `stage` when given and `extra["stage_epoch"]` = its number within this call when
    `number_stage_epochs`. `keep="best_val"` restores, at the end, the weights of the epoch of best
    noisy-validation accuracy (first on ties; nothing is restored when every accuracy was NaN):
    measured by `record_epoch` when recording, else by `Task.accuracy` on `task.val`. `keep="last"`
    leaves the last epoch's weights."""
    if keep not in ("last", "best_val"):
        raise EchobenchError(f"keep must be 'last' or 'best_val', got {keep!r}")
    loss_fn = loss_fn or cross_entropy_loss
    best, best_epoch, best_state, val_accs = -1.0, epochs, None, []
    for e in range(1, epochs + 1):
        started = time.perf_counter()
        sums = task.train_epoch(model, optimizer, generator, loss_fn, split=split, augment_images=augment_images)
        val_acc = None
        if record:
            extra = {} if stage is None else {"stage": float(stage)}
            if number_stage_epochs:
                extra["stage_epoch"] = float(e)
            val_acc = task.record_epoch(first_epoch + e, model, optimizer, *sums, started, **extra).val_acc
        elif keep == "best_val":
            val_acc = task.accuracy(model, task.val)
        if keep == "best_val":
            val_accs.append(val_acc)
            if val_acc > best:
                best, best_epoch, best_state = val_acc, e, model_state(model)
        if scheduler is not None:
            scheduler.step()
    if best_state is not None and best_epoch != epochs:  # the last epoch's weights are already there
        model.load_state_dict(best_state)
    return EpochsRun(first_epoch + epochs, best_epoch, val_accs)
