"""The uniform dataset form and the dataset registry.

Every dataset, real or embedded, is loaded into one `Dataset` value: uint8 NHWC images and int64
labels for a train and a test part, plus class names. Anything a loader knows beyond that (CIFAR-N's
human label sets, the `shapes` world's hidden generating parameters) goes into `extras`, which the
runner uses for noise and analysis and never hands to a method.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from echobench.checks import check_options
from echobench.errors import EchobenchError
from echobench.paths import data_root
from echobench.registry import Registry, callable_check


@dataclass
class Dataset:
    name: str
    class_names: list[str]
    train_images: np.ndarray  # (N, H, W, 3) uint8
    train_labels: np.ndarray  # (N,) int64, the clean labels
    test_images: np.ndarray
    test_labels: np.ndarray
    extras: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for part in ("train", "test"):
            images, labels = getattr(self, f"{part}_images"), getattr(self, f"{part}_labels")
            if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
                raise ValueError(f"{self.name}: {part} images must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
            if labels.dtype != np.int64 or labels.shape != (images.shape[0],):
                raise ValueError(f"{self.name}: {part} labels must be int64 ({images.shape[0]},), got {labels.dtype} {labels.shape}")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


# A loader is called as loader(root: Path, **options) -> Dataset.
DATASETS: Registry = Registry("dataset", check=callable_check("dataset loader"))
DATASETS.add("shapes", "echobench.data.shapes:load_shapes")
DATASETS.add("cifar10", "echobench.data.cifar:load_cifar10")
DATASETS.add("cifar100", "echobench.data.cifar:load_cifar100")
DATASETS.add("cifar10n", "echobench.data.cifar_n:load_cifar10n")
DATASETS.add("cifar100n", "echobench.data.cifar_n:load_cifar100n")


def register_dataset(name: str):
    """Decorator: register a dataset loader `loader(root: Path, **options) -> Dataset` (a plugin's too)."""
    return DATASETS.register(name)


def check_dataset_options(name: str, options: dict[str, Any]) -> None:
    """EchobenchError unless `options` are keyword parameters of dataset `name`'s loader, each of its
    annotated type (`n_train: "many"` is refused before anything is loaded)."""
    check_options(DATASETS.get(name), options, f"dataset {name!r}", skip=("root",))


def dataset_identity(name: str, options: dict[str, Any] | None) -> dict[str, Any]:
    """`options` with the loader's identity fields filled in, sorted by key: what a cell spec and an
    EchoMod cache key record of the dataset. A loader may declare `identity` (a dict attribute) for
    options that are always part of what it returns, such as the version of a generated world
    (`shapes`' `world`): a results directory or cache then never mixes images of two generator
    versions, because their run ids and cache keys differ."""
    loader = DATASETS.get(name)
    return dict(sorted({**getattr(loader, "identity", {}), **(options or {})}.items()))


def load_dataset(name: str, root: str | os.PathLike | None = None, **options: Any) -> Dataset:
    check_dataset_options(name, options)
    loader = DATASETS.get(name)
    try:
        return loader(data_root(root), **options)
    except TypeError as exc:  # an option the loader does not take
        if "unexpected keyword" in str(exc):
            raise EchobenchError(f"dataset {name!r}: {exc}; check the dataset options in the suite") from None
        raise
