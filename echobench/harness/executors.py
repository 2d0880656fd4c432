"""Choosing the executor of `echobench run`; each only maps "compute this cell" over the pending cells.

The runner (`echobench.harness.runner.run_suite`) expands the suite, claims the results directory
and finds the pending cells once; an executor takes those cells and yields `(spec, status, error)`
per cell as each finishes, computing every cell through `echobench.harness.cells` (under the cell's
lock, in the same results store), whatever runs it:

- `InlineExecutor`: one cell after another in this process (`--workers 1`, the default on CPU).
- `LocalWorkers` (`echobench.harness.local_workers`): `--workers N` processes on this machine, each
  pinned to one GPU (CUDA_VISIBLE_DEVICES) or, on CPU, running `--threads` torch threads.
- `RayExecutor` (`echobench.harness.ray_tasks`): one Ray task per cell on a cluster
  (`--address auto|HOST:PORT`) or on a Ray instance started for the run (`--address local`).

`--cells-per-gpu K` packs K cells onto each GPU (K local workers per GPU, or Ray tasks of 1/K GPU);
`auto` measures K from the pending cells (`echobench.harness.packing`, `AutoPackedLocal` here).

Runtime cells (Tables 6, 7) always run last and inline, with the device to themselves.
"""

from __future__ import annotations

import importlib.util
import os

from echobench.errors import EchobenchError
from echobench.harness.context import RunContext
from echobench.harness.executor import Executor, InlineExecutor
from echobench.harness.ray_tasks import RAY_INSTALL

MAX_WORKERS_PER_CORE = 4  # as --threads: more worker processes than that is a typo, and each loads torch

EXECUTORS = ("local", "ray")


def check_executor_args(executor: str, workers: int | None, address: str | None,
                        cells_per_gpu: int | str | None = None) -> int | str | None:
    """Refuse inconsistent executor options before anything is loaded or written; returns
    `cells_per_gpu` parsed (an integer, "auto" or None)."""
    from echobench.harness.packing import parse_cells_per_gpu

    cells_per_gpu = parse_cells_per_gpu(cells_per_gpu)
    if cells_per_gpu == "auto" and workers is not None:
        raise EchobenchError(f"--workers {workers} contradicts --cells-per-gpu auto, which chooses the number of "
                             f"workers (visible GPUs × the measured K): leave one of them out")
    if executor not in EXECUTORS:
        raise EchobenchError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    if workers is not None and workers < 1:
        raise EchobenchError(f"--workers must be at least 1, got {workers}")
    cores = os.cpu_count() or 1
    if workers is not None and workers > cores * MAX_WORKERS_PER_CORE:  # each is a process with torch loaded
        raise EchobenchError(f"--workers must be at most {cores * MAX_WORKERS_PER_CORE} ({cores} cores here), got {workers}")
    if executor == "local" and address is not None:
        raise EchobenchError(f"--address {address} goes with --executor ray (the local executor runs on this machine)")
    if executor == "ray":
        if workers is not None:
            raise EchobenchError("--workers goes with the local executor; with --executor ray the cluster's GPUs "
                                 "(or CPUs) decide how many cells run at once")
        if address is not None and not address.strip():
            raise EchobenchError("--address must be auto, local, HOST:PORT or ray://HOST:PORT")
        if importlib.util.find_spec("ray") is None:  # before anything is written
            raise EchobenchError(f"the ray executor needs Ray, which is not installed: {RAY_INSTALL}")
    return cells_per_gpu


def make_executor(name: str, ctx: RunContext, *, workers: int | None = None, address: str | None = None,
                  cells_per_gpu: int | str | None = None) -> Executor:
    """The executor `echobench run --executor NAME` names, its options checked before anything is written."""
    cells_per_gpu = check_executor_args(name, workers, address, cells_per_gpu)
    if name == "ray":
        from echobench.harness.ray_tasks import RayExecutor

        return RayExecutor(address or "auto", cells_per_gpu=cells_per_gpu)
    if cells_per_gpu == "auto":
        ctx.resolved_device  # an unknown or absent device is refused now, not after the probe
        return AutoPackedLocal(workers=None)
    from echobench.harness.local_workers import local_plan
    from echobench.harness.packing import Packing

    plan = local_plan(ctx, workers, cells_per_gpu)
    packing = Packing(cells_per_gpu, "given") if cells_per_gpu is not None else None
    return local_executor(plan, packing)


def local_executor(plan, packing=None) -> Executor:
    """The local executor of `plan` (`local_workers.LocalPlan`): inline for one worker, else worker processes."""
    from echobench.harness.local_workers import LocalWorkers

    if plan.workers == 1:
        return InlineExecutor(packing.provenance() if packing is not None else None)
    return LocalWorkers(plan, packing)


class AutoPackedLocal(Executor):
    """`--cells-per-gpu auto` on the local executor: K measured from the pending cells
    (`packing.choose_cells_per_gpu`), then the plan of `local_plan(ctx, None, K)`. `choose` is
    injectable (tests: stand-in memory probes)."""

    def __init__(self, workers: int | None = None, choose=None):
        self.workers = workers
        self.choose = choose
        self.inner: Executor | None = None

    def describe(self, ctx: RunContext) -> str:
        return self.inner.describe(ctx) if self.inner is not None else f"{ctx.resolved_device} (cells per GPU: auto)"

    def map(self, store, suite_name, cells, ctx):
        from echobench.harness.local_workers import local_plan
        from echobench.harness.packing import choose_cells_per_gpu

        if not cells:
            return
        choose = self.choose or choose_cells_per_gpu
        packing = choose(cells, ctx.resolved_device, data_root=ctx.data_root)
        self.inner = local_executor(local_plan(ctx, self.workers, packing.cells_per_gpu), packing)
        yield from self.inner.map(store, suite_name, cells, ctx)
