"""Cells that are not training runs: `selection` (the paper's Table 4) and `runtime` (Tables 6, 7).

`echobench run` first claims the results directory for the suite and records the command line
(`prepare_run`, `OUT/commands/`). Selection cells then go to the executor with the training cells: in
this process when it is one (`run_kind_cells`), else to the local workers or as Ray tasks
(`compute_kind_cell` is what every executor calls). Runtime cells run last, in this process, after
every other cell finished, so that nothing else shares the device while they time it. Both follow the
training runner's rules and layout, through `echobench.store.Store` (a suite of kind `train` has
neither):

    OUT/cells/<id>/config.json   {"run_id", "suite", "kind", "spec", "environment"}
    OUT/cells/<id>/result.json   present = finished (written last, atomically)
    OUT/cells/<id>/error.json    a failed attempt (retried on the next run)

A cell is computed under its advisory lock; a cell with a result is skipped unless `force`, so a run
killed at any point resumes where it stopped. What a cell computes:

- a selection cell (Table 4, §5.3 "Sensitivity Analysis"; Figures 3 and 4b): `echobench select` on
  its setting — EchoMod's pairs through the shared cache, EchoSelect's similarity S, precision and
  recall at τ, AUROC and KS test, how many samples EchoSelect and each peer keep at the fixed
  precisions (ranking by each selector's own score), the τ sweep — and the figures
  `similarity_hist.png`, `tau_sweep.png` plus `select.md` in its cell directory;
- a runtime cell (appendix D, Tables 6 and 7): `echobench bench engines` at one resolution and batch
  size, EchoMod's engines and diffusers' stock pipeline on the same inputs, and each row as a
  measurement in the schema of `echobench.runtime_report` (seconds per image on this device). On a
  GPU the `runtime` suite measures SD 1.5 + ControlNet canny (random weights: the same compute as
  the checkpoints, no download) at the paper's resolutions and batch sizes; on CPU it measures the
  `tiny` configuration, which checks the machinery in seconds but says nothing about SD 1.5's cost.

A runtime cell's id includes the device's name (`RuntimeSpec.device_name`): a results directory
measured on one GPU has no finished runtime cells for another, whose cells are measured anew.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import EchobenchError
from .store import Store, atomic_write_json
from .suite import RuntimeSpec, SelectionSpec, Suite

COMMANDS_DIR = "commands"  # OUT/commands/<UTC time>-<pid>.json: one file per `echobench run`, never rewritten
SELECTION_FILES = {"histogram": "similarity_hist.png", "tau_sweep": "tau_sweep.png", "report": "select.md"}


def device_type(device: str) -> str:
    """"cuda" for cuda and cuda:N, else "cpu": which variant of a runtime block a device runs."""
    return "cuda" if str(device).startswith("cuda") else "cpu"


def kind_cells(suite: Suite, seeds: list[int] | None, device: str) -> tuple[list[SelectionSpec], list[RuntimeSpec]]:
    """The suite's selection cells and the runtime cells of `device`'s variant (both empty for a training suite)."""
    selection = suite.expand_selection(seeds)
    runtime = suite.expand_runtime(device_type(device), device_name(device)) if "runtime" in suite.kinds else []
    return selection, runtime


def device_name(device: str) -> str:
    """The name of `device` (GPU model or CPU), or "" when this machine has no such device."""
    import torch

    from .environment import device_description

    if device_type(device) == "cuda" and not torch.cuda.is_available():
        return ""
    return device_description(device)["name"]


def kind_rows(selection: list[SelectionSpec], runtime: list[RuntimeSpec]) -> list[dict[str, Any]]:
    """One row per cell for `--dry-run`."""
    rows = [{"run_id": c.run_id, "kind": "selection", "dataset": c.dataset, "noise": c.noise, "seed": c.seed,
             "protocol": c.protocol["name"], "selectors": ["echoselect", *c.peers],
             "precisions": c.precisions, "extractor": c.params["extractor"], "engine": c.params["engine"]}
            for c in selection]
    rows += [{"run_id": c.run_id, "kind": "runtime", "device_type": c.device_type, "config": c.config,
              "device_name": c.device_name or "(not at hand)", "resolution": c.resolution, "batch_size": c.batch_size,
              "steps": c.steps,
              "rows": ["diffusers-pipeline", *c.engines]} for c in runtime]
    return rows


def record_command(out: str | Path, suite: Suite, argv: list[str] | None, device: str,
                   cells: dict[str, int]) -> Path:
    """Write OUT/commands/<UTC time>-<pid>.json: the command line, suite, device and cell counts of this run
    (what the index page of the report shows under "Configuration")."""
    now = datetime.now(timezone.utc)
    argv = list(argv) if argv is not None else sys.argv[1:]
    path = Path(out) / COMMANDS_DIR / f"{now.strftime('%Y%m%dT%H%M%S.%fZ')}-{os.getpid()}.json"
    atomic_write_json(path, {"command": "echobench " + shlex.join(argv), "argv": argv, "started": now.isoformat(),
                             "suite": suite.name, "suite_source": suite.source, "description": suite.description,
                             "kinds": suite.kinds, "device": device, "cells": cells, "cwd": os.getcwd()})
    return path


def prepare_run(suite: Suite, out: str | Path, *, device: str = "cpu", seeds: list[int] | None = None,
                argv: list[str] | None = None, train_cells: int = 0) -> tuple[list[SelectionSpec], list[RuntimeSpec]]:
    """Claim `out` for the suite and record the command: (selection cells, runtime cells)."""
    selection, runtime = kind_cells(suite, seeds, device)
    Store(out).claim(suite.name)
    record_command(out, suite, argv, device, {"train": train_cells, "selection": len(selection), "runtime": len(runtime)})
    return selection, runtime


def compute_kind_cell(store: Store, suite_name: str, spec: SelectionSpec | RuntimeSpec, env: dict, *,
                      device: str = "cpu", data_root: str | None = None, cache_dir: str | None = None,
                      force: bool = False, progress: bool = False, executor: dict | None = None) -> tuple[str, str | None]:
    """One selection or runtime cell through the store under its lock, as `runner.compute_cell` does for
    a training cell: (status, error line or None), status one of computed, skipped, busy, failed."""
    from .runner import compute_in_store

    def compute() -> dict[str, Any]:
        if isinstance(spec, SelectionSpec):
            result = run_selection_cell(spec, store.cell_dir(spec.run_id), device=device, data_root=data_root,
                                        cache_dir=cache_dir, progress=progress)
        else:
            result = run_runtime_cell(spec, device=device, env=env)
        return {"kind": spec.kind, **result}

    return compute_in_store(store, suite_name, spec, env, compute, force=force, executor=executor, kind=spec.kind)


def run_kind_cells(cells: list, suite_name: str, out: str | Path, *, device: str = "cpu", force: bool = False,
                   data_root: str | None = None, cache_dir: str | None = None, progress: bool = True):
    """Compute selection and runtime `cells` one after another in this process (`compute_kind_cell`);
    returns a `runner.SuiteOutcome`."""
    from tqdm.auto import tqdm

    from .environment import environment
    from .runner import SuiteOutcome

    store = Store(out)
    outcome = SuiteOutcome(list(cells), device=device)
    if not outcome.cells:
        return outcome
    env = environment(device)
    started = time.perf_counter()
    pending = [c for c in outcome.cells if force or not store.has_result(c.run_id)]
    pending_ids = {c.run_id for c in pending}
    outcome.skipped = [c.run_id for c in outcome.cells if c.run_id not in pending_ids]
    kinds = "/".join(dict.fromkeys(c.kind for c in outcome.cells))
    bar = tqdm(total=len(outcome.cells), initial=len(outcome.skipped), desc=f"suite {suite_name} ({kinds})",
               unit="cell", disable=not progress, file=sys.stderr, dynamic_ncols=True)
    for spec in pending:
        bar.set_postfix_str(spec.label())
        status, message = compute_kind_cell(store, suite_name, spec, env, device=device, data_root=data_root,
                                            cache_dir=cache_dir, force=force, progress=progress)
        outcome.record(spec.run_id, status, message)
        if status == "failed":
            bar.write(f"cell {spec.run_id} ({spec.label()}) failed: {message}", file=sys.stderr)
        bar.update(1)
    bar.close()
    outcome.seconds = time.perf_counter() - started
    return outcome


def selection_files(cell_dir: Path) -> dict[str, bytes]:
    """The figure and report files a selection cell wrote into `cell_dir` (for executors whose tasks
    compute in a scratch directory and hand the files to the driver)."""
    return {name: (Path(cell_dir) / name).read_bytes() for name in SELECTION_FILES.values()
            if (Path(cell_dir) / name).exists()}


def run_selection_cell(spec: SelectionSpec, cell_dir: Path, *, device: str = "cpu", data_root: str | None = None,
                       cache_dir: str | None = None, progress: bool = True) -> dict[str, Any]:
    """One Table 4 cell: `select_report` on the cell's setting, figures and select.md into `cell_dir`."""
    from .echoalign import EchoAlignParams
    from .selection_report import select_report, setting_task

    started = time.perf_counter()
    task, clean = setting_task(spec.dataset, spec.dataset_options, spec.noise, spec.seed, protocol=spec.protocol,
                               device=device, data_root=data_root, cache_dir=cache_dir)
    doc = select_report(task, clean, EchoAlignParams(**spec.params), peers=list(spec.peers),
                        peer_params=spec.peers, precisions=tuple(spec.precisions), out_dir=cell_dir,
                        progress=progress)
    doc["files"] = dict(SELECTION_FILES)  # relative to the cell directory
    doc["timings"] = {"total_s": round(time.perf_counter() - started, 3)}
    return doc


