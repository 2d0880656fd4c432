"""Runs cells: one cell in-process (`run_cell`) and a whole suite with resume (`run_suite`).

A cell: load the dataset → noisy labels on all training labels → seeded train/validation split →
`method.fit(task)` → summary metrics, curves and timings. The runner skips cells whose result exists,
holds a per-cell lock while computing, records a failing cell's traceback and goes on.
"""

from __future__ import annotations

import sys
import time
import traceback
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np

from .datasets import Dataset, load_dataset
from .errors import EchobenchError
from .methods import METHODS
from .modcache import cache_root
from .noise import NoiseSpec, NoisyLabels, realized_rate, split_train_val
from .protocols import Protocol
from .seeding import numpy_rng
from .store import Store
from .suite import RunSpec, Suite


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


def build_task(spec: RunSpec, dataset: Dataset, noisy: NoisyLabels, device: str, on_epoch=None,
               data_root: str | None = None, cache_dir: str | None = None):
    import torch

    from .trainer import DeviceSplit, History, Normalizer, Task, channel_stats

    protocol = Protocol(**{**spec.protocol, "milestones": tuple(spec.protocol["milestones"])})
    train_idx, val_idx = split_train_val(len(noisy.labels), numpy_rng(spec.seed, "split"), protocol.val_fraction)
    dev = torch.device(device)
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
        cache_dir=str(cache_root(cache_dir, data_root)),
    ), (train_idx, val_idx)


def run_cell(spec: RunSpec, device: str = "cpu", data_root: str | None = None,
             on_epoch: Callable | None = None, cache_dir: str | None = None) -> dict:
    """Run one cell in this process and return its result (metrics, noise facts, curves, timings)."""
    started = time.perf_counter()
    dataset = get_dataset(spec.dataset, spec.dataset_options, data_root)
    noisy = make_noisy_labels(spec, dataset)
    task, (train_idx, val_idx) = build_task(spec, dataset, noisy, device, on_epoch, data_root, cache_dir)
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


@dataclass
class SuiteOutcome:
    cells: list[RunSpec]
    computed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # finished before
    busy: list[str] = field(default_factory=list)  # another runner held the lock
    failed: dict[str, str] = field(default_factory=dict)  # run id → error line
    seconds: float = 0.0


def run_suite(suite: Suite, out: str | Path, *, device: str = "cpu", seeds: list[int] | None = None,
              force: bool = False, data_root: str | None = None, progress: bool = True,
              cache_dir: str | None = None) -> SuiteOutcome:
    from tqdm.auto import tqdm

    from .environment import environment

    cells = suite.expand(seeds)
    store = Store(out)
    store.claim(suite.name)
    env = environment(device)
    outcome = SuiteOutcome(cells)
    started = time.perf_counter()
    pending = [c for c in cells if force or not store.has_result(c.run_id)]
    pending_ids = {c.run_id for c in pending}
    outcome.skipped = [c.run_id for c in cells if c.run_id not in pending_ids]
    bar = tqdm(total=len(cells), initial=len(outcome.skipped), desc=f"suite {suite.name}", unit="cell",
               disable=not progress, file=sys.stderr, dynamic_ncols=True)
    for spec in pending:
        rid = spec.run_id
        label = f"{spec.dataset} {spec.noise} {spec.method} seed={spec.seed}"
        bar.set_postfix_str(label)
        with store.lock(rid) as held:
            if not held:
                outcome.busy.append(rid)
                bar.update(1)
                continue
            if not force and store.has_result(rid):  # another runner finished it meanwhile
                outcome.skipped.append(rid)
                bar.update(1)
                continue
            store.remove_stale_temporaries(rid)
            store.write(rid, "config.json", {"run_id": rid, "suite": suite.name, "spec": spec.to_dict(), "environment": env})
            store.remove(rid, "error.json")
            epochs = tqdm(total=spec.protocol["epochs"], desc=label, unit="epoch", leave=False,
                          disable=not (progress and sys.stderr.isatty()), file=sys.stderr)
            try:
                result = run_cell(spec, device, data_root, cache_dir=cache_dir, on_epoch=lambda r: (
                    epochs.update(1), epochs.set_postfix(test=f"{r.test_acc:.3f}", val=f"{r.val_acc:.3f}")))
                store.write(rid, "result.json", {"run_id": rid, **result})
                outcome.computed.append(rid)
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:  # a failing cell is recorded and the suite goes on
                store.remove(rid, "result.json")
                message = str(exc) if isinstance(exc, EchobenchError) else f"{type(exc).__name__}: {exc}"
                store.write(rid, "error.json", {"run_id": rid, "error": message, "traceback": traceback.format_exc()})
                outcome.failed[rid] = message
                bar.write(f"cell {rid} ({label}) failed: {message}", file=sys.stderr)
            finally:
                epochs.close()
        bar.update(1)
    bar.close()
    outcome.seconds = time.perf_counter() - started
    return outcome
