"""The method interface and registry.

A method receives a `Task` (train/validation images with noisy labels, the clean test set for
evaluation, the protocol) and trains, recording one `EpochRecord` per epoch in `task.history`. Most
methods are one network trained with a different loss: subclass `SingleNetworkMethod` and write
`loss()`. Multi-stage or two-network methods override `fit()` and use the Task's building blocks.

Each method has a `Params` dataclass of hyperparameters; `default_params(dataset)` gives the
per-dataset defaults from its official source, and suite files may override fields: by name and
with a value of the field's annotated type (`echobench.checks.check_fields`).
"""

from __future__ import annotations

import abc
import dataclasses
import time
from dataclasses import dataclass
from typing import Any, ClassVar

from echobench.checks import check_fields
from echobench.registry import Registry

METHODS: Registry[type["Method"]] = Registry("method")
METHODS.add("ce", "echobench.baselines.ce:CrossEntropy")
METHODS.add("apl", "echobench.baselines.apl:ActivePassiveLoss")
METHODS.add("pce", "echobench.baselines.pce:PartiallyHuberisedCE")
METHODS.add("aul", "echobench.baselines.aul:AsymmetricUnhingedLoss")
METHODS.add("celc", "echobench.baselines.celc:LogitClipCE")
METHODS.add("t-revision", "echobench.baselines.t_revision:TRevision")
METHODS.add("identifiability", "echobench.baselines.identifiability:Identifiability")
METHODS.add("joint", "echobench.baselines.joint:JointOptimization")
METHODS.add("co-teaching", "echobench.baselines.co_teaching:CoTeaching")
METHODS.add("sigua", "echobench.baselines.sigua:Sigua")
METHODS.add("co-dis", "echobench.baselines.co_dis:CoDis")
METHODS.add("echoalign", "echobench.echoalign.methods:EchoAlign")
METHODS.add("echoalign-released", "echobench.echoalign.methods:EchoAlignReleased")
METHODS.add("im-only", "echobench.echoalign.methods:ModificationOnly")
METHODS.add("echoselect-only", "echobench.echoalign.methods:SelectionOnly")

CIFAR100_LIKE = ("cifar100", "cifar100n")


def uses_cifar100_defaults(dataset: str) -> bool:
    """Official configs exist for CIFAR-10 and CIFAR-100; every other dataset takes CIFAR-10's."""
    return dataset in CIFAR100_LIKE


def register_method(name: str):
    """Class decorator: register a Method subclass under the name the paper's tables use."""

    def deco(cls):
        cls.name = name
        METHODS.add(name, cls)
        return cls

    return deco


@dataclass(frozen=True)
class NoParams:
    pass


@dataclass(frozen=True)
class Passes:
    """How much data one `fit` pushes through networks, in whole passes over each split: what the dry
    run's training projection (`echobench.reporting.training_cost`) multiplies by the split sizes and the
    network's FLOP per image. `train`: forward + backward passes over the training split (network-
    epochs); `train_forward`: forward-only passes over it; `evaluations`: forward passes over
    validation *and* test (one per network per recorded epoch); `val_forward`: extra forward passes
    over validation alone. Counted, per method, from its `fit` (tests/test_training_cost.py checks the
    counts against hooked runs)."""

    train: float
    train_forward: float = 0.0
    evaluations: float = 0.0
    val_forward: float = 0.0


def uses_echomod(method: str) -> bool:
    """Whether the registered method `method` runs EchoMod on its training split (so its cells need
    EchoMod's pairs): the one definition, `Method.uses_echomod`, read from the method's class (which
    imports its module)."""
    return bool(METHODS.get(method).uses_echomod)


class Method(abc.ABC):
    name: ClassVar[str] = ""
    Params: ClassVar[type] = NoParams
    uses_echomod: ClassVar[bool] = False  # True: `fit` runs EchoMod on the training split (the EchoAlign methods)

    def __init__(self, params: Any = None):
        self.params = params if params is not None else self.Params()

    @classmethod
    def default_params(cls, dataset: str) -> Any:
        """Hyperparameters for `dataset`; override where the official config differs per dataset."""
        return cls.Params()

    @classmethod
    def resolve_params(cls, dataset: str, overrides: dict[str, Any] | None) -> Any:
        """The dataset's defaults with `overrides` applied; EchobenchError for a name that is not a
        field of `Params` or a value not of the field's type (`alpha: "abc"`, `official_threshold: "no"`)."""
        base = cls.default_params(dataset)
        if not overrides:
            return base
        check_fields(type(base), overrides, f"method {cls.name!r}")
        return dataclasses.replace(base, **overrides)

    @abc.abstractmethod
    def fit(self, task) -> None:
        """Train on `task`, recording one `EpochRecord` per epoch in `task.history`."""

    @classmethod
    def passes(cls, params: Any, protocol, kept_fraction: float = 1.0) -> Passes:
        """The data passes of one `fit` under `protocol` (`Passes`); override with the method's stages.
        `kept_fraction` is EchoSelect's share of kept originals, for the methods whose training set
        depends on it (1.0, an upper bound, when not known). Default: one network, one evaluated
        epoch per protocol epoch."""
        return Passes(train=protocol.epochs, evaluations=protocol.epochs)

    def diagnostics(self) -> dict[str, Any]:
        """JSON-able facts a method estimated (a transition matrix, relabelled counts...), saved in the result."""
        return {}


class SingleNetworkMethod(Method):
    """One network, the protocol's optimizer and schedule, a method-specific loss.

    A `grad_clip` field in `Params` (a max L2 norm, or None) clips gradients before each step, as the
    official APL and AUL training scripts do.
    """

    @abc.abstractmethod
    def loss(self, logits, targets, indices, epoch: int, task):
        """The batch loss (a scalar tensor) of float32 `logits` against the noisy `targets`."""

    def fit(self, task) -> None:
        model = task.new_model()
        optimizer = task.new_optimizer(model.parameters())
        scheduler = task.new_scheduler(optimizer)
        generator = task.generator("batches")
        clip = getattr(self.params, "grad_clip", None)
        for epoch in range(1, task.protocol.epochs + 1):
            started = time.perf_counter()
            sums = task.train_epoch(model, optimizer, generator,
                                    lambda logits, y, idx: self.loss(logits, y, idx, epoch, task), grad_clip=clip)
            task.record_epoch(epoch, model, optimizer, *sums, started)
            scheduler.step()