def run_runtime_cell(spec: RuntimeSpec, *, device: str = "cpu", env: dict | None = None) -> dict[str, Any]:
    """One Table 6/7 cell: `bench_engines` at the cell's resolution and batch size, and each measured row as a
    runtime measurement (`echobench.runtime_report` schema, plus the bench's own fields)."""
    from .bench_engines import REFERENCE, bench_engines, failed_rows

    if device_type(device) != spec.device_type:
        raise EchobenchError(f"runtime cell for {spec.device_type} cannot run on {device}")
    started = time.perf_counter()
    doc = bench_engines(config=spec.config, random_init=spec.random_init, engines=tuple(spec.engines),
                        batch_sizes=(spec.batch_size,), resolution=spec.resolution, steps=spec.steps,
                        repeats=spec.repeats, device=device, seed=spec.seed)
    errors = failed_rows(doc)
    if errors:  # an engine that crashed is a failed cell (retried); out of memory is a result ("unsupported")
        raise EchobenchError("bench engines: " + "; ".join(errors))
    env = env or doc.get("environment", {})
    device_name = env.get("device", {}).get("name") or device
    cfg = doc["guidance_scale"] > 1
    measurements, unsupported = [], {}
    for name, per_batch in doc["rows"].items():
        row = per_batch.get(str(spec.batch_size), per_batch)
        if "seconds_per_image" not in row:
            unsupported[name] = row.get("unsupported") or row.get("unavailable") or "not measured"
            continue
        measurements.append({
            "device": device_name, "gpu": None, "resolution": doc["resolution"], "batch_size": spec.batch_size,
            "steps": spec.steps, "cfg": cfg, "seconds_per_image": row["seconds_per_image"], "engine": name,
            "config": spec.config, "random_init": spec.random_init, "reference": name == REFERENCE,
            "images_per_s": row["images_per_s"], "seconds_per_step": row["seconds_per_step"],
            "peak_mib": row["peak_mib"], "peak_kind": row["peak_kind"],
            "parity_max_abs": row.get("parity_max_abs"),
            "speedup_vs_reference": doc["speedup_vs_reference"].get(name, {}).get(str(spec.batch_size)),
        })
    return {"bench": {k: v for k, v in doc.items() if k != "environment"}, "measurements": measurements,
            "unsupported": unsupported, "timings": {"total_s": round(time.perf_counter() - started, 3)}}
