"""Runs cells: one cell in-process (`run_cell`) and a whole suite with resume (`run_suite`).

`compute_cell` is one cell through the results store under the cell's lock; `run_suite` calls it
for each pending cell in this process, and the other executors (`echobench/executors.py`) call it in
worker processes or compute the cell remotely and write it through the same store.

A cell: load the dataset → noisy labels on all training labels → seeded train/validation split →
`method.fit(task)` → summary metrics, curves and timings. The runner skips cells whose result exists,
holds a per-cell lock while computing, records a failing cell's traceback and goes on.
"""

from __future__ import annotations

import dataclasses

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
    from .echomod import default_engine
    from .echomod_diffusion import DIFFUSION_ENGINES, DiffusionConfig

    protocol, params = dict(spec.protocol), dict(spec.method_params)
    changed = {}
    if protocol.get("eval_batch_size", 1) > 1:
        changed["eval_batch_size"] = protocol["eval_batch_size"] = protocol["eval_batch_size"] // 2
    if params.get("generation_batch_size", 1) > 1:
        changed["generation_batch_size"] = params["generation_batch_size"] = params["generation_batch_size"] // 2
    if "engine_options" in params and (params.get("engine") or default_engine(spec.dataset)) in DIFFUSION_ENGINES:
        options = dict(params["engine_options"])
        current = int(options.get("batch_size", DiffusionConfig.batch_size))
        if current > 1:
            changed["engine_batch_size"] = options["batch_size"] = current // 2
            params["engine_options"] = options
    if not changed:
        return None
    return dataclasses.replace(spec, protocol=protocol, method_params=params), changed


def run_cell_retrying_oom(spec: RunSpec, device: str = "cpu", data_root: str | None = None,
                          on_epoch: Callable | None = None, cache_dir: str | None = None) -> dict:
    """`run_cell`, retried with `smaller_batches` when the GPU runs out of memory (up to `OOM_ATTEMPTS`
    tries). The result lists the retries under "oom_retries"; the cell keeps its run id (the store is
    keyed by the caller's spec). Any other error, or running out of memory at the smallest batches,
    propagates with what was tried in the message."""
    import torch

    tried: list[dict] = []
    attempt_spec = spec
    while True:
        try:
            result = run_cell(attempt_spec, device, data_root, on_epoch=on_epoch, cache_dir=cache_dir)
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


@dataclass
class SuiteOutcome:
    cells: list[RunSpec]
    computed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # finished before
    busy: list[str] = field(default_factory=list)  # another runner held the lock
    failed: dict[str, str] = field(default_factory=dict)  # run id → error line
    seconds: float = 0.0
    device: str = ""  # what computed the cells: cpu, cuda, or e.g. "2 workers on cpu"

    def record(self, run_id: str, status: str, message: str | None = None) -> None:
        """File a cell under `status` (one of CELL_STATUSES), as `compute_cell` returned it."""
        if status == "computed":
            self.computed.append(run_id)
        elif status == "skipped":
            self.skipped.append(run_id)
        elif status == "busy":
            self.busy.append(run_id)
        elif status == "failed":
            self.failed[run_id] = message or "failed"
        else:
            raise ValueError(f"unknown cell status {status!r}")

    def absorb(self, other: "SuiteOutcome") -> "SuiteOutcome":
        """Add another run's cells (e.g. the selection or runtime cells) to this outcome; returns self."""
        self.cells = [*self.cells, *other.cells]
        self.computed.extend(other.computed)
        self.skipped.extend(other.skipped)
        self.busy.extend(other.busy)
        self.failed.update(other.failed)
        return self


CELL_STATUSES = ("computed", "skipped", "busy", "failed")


def cell_label(spec) -> str:
    """A cell's short description for progress lines; selection and runtime specs have their own `label`."""
    if hasattr(spec, "label"):
        return spec.label()
    return f"{spec.dataset} {spec.noise} {spec.method} seed={spec.seed}"


def error_message(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, EchobenchError) else f"{type(exc).__name__}: {exc}"


