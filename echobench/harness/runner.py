"""`echobench run`'s one path: expand the suite, claim the results directory, find the pending cells
once, and hand them to an executor, which only maps "compute this cell" over them.

    suite ─expand─▶ selection + training cells ─▶ executor (inline | local workers | Ray) ─┐
          └───────▶ runtime cells ─────────────▶ inline, last and alone ──────────────────┴▶ SuiteOutcome

Every cell, whatever its kind and whichever process computes it, goes through
`echobench.harness.cells.compute_cell` (or, on Ray, the same steps split around the remote call):
under its lock, into the one results store, skipped when it has a (valid) result unless the context
says `force`. A run killed at any point resumes where it stopped.

Plugins. The suite's `include:` files join the context's (`--include`) so that every executor's
processes import them. A finished cell whose plugin changed since it was computed (another source
digest or version in its config.json than now: `plugin_changes`) is kept, not recomputed, and listed
in the outcome for `run` to say so; `--force` recomputes it.

Before any cell is computed, the directory is claimed (`Store.claim`: refused if it belongs to another
suite or to the user; the suite's experiments recorded, so that a report can tell the cells an edited
suite no longer contains) and its layout checked (`Store.check_layout`: folders where folders belong,
writable), so a read-only or cluttered `--out` costs one line, not a computation.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from echobench.files import atomic_write_json
from echobench.harness.context import RunContext
from echobench.harness.echomod_shards import check_cache_writable
from echobench.harness.executor import Executor, InlineExecutor
from echobench.harness.store import COMMANDS_DIR, Store, experiment_key, writing
from echobench.harness.suite import CellSpec, RuntimeSpec, SelectionSpec, Suite



@dataclass
class SuiteOutcome:
    cells: list[CellSpec]
    computed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # finished before
    busy: list[str] = field(default_factory=list)  # another runner held the lock
    failed: dict[str, str] = field(default_factory=dict)  # run id → error line
    # finished cells kept although a plugin they use changed since: "KIND NAME" → {"source", "cells",
    # "was": [digest/version records], "now": record}; `--force` recomputes them (`plugin_changes`)
    plugins_changed: dict[str, dict] = field(default_factory=dict)
    seconds: float = 0.0
    device: str = ""  # what computed the cells: cpu, cuda, or e.g. "2 workers on cpu"

    def record(self, run_id: str, status: str, message: str | None = None) -> None:
        """File a cell under `status` (one of `cells.CELL_STATUSES`)."""
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


def split_pending(store: Store, cells: list[CellSpec], force: bool) -> tuple[list[CellSpec], list[str]]:
    """(cells to compute, run ids already finished): with `force` every cell is to compute."""
    pending = [c for c in cells if force or not store.has_result(c.run_id)]
    pending_ids = {c.run_id for c in pending}
    return pending, [c.run_id for c in cells if c.run_id not in pending_ids]


def plan_cells(suite: Suite, seeds: list[int] | None, device: str) -> tuple[list[SelectionSpec], list[CellSpec], list[RuntimeSpec]]:
    """(selection, training, runtime) cells of the suite; the runtime cells of `device`'s variant."""
    from echobench.harness.runtime_cell import device_name, device_type

    runtime = suite.expand_runtime(device_type(device), device_name(device)) if "runtime" in suite.kinds else []
    return suite.expand_selection(seeds), suite.expand(seeds), runtime


def suite_experiments(suite: Suite, cells: list[CellSpec]) -> list[str]:
    """The experiments (`store.experiment_key`: cells without their seed) the suite contains: those of
    `cells` and of every device variant of its runtime cells, whichever device this run uses."""
    keys = [experiment_key(c.kind, c.to_dict()) for c in cells]
    for device_type in sorted(suite.runtime_variants()):
        keys += [experiment_key(c.kind, c.to_dict()) for c in suite.expand_runtime(device_type)]
    return keys


def record_command(out: str | Path, suite: Suite, argv: list[str] | None, device: str,
                   cells: dict[str, int]) -> Path:
    """Write OUT/commands/<UTC time>-<pid>.json: the command line, suite, device and cell counts of this run
    (what the index page of the report shows under "Configuration")."""
    now = datetime.now(timezone.utc)
    argv = list(argv) if argv is not None else sys.argv[1:]
    path = Path(out) / COMMANDS_DIR / f"{now.strftime('%Y%m%dT%H%M%S.%fZ')}-{os.getpid()}.json"
    with writing(f"to {out}"):
            atomic_write_json(path, {"command": "echobench " + shlex.join(argv), "argv": argv, "started": now.isoformat(),
                                 "suite": suite.name, "suite_source": suite.source, "description": suite.description,
                                 "kinds": suite.kinds, "device": device, "cells": cells, "cwd": os.getcwd()})
    return path


