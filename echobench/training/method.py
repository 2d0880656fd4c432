"""The method interface and registry.

A method receives a `Task` (train/validation images with noisy labels, the clean test set for
evaluation, the protocol) and trains, recording one `EpochRecord` per epoch in `task.history`. Most
methods are one network trained with a different loss: subclass `SingleNetworkMethod` and write
`loss()`. Multi-stage or two-network methods override `fit()` and use the Task's building blocks.

Each method has a `Params` dataclass of hyperparameters; `default_params(dataset)` gives the
per-dataset defaults from its official source, and suite files may override fields: by name and
with a value of the field's annotated type (`echobench.checks.check_fields`).

Plugins (`echobench.plugins`; the user's guide and the stable API: docs/plugin-api.md) register their
methods with the same `register_method`, through an entry point of group `echobench.methods`, or are
named `module:Class` in a suite; `check_method_class` refuses a broken one in one line.
"""

from __future__ import annotations

import abc
import dataclasses
import inspect
import time
from dataclasses import dataclass
from typing import Any, ClassVar

from echobench.checks import check_fields
from echobench.errors import EchobenchError
from echobench.registry import Registry

def check_method_class(cls: Any, name: str, source: Any) -> None:
    """EchobenchError, one line naming the file and the problem, unless a plugin's method `cls` is a
    `Method` subclass that declares its `Params` (a dataclass whose fields have defaults, unless
    `default_params` is overridden), implements every abstract method, and whose `fit`, `loss` and
    `default_params` take the arguments echobench passes."""
    where = _where(cls, source)
    if not isinstance(cls, type) or not issubclass(cls, Method):
        raise EchobenchError(f"{where}: method {name!r} is {cls!r}, not a subclass of echobench.training.method."
                             f"Method (subclass SingleNetworkMethod and write loss(), or Method and write fit())")
    label = f"{where}: method {name!r} (class {cls.__qualname__})"
    declared = next((k for k in cls.__mro__ if "Params" in vars(k)), Method)
    params = getattr(cls, "Params", None)
    if declared in (Method, SingleNetworkMethod):
        raise EchobenchError(f"{label} declares no `Params`: give it a frozen dataclass of its hyperparameters "
                             f"(`Params = NoParams` if it has none)")
    if not (isinstance(params, type) and dataclasses.is_dataclass(params)):
        raise EchobenchError(f"{label}: `Params` must be a dataclass (@dataclass(frozen=True) class ...), got {params!r}")
    if "default_params" not in _overridden(cls):
        missing = [f.name for f in dataclasses.fields(params)
                   if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        if missing:
            raise EchobenchError(f"{label}: field(s) {missing} of {params.__name__} have no default; give them one "
                                 f"or override default_params(dataset)")
    if inspect.isabstract(cls):
        raise EchobenchError(f"{label} does not implement {', '.join(sorted(cls.__abstractmethods__))}()")
    expected = {"fit": ("self", "task"), "default_params": ("dataset",)}
    if issubclass(cls, SingleNetworkMethod):
        expected["loss"] = ("self", "logits", "targets", "indices", "epoch", "task")
        expected["begin_epoch"] = ("self", "epoch", "model", "task")
    for attr, args in expected.items():
        fn = getattr(cls, attr)
        try:
            inspect.signature(fn).bind(*args)
        except TypeError:
            line = _line(fn)
            raise EchobenchError(f"{label}: {attr}{inspect.signature(fn)}{line} cannot be called as "
                                 f"{attr}({', '.join(args)})") from None
        except ValueError:  # no signature to read (a builtin): not ours to judge
            continue


def _overridden(cls: type) -> set[str]:
    return {k for c in cls.__mro__ if c not in (Method, SingleNetworkMethod, abc.ABC, object) for k in vars(c)}


def _where(obj: Any, source: Any) -> str:
    """The file that defines `obj` (the most precise place to point at), else the plugin's label."""
    try:
        file = inspect.getsourcefile(obj) if isinstance(obj, type) or callable(obj) else None
    except TypeError:
        file = None
    return file or getattr(source, "label", "a plugin")


def _line(fn: Any) -> str:
    try:
        return f" (line {inspect.getsourcelines(fn)[1]})"
    except (OSError, TypeError):
        return ""


METHODS: Registry[type["Method"]] = Registry("method", check=check_method_class,
                                             import_names=True)
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
        if isinstance(cls, type):
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
    def passes(cls, params: Any, protocol, kept_fraction: float = 1.0, n_train: int | None = None) -> Passes:
        """The data passes of one `fit` under `protocol` (`Passes`); override with the method's stages.
        `kept_fraction` is EchoSelect's share of kept originals, for the methods whose training set
        depends on it (1.0, an upper bound, when not known); `n_train` the size of the training split,
        for the methods whose stages depend on it (T-Revision skips a revision stage too short to act;
        None: not known, count every stage, an upper bound). Default: one network, one evaluated epoch
        per protocol epoch."""
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

    def begin_epoch(self, epoch: int, model, task) -> None:
        """Called before each epoch (1, 2, ...) with the network: per-sample state a loss keeps (GCE's
        pruning weights, examples/gce.py) is updated here. Default: nothing."""

    def fit(self, task) -> None:
        model = task.new_model()
        optimizer = task.new_optimizer(model.parameters())
        scheduler = task.new_scheduler(optimizer)
        generator = task.generator("batches")
        clip = getattr(self.params, "grad_clip", None)
        for epoch in range(1, task.protocol.epochs + 1):
            self.begin_epoch(epoch, model, task)
            started = time.perf_counter()
            sums = task.train_epoch(model, optimizer, generator,
                                    lambda logits, y, idx: self.loss(logits, y, idx, epoch, task), grad_clip=clip)
            task.record_epoch(epoch, model, optimizer, *sums, started)
            scheduler.step()