def compute_cell(store: Store, suite_name: str, spec: RunSpec, env: dict, *, device: str = "cpu",
                 data_root: str | None = None, cache_dir: str | None = None, force: bool = False,
                 on_epoch: Callable | None = None, executor: dict | None = None) -> tuple[str, str | None]:
    """Compute one training cell through the store under its lock (`compute_in_store`). Every executor
    computes its cells through this function, in whichever process it runs."""
    return compute_in_store(store, suite_name, spec, env,
                            lambda: run_cell_retrying_oom(spec, device, data_root, cache_dir=cache_dir, on_epoch=on_epoch),
                            force=force, executor=executor)


def compute_in_store(store: Store, suite_name: str, spec, env: dict, compute: Callable[[], dict], *,
                     force: bool = False, executor: dict | None = None, kind: str | None = None) -> tuple[str, str | None]:
    """Run `compute()` for the cell `spec` under its lock and file what it returns: (status, error or None).

    status: "busy" (another process holds the lock), "skipped" (a result appeared meanwhile),
    "computed" (result.json written) or "failed" (error.json written). `kind` goes into config.json
    for cells that are not training cells.
    """
    rid = spec.run_id
    with store.lock(rid) as held:
        if not held:
            return "busy", None
        if not force and store.has_result(rid):  # another runner finished it meanwhile
            return "skipped", None
        store.remove_stale_temporaries(rid)
        config = {"run_id": rid, "suite": suite_name, **({"kind": kind} if kind else {}), "spec": spec.to_dict(),
                  "environment": env}
        if executor:
            config["executor"] = executor
        store.write(rid, "config.json", config)
        store.remove(rid, "error.json")
        try:
            result = compute()
            store.write(rid, "result.json", {"run_id": rid, **result})
            return "computed", None
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # a failing cell is recorded and the suite goes on
            store.remove(rid, "result.json")
            message = error_message(exc)
            store.write(rid, "error.json", {"run_id": rid, "error": message, "traceback": traceback.format_exc()})
            return "failed", message


def split_pending(store: Store, cells: list[RunSpec], force: bool) -> tuple[list[RunSpec], list[str]]:
    """(cells to compute, run ids already finished): with `force` every cell is to compute."""
    pending = [c for c in cells if force or not store.has_result(c.run_id)]
    pending_ids = {c.run_id for c in pending}
    return pending, [c.run_id for c in cells if c.run_id not in pending_ids]


def run_suite(suite: Suite, out: str | Path, *, device: str = "cpu", seeds: list[int] | None = None,
              force: bool = False, data_root: str | None = None, progress: bool = True,
              cache_dir: str | None = None) -> SuiteOutcome:
    from tqdm.auto import tqdm

    from .environment import environment

    cells = suite.expand(seeds)
    store = Store(out)
    store.claim(suite.name)
    env = environment(device)
    outcome = SuiteOutcome(cells, device=device)
    started = time.perf_counter()
    pending, outcome.skipped = split_pending(store, cells, force)
    bar = tqdm(total=len(cells), initial=len(outcome.skipped), desc=f"suite {suite.name}", unit="cell",
               disable=not progress, file=sys.stderr, dynamic_ncols=True)
    for spec in pending:
        label = cell_label(spec)
        bar.set_postfix_str(label)
        epochs = tqdm(total=spec.protocol["epochs"], desc=label, unit="epoch", leave=False,
                      disable=not (progress and sys.stderr.isatty()), file=sys.stderr)

        def on_epoch(r, epochs=epochs):
            epochs.update(1)
            epochs.set_postfix(test=f"{r.test_acc:.3f}", val=f"{r.val_acc:.3f}")

        try:
            status, message = compute_cell(store, suite.name, spec, env, device=device, data_root=data_root,
                                           cache_dir=cache_dir, force=force, on_epoch=on_epoch)
        finally:
            epochs.close()
        outcome.record(spec.run_id, status, message)
        if status == "failed":
            bar.write(f"cell {spec.run_id} ({label}) failed: {message}", file=sys.stderr)
        bar.update(1)
    bar.close()
    outcome.seconds = time.perf_counter() - started
    return outcome
