"""Computing one cell, of any kind, and filing it in the results store.

`compute` is what a cell is: a training cell (`train_cell`), a selection cell (`selection_cell`,
the paper's Table 4) or a runtime cell (`runtime_cell`, Tables 6 and 7), dispatched on the spec's
kind. `compute_in_store` runs a computation under the cell's lock and files its result or error;
`compute_cell` is the two together, which is what every executor does with a cell in whichever
process runs it (the Ray driver files what its tasks return with `begin_cell` / `file_outcome`,
the same steps split around the remote call).

Under the lock a damaged cell (`Store.load_cell`) is first moved aside; `config.json` is written before
computing only when the cell has no result, and the result is filed with its configuration in one
rename (`Store.commit_result`), so a `--force` that fails or is killed leaves the old result and its
configuration as they were. A file system that refuses the result (full, read-only) stops the run
with one line (`EchobenchError`); the cell keeps its previous files.
"""

from __future__ import annotations

import contextlib
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator

from echobench.errors import EchobenchError
from echobench.harness.context import RunContext
from echobench.harness.store import SCHEMA, Store
from echobench.harness.suite import CellSpec

CELL_STATUSES = ("computed", "skipped", "busy", "failed")


def compute(spec: CellSpec, ctx: RunContext, cell_dir: Path, on_epoch: Callable | None = None) -> dict[str, Any]:
    """The result of one cell, computed in this process (`cell_dir` receives a selection cell's figures)."""
    if spec.kind == "selection":
        from echobench.harness.selection_cell import run_selection_cell

        return {"kind": spec.kind, **run_selection_cell(spec, cell_dir, ctx)}
    if spec.kind == "runtime":
        from echobench.harness.runtime_cell import run_runtime_cell

        return {"kind": spec.kind, **run_runtime_cell(spec, ctx)}
    from echobench.harness.train_cell import run_cell_retrying_oom

    return run_cell_retrying_oom(spec, ctx, on_epoch=on_epoch)


def error_message(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, EchobenchError) else f"{type(exc).__name__}: {exc}"


def names_used(spec: CellSpec) -> list[tuple[str, str]]:
    """The registered (kind, name) pairs a cell uses: its method, dataset, noise kind, selectors, engines."""
    d = spec.to_dict()
    used = [("dataset", d["dataset"])] if "dataset" in d else []
    if "noise" in d:
        used.append(("noise", str(d["noise"]).partition(":")[0]))
    if spec.kind == "train":
        used.append(("method", d["method"]))
        engine = (d.get("method_params") or {}).get("engine")
    elif spec.kind == "selection":
        used += [("selector", name) for name in d.get("peers") or {}]
        engine = (d.get("params") or {}).get("engine")
    else:
        engine = None
        used += [("engine", str(row).partition("[")[0]) for row in d.get("engines") or []]
    if isinstance(engine, str) and engine:
        used.append(("engine", engine))
    return used


def plugin_provenance(spec: CellSpec) -> dict[str, dict]:
    """"KIND NAME" → {source, version, digest} of each plugin whose name the cell uses (empty for a cell
    of echobench's own names). Recorded in config.json's environment: provenance, not identity."""
    from echobench.data import DATASETS
    from echobench.data.noise import NOISES
    from echobench.engines.registry import ENGINES
    from echobench.training.method import METHODS
    from echobench.training.selectors import SELECTORS

    registries = {"method": METHODS, "dataset": DATASETS, "noise": NOISES, "selector": SELECTORS, "engine": ENGINES}
    out = {}
    for kind, name in names_used(spec):
        registry = registries[kind]
        source = registry.source(name) if name in registry or ":" in name else None
        if source is None and kind == "method" and ":" in name:
            registry.get(name)  # a `module:Class` method: imported here to know its files
            source = registry.source(name)
        if source is not None:
            out[f"{kind} {name}"] = source.provenance(registry.get(name))
    return out


def cell_environment(env: dict, spec: CellSpec) -> dict:
    """`env` (`echobench.environment.environment`) with the cell's plugins (`plugin_provenance`), if any."""
    plugins = plugin_provenance(spec)
    return {**env, "plugins": plugins} if plugins else env


def cell_config(spec: CellSpec, suite_name: str, env: dict, executor: dict | None = None) -> dict[str, Any]:
    """config.json of a cell: its spec and what ran it (training cells carry no "kind": kind train), with
    the plugins it uses among the environment (`cell_environment`)."""
    config = {"schema": SCHEMA, "run_id": spec.run_id, "suite": suite_name, **({"kind": spec.kind} if spec.kind != "train" else {}),
              "spec": spec.to_dict(), "environment": cell_environment(env, spec)}
    if executor:
        config["executor"] = executor
    return config


@contextlib.contextmanager
def begin_cell(store: Store, spec: CellSpec, force: bool) -> Iterator[str | None]:
    """Hold the cell's lock; yields None when the cell is to compute, else its status ("busy": another
    process holds it; "skipped": a result appeared meanwhile)."""
    rid = spec.run_id
    with store.lock(rid) as held:
        if not held:
            yield "busy"
            return
        store.set_aside_if_damaged(rid)  # kept under cells/<id>/damaged-<time>/, computed again below
        if not force and store.has_result(rid):  # another runner finished it meanwhile
            yield "skipped"
            return
        store.remove_stale_temporaries(rid)
        yield None


def prepare_cell(store: Store, spec: CellSpec, config: dict) -> None:
    """Before computing (lock held): config.json says what is being computed, unless an older result is
    kept until the new one replaces it; a previous attempt's error.json goes."""
    if not store.has_result(spec.run_id):
        store.write(spec.run_id, "config.json", config)
    store.remove(spec.run_id, "error.json")


def file_outcome(store: Store, spec: CellSpec, config: dict, result: dict | None = None, error: str | None = None,
                 trace: str = "", files: dict[str, bytes] | None = None) -> tuple[str, str | None]:
    """File a computed cell's result with its config (or its error) through the store, under its held lock."""
    if error is not None:
        store.file_failure(spec.run_id, config, error, trace)  # an older result and its config stay
        return "failed", error
    store.commit_result(spec.run_id, config, result, files)
    return "computed", None


def compute_in_store(store: Store, suite_name: str, spec: CellSpec, env: dict, compute_fn: Callable[[], dict], *,
                     force: bool = False, executor: dict | None = None) -> tuple[str, str | None]:
    """Run `compute_fn()` for the cell `spec` under its lock and file what it returns: (status, error or None),
    status one of `CELL_STATUSES`."""
    with begin_cell(store, spec, force) as status:
        if status is not None:
            return status, None
        config = cell_config(spec, suite_name, env, executor)
        prepare_cell(store, spec, config)
        try:
            result = compute_fn()
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # a failing cell is recorded and the suite goes on
            return file_outcome(store, spec, config, error=error_message(exc), trace=traceback.format_exc())
        return file_outcome(store, spec, config, result=result)


def compute_cell(store: Store, suite_name: str, spec: CellSpec, env: dict, ctx: RunContext, *,
                 on_epoch: Callable | None = None, executor: dict | None = None) -> tuple[str, str | None]:
    """Compute one cell of any kind through the store under its lock: what every executor does with a cell."""
    return compute_in_store(store, suite_name, spec, env,
                            lambda: compute(spec, ctx, store.cell_dir(spec.run_id), on_epoch=on_epoch),
                            force=ctx.force, executor=executor)
