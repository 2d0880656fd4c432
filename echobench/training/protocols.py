"""Named training protocols: network, optimizer, schedule, augmentation, epochs.

`paper` is the EchoAlign paper's common protocol for every method (paper §5 and appendix C): SGD lr 0.1, momentum 0.9, weight decay 1e-4, batch 128, 200 epochs, lr ×0.1 at 100
and 150, pad-4 random crop + horizontal flip + normalize, 45k/5k train/validation. The network is
ResNet-18 for 10 classes and ResNet-34 for 100 (`model: auto`). The others are the same recipe
scaled down so that CPU runs finish: `cpu` (the `shapes` suite), `demo` (the default job) and `smoke`
(tests).

Execution fields that change results. `last_batch` says what happens to the last partial training
batch of each epoch: `keep` (the default: every sample every epoch, as the paper's DataLoader) or
`drop` (every step has the protocol's batch size; the samples left over differ from epoch to epoch
because each epoch reshuffles). `compile: true` runs `Task.train_epoch`'s step compiled
(`torch.compile` of the network's forward and backward and of the optimizer step; on CUDA the
network in mode "reduce-overhead", i.e. CUDA graphs); it needs `last_batch: drop`, so that every
step has one static shape. Both change the numbers a cell produces (fused kernels round
differently; dropped samples change the steps), so both are part of a cell's identity — but only when
they differ from their defaults: `to_dict` (the protocol inside every cell's canonical spec) leaves
out `EXECUTION_DEFAULTS` at their default values, so every run id from before these fields existed
is unchanged. `paper-compiled` is `paper` with `compile: true, last_batch: drop`. `ce_levels_off`
(the floor of the stages that read a CE network, `echobench.training.stages`) is left out the same
way at 0.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from echobench.checks import check_fields
from echobench.errors import EchobenchError
from echobench.registry import Registry, unknown_name_error


@dataclass(frozen=True)
class Protocol:
    name: str
    model: str = "auto"  # auto: resnet18 for ≤ 10 classes, resnet34 above (the paper's choice)
    epochs: int = 200
    batch_size: int = 128
    optimizer: str = "sgd"  # sgd (momentum, weight decay) or adam (weight decay; betas 0.9, 0.999)
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    milestones: tuple[int, ...] = (100, 150)
    gamma: float = 0.1
    crop_padding: int = 4  # 0 turns random cropping off
    flip: bool = True
    val_fraction: float = 0.1
    eval_batch_size: int = 1024
    mixed_precision: bool = True  # on GPU only; CPU always runs fp32
    # Left out of `to_dict` at their defaults (see the module docstring), so run ids did not change.
    last_batch: str = "keep"  # keep | drop: the last partial training batch of each epoch
    compile: bool = False  # torch.compile the training step of Task.train_epoch (needs last_batch: drop)
    # The epoch by which CE's noisy-validation accuracy has levelled off under this protocol, measured
    # with CE alone; the floor of every stage that reads a CE network (`echobench.training.stages`,
    # rule 2). 0: not measured, no floor (the paper protocol keeps the official stage lengths).
    ce_levels_off: int = 0

    def resolved_model(self, num_classes: int) -> str:
        if self.model != "auto":
            return self.model
        return "resnet18" if num_classes <= 10 else "resnet34"

    def with_overrides(self, overrides: dict[str, Any]) -> "Protocol":
        """This protocol with `overrides` (field → value) applied: names and types checked against the
        fields' annotations (`echobench.checks`), then the values (`validate`)."""
        check_fields(Protocol, overrides, f"protocol {self.name!r}")
        clean = {k: tuple(v) if k == "milestones" else v for k, v in overrides.items()}
        updated = dataclasses.replace(self, **clean)
        updated.validate()
        return updated

    def validate(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.eval_batch_size < 1 or self.lr <= 0:
            raise EchobenchError(f"protocol {self.name!r}: epochs, batch_size, eval_batch_size and lr must be positive")
        if not 0 < self.val_fraction < 1 or self.crop_padding < 0 or min(self.momentum, self.weight_decay, self.gamma) < 0:
            raise EchobenchError(f"protocol {self.name!r}: val_fraction must be in (0, 1) and crop_padding, momentum, "
                                 f"weight_decay and gamma must not be negative")
        from echobench.training.networks import NETWORKS

        if self.model != "auto" and self.model not in NETWORKS:
            raise unknown_name_error("model", self.model, ["auto", *NETWORKS.names()])
        if self.optimizer not in ("sgd", "adam"):
            raise EchobenchError(f"protocol {self.name!r}: optimizer must be sgd or adam, got {self.optimizer!r}")
        if any(m < 1 for m in self.milestones) or list(self.milestones) != sorted(self.milestones):
            raise EchobenchError(f"protocol {self.name!r}: milestones must be increasing epoch numbers")
        if not 0 <= self.ce_levels_off <= self.epochs:
            raise EchobenchError(f"protocol {self.name!r}: ce_levels_off must be an epoch in 0..epochs, got {self.ce_levels_off}")
        if self.last_batch not in ("keep", "drop"):
            raise EchobenchError(f"protocol {self.name!r}: last_batch must be keep or drop, got {self.last_batch!r}")
        if self.compile and self.last_batch != "drop":
            raise EchobenchError(f"protocol {self.name!r}: compile: true needs last_batch: drop (every compiled step "
                                 f"then has one static shape, which CUDA graphs need)")

    def to_dict(self) -> dict[str, Any]:
        """All fields, except the execution fields at their default values (`EXECUTION_DEFAULTS`): this
        dict is the protocol inside a cell's canonical spec, whose hash is the run id."""
        d = dataclasses.asdict(self)
        d["milestones"] = list(self.milestones)
        for key, default in EXECUTION_DEFAULTS.items():
            if d[key] == default and type(d[key]) is type(default):
                del d[key]
        return d


# Fields added after run ids were first committed: at these values they are left out of `to_dict`.
EXECUTION_DEFAULTS: dict[str, Any] = {"last_batch": "keep", "compile": False, "ce_levels_off": 0}


PROTOCOLS: Registry[Protocol] = Registry("protocol")
PROTOCOLS.add("paper", Protocol("paper"))
# The paper's recipe with the compiled step (opt-in: other numbers, other run ids; see the module docstring).
PROTOCOLS.add("paper-compiled", Protocol("paper-compiled", last_batch="drop", compile=True))
# The CPU protocols use batch 32 and lr 0.02: on a few thousand `shapes` images, small batches (more
# steps per epoch) learn several times faster per second than batch 128 (measured with `demo`).
PROTOCOLS.add("cpu", Protocol("cpu", model="small-cnn", epochs=30, batch_size=32, lr=0.02, weight_decay=5e-4, milestones=(20, 27)))
# The embedded benchmark's protocol (the `shapes` suite and its ablation), chosen from CE's behaviour alone
# before any other method ran on it; the probes that chose it and the measurement of `ce_levels_off`
# are in reports/shapes-protocol/. Adam: at equal epochs CE fits the clean signal faster than under
# `cpu`'s SGD; no weight decay and a small MLP head: the regulariser and the capacity limit that most
# resist memorising wrong labels are removed, though at this cost CE still does not visibly memorise.
PROTOCOLS.add("shapes", Protocol("shapes", model="small-cnn-mlp", epochs=30, batch_size=32, optimizer="adam", lr=1e-3,
                                 weight_decay=0.0, milestones=(22,), ce_levels_off=23))
PROTOCOLS.add("demo", Protocol("demo", model="small-cnn", epochs=10, batch_size=32, lr=0.02, weight_decay=5e-4, milestones=(6, 9)))
# Co-teaching's own protocol (Adam, its 9-layer CNN), defined beside the method that needs it.
PROTOCOLS.add("co-teaching", "echobench.baselines.co_teaching:CO_TEACHING_PROTOCOL")
PROTOCOLS.add("smoke", Protocol("smoke", model="tiny-cnn", epochs=2, batch_size=32, lr=0.02, milestones=(), eval_batch_size=512))


def get_protocol(name: str, overrides: dict[str, Any] | None = None) -> Protocol:
    protocol = PROTOCOLS.get(name)
    return protocol.with_overrides(overrides) if overrides else protocol
