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


def check_executor_args(executor: str, workers: int | None, address: str | None) -> None:
    """Refuse inconsistent executor options before anything is loaded or written."""
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


def make_executor(name: str, ctx: RunContext, *, workers: int | None = None, address: str | None = None) -> Executor:
    """The executor `echobench run --executor NAME` names, its options checked before anything is written."""
    check_executor_args(name, workers, address)
    if name == "ray":
        from echobench.harness.ray_tasks import RayExecutor

        return RayExecutor(address or "auto")
    from echobench.harness.local_workers import LocalWorkers, local_plan

    plan = local_plan(ctx, workers)
    return InlineExecutor() if plan.workers == 1 else LocalWorkers(plan)