def run_suite(suite: Suite, out: str | Path, ctx: RunContext | None = None, executor: Executor | None = None, *,
              seeds: list[int] | None = None, argv: list[str] | None = None) -> SuiteOutcome:
    """Run every pending cell of `suite` into `out`: selection and training cells on `executor` (default:
    in this process), then the runtime cells here, with the device to themselves."""
    from tqdm.auto import tqdm

    ctx = ctx or RunContext.resolve(device="cpu")
    ctx = ctx.with_includes(suite.includes)  # the suite's plugins reach every executor's processes
    ctx.load_plugins()
    executor = executor or InlineExecutor()
    ctx.apply_threads()  # for the cells computed in this process (worker processes and Ray tasks set their own)
    device = ctx.resolved_device
    selection, train, runtime = plan_cells(suite, seeds, device)
    store = Store(out)
    store.claim(suite.name, suite_experiments(suite, [*selection, *train]))
    store.check_layout([c.run_id for c in [*selection, *train, *runtime]])
    check_cache_writable(split_pending(store, [*selection, *train], ctx.force)[0], ctx)
    record_command(out, suite, argv, device, {"train": len(train), "selection": len(selection), "runtime": len(runtime)})
    outcome = SuiteOutcome([*selection, *train, *runtime], device=executor.describe(ctx))
    started = time.perf_counter()
    bar = tqdm(total=len(outcome.cells), desc=f"suite {suite.name}", unit="cell", disable=not ctx.progress,
               file=sys.stderr, dynamic_ncols=True)
    try:
        # selection cells first: each is as long as several training cells
        for cells, runs_them in (([*selection, *train], executor), (runtime, InlineExecutor())):
            pending, skipped = split_pending(store, cells, ctx.force)
            outcome.skipped.extend(skipped)
            skipped_ids = set(skipped)
            plugin_changes(store, [c for c in cells if c.run_id in skipped_ids], outcome.plugins_changed)
            bar.update(len(skipped))
            for spec, status, message in runs_them.map(store, suite.name, pending, ctx):
                outcome.record(spec.run_id, status, message)
                if status == "failed":
                    bar.write(f"cell {spec.run_id} ({spec.label()}) failed: {message}", file=sys.stderr)
                bar.set_postfix_str(spec.label())
                bar.update(1)
    finally:
        bar.close()
    outcome.device = executor.describe(ctx)
    outcome.seconds = time.perf_counter() - started
    return outcome


def plugin_changes(store: Store, finished: list[CellSpec], into: dict[str, dict]) -> dict[str, dict]:
    """Record in `into` the plugins whose source digest or version differs from the one a finished
    cell was computed with (its config.json's environment): such a cell is kept (provenance is not
    identity; `run` says so, `--force` recomputes it, `report` marks rows that mix versions)."""
    from echobench.harness.cells import plugin_provenance

    for spec in finished:
        now = plugin_provenance(spec)
        if not now:
            continue
        config = store.load_cell(spec.run_id).config or {}
        env = config.get("environment") if isinstance(config.get("environment"), dict) else {}
        was = env.get("plugins") if isinstance(env.get("plugins"), dict) else {}
        for key, record in now.items():
            old = was.get(key) if isinstance(was.get(key), dict) else {}
            if (old.get("digest"), old.get("version")) == (record["digest"], record["version"]):
                continue
            change = into.setdefault(key, {"source": record["source"], "now": record, "was": [], "cells": []})
            change["cells"].append(spec.run_id)
            seen = {"digest": old.get("digest"), "version": old.get("version")}
            if seen not in change["was"]:
                change["was"].append(seen)
    return into


def dry_run_rows(selection: list[SelectionSpec], train: list[CellSpec], runtime: list[RuntimeSpec]) -> list[dict[str, Any]]:
    """One row per cell for `--dry-run`."""
    rows = [{"run_id": c.run_id, "kind": "train", "dataset": c.dataset, "noise": c.noise, "method": c.method,
             "seed": c.seed, "protocol": c.protocol["name"]} for c in train]
    rows += [{"run_id": c.run_id, "kind": "selection", "dataset": c.dataset, "noise": c.noise, "seed": c.seed,
              "protocol": c.protocol["name"], "selectors": ["echoselect", *c.peers],
              "precisions": c.precisions, "extractor": c.params["extractor"], "engine": c.params["engine"]}
             for c in selection]
    rows += [{"run_id": c.run_id, "kind": "runtime", "device_type": c.device_type, "config": c.config,
              "device_name": c.device_name or "(not at hand)", "resolution": c.resolution, "batch_size": c.batch_size,
              "steps": c.steps, "rows": ["diffusers-pipeline", *c.engines]} for c in runtime]
    return rows
