"""One training cell, in this process: dataset → noisy labels → seeded split → `method.fit(task)`.

`run_cell` returns the cell's result (metrics, noise facts, curves, timings); `run_cell_retrying_oom`
retries it with smaller batches when the GPU runs out of memory. Which process calls it, and how the
result is filed, is the executors' and the store's business (`echobench.harness.cells`).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from functools import lru_cache
from typing import Callable

import numpy as np

from echobench.data import Dataset, load_dataset
from echobench.data.noise import NoiseSpec, NoisyLabels, realized_rate, split_train_val
from echobench.errors import EchobenchError
from echobench.harness.context import RunContext, default_context
from echobench.harness.suite import RunSpec
from echobench.seeding import numpy_rng
from echobench.training.method import METHODS
from echobench.training.protocols import Protocol


@lru_cache(maxsize=4)
def _cached_dataset(name: str, options_json: str, root: str | None) -> Dataset:
    import json

    return load_dataset(name, root, **json.loads(options_json))


def get_dataset(name: str, options: dict, root: str | None) -> Dataset:
    import json

    return _cached_dataset(name, json.dumps(options, sort_keys=True), root)


def make_noisy_labels(spec: RunSpec, dataset: Dataset) -> NoisyLabels:
    noise = NoiseSpec.parse(spec.noise)
    return noise.apply(
        dataset.train_labels,
        dataset.num_classes,
        numpy_rng(spec.seed, "noise"),
        images=dataset.train_images,
        human_labels=dataset.extras.get("human_labels"),
    )


def build_task(spec: RunSpec, dataset: Dataset, noisy: NoisyLabels, ctx: RunContext, on_epoch=None):
    """The `Task` a method sees, and the (train, validation) indices of the seeded split."""
    import torch

    from echobench.training.trainer import DeviceSplit, History, Normalizer, Task, channel_stats

    protocol = Protocol(**{**spec.protocol, "milestones": tuple(spec.protocol["milestones"])})
    train_idx, val_idx = split_train_val(len(noisy.labels), numpy_rng(spec.seed, "split"), protocol.val_fraction)
    dev = torch.device(ctx.resolved_device)
    images = dataset.train_images
    mean, std = channel_stats(images[train_idx])
    noise = NoiseSpec.parse(spec.noise)
    return Task(
        dataset=spec.dataset,
        num_classes=dataset.num_classes,
        class_names=list(dataset.class_names),
        train=DeviceSplit.from_numpy(images[train_idx], noisy.labels[train_idx], train_idx, dev),
        val=DeviceSplit.from_numpy(images[val_idx], noisy.labels[val_idx], val_idx, dev),
        test=DeviceSplit.from_numpy(dataset.test_images, dataset.test_labels, np.arange(len(dataset.test_labels)), dev),
        protocol=protocol,
        device=dev,
        seed=spec.seed,
        noise_kind=noise.kind,
        noise_rate=noise.rate if noise.kind != "human" else noisy.realized_rate,
        normalizer=Normalizer(mean, std, dev),
        history=History(on_epoch),
        dataset_options=dict(spec.dataset_options),
        cache_dir=ctx.cache_dir,
    ), (train_idx, val_idx)


def run_cell(spec: RunSpec, ctx: RunContext | None = None, on_epoch: Callable | None = None) -> dict:
    """Run one cell in this process and return its result (metrics, noise facts, curves, timings)."""
    ctx = ctx or default_context(device="cpu")
    started = time.perf_counter()
    dataset = get_dataset(spec.dataset, spec.dataset_options, ctx.data_root)
    noisy = make_noisy_labels(spec, dataset)
    task, (train_idx, val_idx) = build_task(spec, dataset, noisy, ctx, on_epoch)
    prepared = time.perf_counter()
    method_cls = METHODS.get(spec.method)
    method = method_cls(method_cls.resolve_params(spec.dataset, spec.method_params))
    method.fit(task)
    finished = time.perf_counter()
    clean = dataset.train_labels
    return {
        "metrics": task.history.summary(),
        "noise": {
            "realized_rate": noisy.realized_rate,
            "realized_rate_train": realized_rate(clean[train_idx], noisy.labels[train_idx]),
            "realized_rate_val": realized_rate(clean[val_idx], noisy.labels[val_idx]),
            "transition": noisy.transition.round(6).tolist(),
        },
        "sizes": {"train": len(train_idx), "val": len(val_idx), "test": len(dataset.test_labels)},
        "diagnostics": method.diagnostics(),
        "curves": task.history.curves(),
        "timings": {"prepare_s": prepared - started, "fit_s": finished - prepared, "total_s": finished - started,
                    **{f"{k}_s": v for k, v in task.history.stage_seconds.items()}},
    }


# --- out of GPU memory: the same cell with smaller generation/evaluation batches --------------------

OOM_ATTEMPTS = 4  # the first try and up to three retries, each halving the batches below


def is_out_of_memory(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def smaller_batches(spec: RunSpec) -> tuple[RunSpec, dict] | None:
    """`spec` with the batches that only trade speed for memory halved, and what they became; None when
    all are at 1 already. They are the evaluation batch (`protocol.eval_batch_size`) and, for methods
    that generate with EchoMod, its generation batch (`generation_batch_size`) and the diffusion
    engine's denoising batch (`engine_options.batch_size`; images do not depend on it, see
    `DiffusionConfig`). The training batch is part of the experiment and is never changed."""
    from echobench.echoalign.diffusion import DiffusionConfig
    from echobench.echoalign.echomod import default_engine, is_diffusion_engine

    protocol, params = dict(spec.protocol), dict(spec.method_params)
    changed = {}
    if protocol.get("eval_batch_size", 1) > 1:
        changed["eval_batch_size"] = protocol["eval_batch_size"] = protocol["eval_batch_size"] // 2
    if params.get("generation_batch_size", 1) > 1:
        changed["generation_batch_size"] = params["generation_batch_size"] = params["generation_batch_size"] // 2
    if "engine_options" in params and is_diffusion_engine(params.get("engine") or default_engine(spec.dataset)):
        options = dict(params["engine_options"])
        current = int(options.get("batch_size", DiffusionConfig.batch_size))
        if current > 1:
            changed["engine_batch_size"] = options["batch_size"] = current // 2
            params["engine_options"] = options
    if not changed:
        return None
    return dataclasses.replace(spec, protocol=protocol, method_params=params), changed


def run_cell_retrying_oom(spec: RunSpec, ctx: RunContext, on_epoch: Callable | None = None) -> dict:
    """`run_cell`, retried with `smaller_batches` when the GPU runs out of memory (up to `OOM_ATTEMPTS`
    tries). The result lists the retries under "oom_retries"; the cell keeps its run id (the store is
    keyed by the caller's spec). Any other error, or running out of memory at the smallest batches,
    propagates with what was tried in the message."""
    import torch

    tried: list[dict] = []
    attempt_spec = spec
    while True:
        try:
            result = run_cell(attempt_spec, ctx, on_epoch=on_epoch)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            smaller = smaller_batches(attempt_spec) if len(tried) + 1 < OOM_ATTEMPTS else None
            if smaller is None:
                raise EchobenchError(f"out of GPU memory after {len(tried) + 1} tries (smaller batches tried: "
                                     f"{tried or 'none'}): {str(exc).splitlines()[0][:200]}; use a GPU with more "
                                     "memory or smaller batches in the suite") from exc
            attempt_spec, changed = smaller
            tried.append(changed)
            print(f"echobench: cell {spec.run_id} ran out of GPU memory; retrying with {changed}", file=sys.stderr)
            continue
        if tried:
            result["oom_retries"] = tried
        return result


# The official datasets' sizes, so that the projection needs no download: train / test images, side
# in px, classes. CIFAR-10N/100N relabel CIFAR's 50,000 training images.
KNOWN_DATASETS = {"cifar10": (50_000, 10_000, 32, 10), "cifar10n": (50_000, 10_000, 32, 10),
                  "cifar100": (50_000, 10_000, 32, 100), "cifar100n": (50_000, 10_000, 32, 100)}


def dataset_shape(name: str, options: dict, data_root: str | None = None) -> tuple[int, int, int, int]:
    """(n_train, n_test, image side, classes) of a dataset: the official sizes for the CIFAR family,
    else the dataset itself (the synthetic `shapes` world is built here, never downloaded)."""
    if name in KNOWN_DATASETS:
        return KNOWN_DATASETS[name]
    data = get_dataset(name, dict(options) if name == "shapes" else {**options, "download": False}, data_root)
    return len(data.train_labels), len(data.test_labels), int(data.train_images.shape[1]), data.num_classes
