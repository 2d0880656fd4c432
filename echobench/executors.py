"""Executors of `echobench run`: where and how many cells compute at once.

- ``local`` (the default): `--workers N` processes on this machine. With N = 1 the cells run one
  after another in the calling process (`runner.run_suite`). With N > 1 each worker is a separate
  process (`echobench/local_pool.py`) pinned to one GPU (CUDA_VISIBLE_DEVICES is set in its
  environment before it starts, so before torch initialises CUDA) or, on CPU, running `--threads`
  torch threads. The default N is the number of visible GPUs, or 1 on CPU.
- ``ray``: every cell is a Ray task (`echobench/ray_executor.py`) on a cluster the user started
  (`--address auto` or HOST:PORT) or on a Ray instance started for the run (`--address local`).

Selection cells (the paper's Table 4, `echobench.kinds`) are handed to the executor with the training
cells: in the calling process with one worker, to the workers or as Ray tasks otherwise.

Whatever the executor, every cell is computed under its lock in the same results store
(`echobench/store.py`): finished cells are skipped, a cell is never computed by two processes at
once, and a re-run after a crash or a SIGKILL computes exactly the cells that have no result.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import EchobenchError

EXECUTORS = ("local", "ray")
RAY_INSTALL = "pip install 'echobench[ray]'"


def check_executor_args(executor: str, workers: int | None, address: str | None) -> None:
    """Refuse inconsistent executor options before anything is loaded or written."""
    if executor not in EXECUTORS:
        raise EchobenchError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    if workers is not None and workers < 1:
        raise EchobenchError(f"--workers must be at least 1, got {workers}")
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


def import_ray():
    """The `ray` module, or an EchobenchError that says how to install it."""
    try:
        import ray
    except ImportError:
        raise EchobenchError(f"the ray executor needs Ray, which is not installed: {RAY_INSTALL}") from None
    return ray


def visible_gpus() -> list[str]:
    """The CUDA devices this process may use, as CUDA_VISIBLE_DEVICES entries (indices or UUIDs).

    A CUDA_VISIBLE_DEVICES set by the user is honoured: worker k gets its k-th entry, not GPU k.
    """
    import torch

    if not torch.cuda.is_available():
        return []
    count = torch.cuda.device_count()
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None and listed.strip():
        entries = [e.strip() for e in listed.split(",") if e.strip()]
        return entries[:count]
    return [str(i) for i in range(count)]


@dataclass(frozen=True)
class LocalPlan:
    """How the local executor runs: `workers` processes; per worker a GPU (or None) and torch threads."""

    workers: int
    device: str  # the device inside each worker: cpu, cuda or cuda:N (in-process only)
    gpus: tuple[str | None, ...]  # CUDA_VISIBLE_DEVICES of each worker (None: not pinned, CPU)
    threads: int | None  # torch threads of each worker (None: torch's default, in-process only)

    def describe(self) -> str:
        if self.workers == 1:
            return self.device
        if self.gpus[0] is not None:
            return f"{self.workers} workers on GPUs {','.join(dict.fromkeys(g for g in self.gpus if g is not None))}"
        return f"{self.workers} workers on cpu, {self.threads} thread(s) each"


def local_plan(device: str = "auto", workers: int | None = None, threads: int | None = None) -> LocalPlan:
    """Resolve `--device`, `--workers` and `--threads` for the local executor.

    GPU workers are pinned round-robin over the visible GPUs (more workers than GPUs share them).
    CPU workers get `threads` torch threads each, by default the machine's cores divided among them.
    """
    from .environment import resolve_device

    resolved = resolve_device(device)
    gpus = visible_gpus() if resolved.startswith("cuda") else []
    if workers is None:
        workers = len(gpus) if resolved == "cuda" and gpus else 1
    if workers == 1:
        return LocalPlan(1, resolved, (None,), threads)
    if resolved.startswith("cuda:"):
        raise EchobenchError(f"--device {resolved} names one GPU, but --workers {workers} pins each worker to its "
                             f"own GPU: use --device cuda (set CUDA_VISIBLE_DEVICES to choose the GPUs)")
    if resolved == "cuda":
        return LocalPlan(workers, "cuda", tuple(gpus[k % len(gpus)] for k in range(workers)), threads)
    per_worker = threads if threads is not None else max(1, (os.cpu_count() or 1) // workers)
    return LocalPlan(workers, "cpu", (None,) * workers, per_worker)


def run_suite_with(executor: str, suite, out: str | Path, *, device: str = "auto", workers: int | None = None,
                   address: str | None = None, threads: int | None = None, seeds: list[int] | None = None,
                   force: bool = False, data_root: str | None = None, cache_dir: str | None = None,
                   progress: bool = True, selection=()):
    """Run `suite`'s training cells and the `selection` cells (`suite.SelectionSpec`) into `out` with the
    named executor; returns a `runner.SuiteOutcome` of all of them."""
    check_executor_args(executor, workers, address)
    if threads is not None and threads < 1:
        raise EchobenchError(f"--threads must be at least 1, got {threads}")
    if executor == "ray":
        ray = import_ray()
        from .ray_executor import run_suite_ray

        return run_suite_ray(ray, suite, out, address=address or "auto", device=device, threads=threads,
                             seeds=seeds, force=force, data_root=data_root, cache_dir=cache_dir, progress=progress,
                             selection=selection)
    plan = local_plan(device, workers, threads)
    if plan.workers == 1:
        from .runner import run_suite

        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        from .kinds import run_kind_cells
        from .store import Store

        Store(out).claim(suite.name)  # before any cell is written (claiming is idempotent)
        selected = run_kind_cells(list(selection), suite.name, out, device=plan.device, force=force,
                                  data_root=data_root, cache_dir=cache_dir, progress=progress)
        return run_suite(suite, out, device=plan.device, seeds=seeds, force=force, data_root=data_root,
                         progress=progress, cache_dir=cache_dir).absorb(selected)
    from .local_pool import run_suite_pool

    return run_suite_pool(suite, out, plan, seeds=seeds, force=force, data_root=data_root, cache_dir=cache_dir,
                          progress=progress, selection=selection)
