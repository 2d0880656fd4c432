"""The local executor with `--workers N` > 1: N worker processes on this machine, one cell each at a time.

The driver (`LocalWorkers.map`) starts N copies of `python -m echobench.harness.local_workers`, each with its own
environment: CUDA_VISIBLE_DEVICES set to one GPU (so the worker's `cuda` is that GPU: the variable is
read when torch initialises CUDA, and the worker is a fresh process, so it is set before) or, on CPU,
OMP_NUM_THREADS and torch's thread count set to `--threads`. Each worker imports the run context's
plugin files (`--include`, a suite's `include:`) before its first cell. The driver hands each idle worker the
next job over its stdin (one JSON line) and reads one JSON line back per job on the worker's stdout.

EchoMod first, as on Ray: when the pending cells need EchoMod's pairs, the first jobs are the
generation shards of `echobench.harness.echomod_shards` (per generator, shard i of N = the workers),
and no cell is handed out before the last of them finished. So each pair is generated once, the
generation is split evenly over the workers, and the cells only read the cache (two EchoAlign cells
side by side would otherwise both generate the pairs their settings share). A shard that fails is
reported and the run goes on: its cells generate their missing pairs themselves, and fail with the
generator's error if it persists.

Then the cells: the worker computes each with `echobench.harness.cells.compute_cell`, i.e. under the
cell's lock in the same results store as every other executor, so a second runner on the same
directory skips the cells these workers hold.

Failures:
- a worker that dies (SIGKILL, out of memory) loses only its current cell: the kernel drops its
  `flock` when it dies, the driver records the cell as failed (error.json: which worker, which
  signal; a re-run computes it) and the other workers go on with the rest;
- a driver that dies takes its workers with it (Linux: PR_SET_PDEATHSIG; elsewhere a watchdog
  thread notices the new parent within a second), so a re-run never races a leftover worker;
- Ctrl-C stops the workers and the driver; finished cells are kept;
- a results store that refuses a write (full disk, read-only) in a worker stops the run with that
  worker's one-line message (the cell keeps its previous files).
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path

from typing import Any, Iterator

from echobench.errors import EchobenchError
from echobench.harness.context import RunContext
from echobench.harness.executor import Executor, Outcome
from echobench.harness.store import Store
from echobench.harness.suite import CellSpec, RunSpec, SelectionSpec
from echobench.progress import write_line


@dataclass(frozen=True)
class LocalPlan:
    """How the local executor runs: `workers` processes; per worker a GPU (or None) and torch threads."""

    workers: int
    device: str  # the device inside each worker: cpu, cuda or cuda:N (in-process only)
    gpus: tuple[str | None, ...]  # CUDA_VISIBLE_DEVICES of each worker (None: not pinned, CPU)
    threads: int | None  # torch threads of each worker (None: torch's default, in-process only)
    cells_per_gpu: int | None = None  # --cells-per-gpu (None: not given); provenance, never identity

    def describe(self) -> str:
        if self.workers == 1:
            return self.device
        packed = f", {self.cells_per_gpu} cells per GPU" if self.cells_per_gpu else ""
        if self.gpus[0] is not None:
            return f"{self.workers} workers on GPUs {','.join(dict.fromkeys(g for g in self.gpus if g is not None))}{packed}"
        return f"{self.workers} workers on cpu, {self.threads} thread(s) each"


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


def default_cpu_workers(threads: int | None) -> int:
    """`--workers` left out on CPU: one worker per core, one torch thread each; but `--threads T` alone
    keeps one process with T threads (what it asked for).

    The models a CPU runs are small, and a second intra-op thread speeds one cell up far less than a
    second cell beside it does (the README's quickstart gives the `demo` suite both ways). One thread per
    cell also makes a run's numbers the same on machines with different numbers of cores.
    """
    return (os.cpu_count() or 1) if threads is None else 1


def local_plan(ctx: RunContext, workers: int | None = None, cells_per_gpu: int | None = None) -> LocalPlan:
    """Resolve the context's device and threads and `--workers` for the local executor.

    `workers` defaults to the number of visible GPUs, or on CPU to `default_cpu_workers`. GPU workers
    are pinned round-robin over the visible GPUs (more workers than GPUs share them). CPU workers get
    `ctx.threads` torch threads each, by default the machine's cores divided among them.

    `cells_per_gpu` K (`--cells-per-gpu`, resolved from `auto` by `echobench.harness.packing`): K
    workers per visible GPU (per the one GPU that --device cuda:N names; on CPU, K workers on the
    host), so `--workers` defaults to GPUs × K and a `workers` that says otherwise is an error.
    """
    resolved, threads = ctx.resolved_device, ctx.threads
    gpus = visible_gpus() if resolved.startswith("cuda") else []
    if cells_per_gpu is not None:
        return _packed_plan(resolved, threads, gpus, workers, cells_per_gpu)
    if workers is None:
        if resolved == "cuda" and gpus:
            workers = len(gpus)
        else:
            workers = default_cpu_workers(threads) if resolved == "cpu" else 1
    if workers == 1:
        return LocalPlan(1, resolved, (None,), threads)
    if resolved.startswith("cuda:"):
        raise EchobenchError(f"--device {resolved} names one GPU, but --workers {workers} pins each worker to its "
                             f"own GPU: use --device cuda (set CUDA_VISIBLE_DEVICES to choose the GPUs)")
    if resolved == "cuda":
        return LocalPlan(workers, "cuda", tuple(gpus[k % len(gpus)] for k in range(workers)), threads)
    per_worker = threads if threads is not None else max(1, (os.cpu_count() or 1) // workers)
    return LocalPlan(workers, "cpu", (None,) * workers, per_worker)


def _packed_plan(resolved: str, threads: int | None, gpus: list[str], workers: int | None, k: int) -> LocalPlan:
    if resolved.startswith("cuda:"):
        index = int(resolved.split(":", 1)[1])
        if index >= len(gpus):
            raise EchobenchError(f"--device {resolved}: only {len(gpus)} GPU(s) are visible")
        pinned, where = [gpus[index]], f"the one GPU --device {resolved} names"
    elif resolved == "cuda":
        if not gpus:
            raise EchobenchError("--device cuda, but no GPU is visible to torch")
        pinned, where = gpus, f"{len(gpus)} visible GPU(s)"
    else:
        pinned, where = [], "the CPU (one device)"
    expected = max(1, len(pinned)) * k
    if workers is not None and workers != expected:
        raise EchobenchError(f"--workers {workers} contradicts --cells-per-gpu {k}: {where} × {k} = {expected} "
                             f"worker(s); leave --workers out (it defaults to {expected})")
    if pinned:
        gpu_of = tuple(pinned[w % len(pinned)] for w in range(expected))  # K workers on each GPU
        if expected == 1:
            return LocalPlan(1, resolved, (None,), threads, k)
        return LocalPlan(expected, "cuda", gpu_of, threads, k)
    if expected == 1:
        return LocalPlan(1, resolved, (None,), threads, k)
    per_worker = threads if threads is not None else max(1, (os.cpu_count() or 1) // expected)
    return LocalPlan(expected, "cpu", (None,) * expected, per_worker, k)


@dataclass
class _Worker:
    index: int
    proc: subprocess.Popen
    gpu: str | None
    current: "CellSpec | _ShardJob | None" = None
    buffer: bytes = b""
    done: bool = False

    def send(self, message: dict | None) -> None:
        """One JSON line on the worker's stdin; None closes it (the worker exits when idle)."""
        try:
            if message is None:
                self.proc.stdin.close()
            else:
                self.proc.stdin.write((json.dumps(message) + "\n").encode())
                self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # the worker died; its stdout reaches EOF and the driver handles it there

    def feed(self, chunk: bytes) -> list[str]:
        self.buffer += chunk
        *complete, self.buffer = self.buffer.split(b"\n")
        return [line.decode() for line in complete if line.strip()]


@dataclass(frozen=True)
class _ShardJob:
    """One EchoMod generation shard (`echomod_shards.generate_shard(group, shard)`) for a worker."""

    group: Any  # echomod_shards.GenerationGroup
    shard: tuple[int, int]

    def message(self) -> dict:
        return {"kind": "shard", "group": asdict(self.group), "shard": list(self.shard)}


def _shard_jobs(cells: list[CellSpec], workers: int) -> list[_ShardJob]:
    """The generation shards of the cells' EchoMod pairs, `workers` per generator (none for one worker:
    its cells generate their pairs one after the other anyway)."""
    from echobench.harness.echomod_shards import generation_groups, generation_spec

    if workers < 2:
        return []
    # a selection cell's pairs are those of `echoalign` on its setting: generated by the same shards
    groups = generation_groups([g for g in map(generation_spec, cells) if g is not None])
    return [_ShardJob(group, (i, workers)) for group in groups for i in range(workers)]


def _worker_env(plan: LocalPlan, gpu: str | None) -> dict[str, str]:
    env = dict(os.environ)
    package_parent = str(Path(__file__).resolve().parents[2])  # the workers import this very echobench
    env["PYTHONPATH"] = package_parent + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    if plan.threads is not None:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(plan.threads)
    return env


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "exited"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


class LocalWorkers(Executor):
    """`plan.workers` worker processes on this machine; see the module docstring."""

    def __init__(self, plan: LocalPlan, packing=None):
        self.plan = plan
        self.packing = packing  # echobench.harness.packing.Packing (provenance), or None

    def describe(self, ctx: RunContext) -> str:
        return self.plan.describe()

    def map(self, store: Store, suite_name: str, cells: list[CellSpec], ctx: RunContext) -> Iterator[Outcome]:
        plan = self.plan
        queue = deque(cells)
        job = {"out": str(store.root), "suite": suite_name, "workers": plan.workers, "parent": os.getpid(),
               "context": ctx.replace(device=plan.device, threads=plan.threads, progress=False).to_dict(),
               "packing": self.packing.provenance() if self.packing is not None else {}}
        workers: list[_Worker] = []
        started = min(plan.workers, len(cells))
        shards = deque(_shard_jobs(cells, started))
        waiting: list[_Worker] = []  # idle until the last generation shard finished
        selector = selectors.DefaultSelector()
        try:
            for k in range(started):
                gpu = plan.gpus[k]
                proc = subprocess.Popen([sys.executable, "-m", "echobench.harness.local_workers"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=_worker_env(plan, gpu))
                worker = _Worker(k, proc, gpu)
                worker.send({**job, "worker": k, "cuda_visible_devices": gpu})
                workers.append(worker)
                selector.register(proc.stdout, selectors.EVENT_READ, worker)

            def generating() -> bool:
                return bool(shards) or any(isinstance(w.current, _ShardJob) for w in workers if not w.done)

            def hand_out(worker: _Worker) -> None:
                if shards:
                    worker.current = shards.popleft()
                    worker.send(worker.current.message())
                elif generating():
                    worker.current = None
                    waiting.append(worker)
                else:
                    worker.current = queue.popleft() if queue else None
                    worker.send(None if worker.current is None else
                                {"spec": worker.current.to_dict(), "kind": worker.current.kind})

            def generation_step_done() -> None:
                """After a shard job ended: once none is left, the waiting workers take cells."""
                if not generating():
                    while waiting:
                        hand_out(waiting.pop(0))

            for worker in workers:
                hand_out(worker)
            while any(not w.done for w in workers):
                for key, _ in selector.select(timeout=1.0):
                    worker = key.data
                    chunk = os.read(key.fileobj.fileno(), 65536)
                    if chunk:
                        for line in worker.feed(chunk):
                            report = json.loads(line)
                            if report.get("fatal"):  # one line, and the BaseException branch stops the workers
                                raise EchobenchError(report["error"])
                            job = worker.current
                            hand_out(worker)
                            if isinstance(job, _ShardJob):
                                _report_shard(job, report, ctx.progress)
                                generation_step_done()
                            else:
                                yield job, report["status"], report.get("error")
                        continue
                    selector.unregister(key.fileobj)  # EOF: the worker exited (or died)
                    worker.done = True
                    code = worker.proc.wait()  # after wait() every fd of the worker is closed: its lock is free
                    job, worker.current = worker.current, None
                    if worker in waiting:
                        waiting.remove(worker)
                    if isinstance(job, _ShardJob):
                        _report_shard(job, {"status": "failed", "error": f"worker {worker.index} (pid "
                                            f"{worker.proc.pid}) {_describe_exit(code)}"}, ctx.progress)
                        generation_step_done()
                    elif job is not None:
                        why = f"worker {worker.index} (pid {worker.proc.pid}) {_describe_exit(code)} while computing this cell"
                        yield (job, *_settle_orphaned_cell(store, job, why))
            for spec in queue:  # every worker died before these were handed out
                yield spec, "failed", "not started: every worker exited before it; re-run to compute it"
            queue.clear()
        except BaseException:
            for worker in workers:  # Ctrl-C (or a driver error): stop the workers, keep the finished cells
                if worker.proc.poll() is None:
                    worker.proc.terminate()
            for worker in workers:
                try:
                    worker.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    worker.proc.kill()
                    worker.proc.wait()
            raise
        finally:
            selector.close()
            for worker in workers:
                for stream in (worker.proc.stdin, worker.proc.stdout):
                    try:
                        stream.close()
                    except OSError:
                        pass


def _report_shard(job: _ShardJob, report: dict, progress: bool) -> None:
    """One line per finished generation shard; a failed one always (its cells will retry its pairs)."""
    i, n = job.shard
    if report.get("status") == "generated":
        if progress:
            doc = report["doc"]
            write_line(f"EchoMod {job.group.describe()}, shard {i + 1}/{n}: {doc['pairs']} pairs "
                       f"({doc['new']} generated, {doc['from_cache']} from the cache) in {doc['seconds']:.0f} s")
    else:
        write_line(f"EchoMod {job.group.describe()}, shard {i + 1}/{n} failed ({report.get('error')}); "
                   f"its cells generate their missing pairs themselves")


def _settle_orphaned_cell(store: Store, spec: CellSpec, why: str) -> tuple[str, str | None]:
    """The cell a dead worker was on: computed if its result made it to disk, else failed (error.json)."""
    rid = spec.run_id
    with store.lock(rid) as held:
        if not held:
            return "busy", None  # another runner took it meanwhile
        store.remove_stale_temporaries(rid)
        if store.has_result(rid):
            return "computed", None  # it died after writing the result
        message = f"{why}; re-run to compute it"
        store.write(rid, "error.json", {"run_id": rid, "error": message, "traceback": ""})
        return "failed", message


# --- the worker process ------------------------------------------------------------------------------

def _die_with_parent(parent: int) -> None:
    """Exit as soon as the driver is gone, so that no worker outlives it and races a re-run."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            PR_SET_PDEATHSIG = 1  # prctl(2): signal sent to this process when its parent thread dies
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the driver died before prctl took effect
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="echobench-parent-watch", daemon=True).start()


def worker_main() -> int:
    """Read the job, then one cell per stdin line; answer one JSON line per cell; exit at EOF."""
    protocol = os.fdopen(os.dup(1), "w", buffering=1)  # the answers go here ...
    os.dup2(2, 1)  # ... and anything else printed on stdout goes to stderr
    sys.stdout = sys.stderr
    first = sys.stdin.readline()
    if not first:
        return 0
    job = json.loads(first)
    _die_with_parent(int(job["parent"]))
    from echobench.environment import environment
    from echobench.harness.cells import compute_cell
    from echobench.harness.suite import RuntimeSpec

    ctx = RunContext.from_dict(job["context"])
    ctx.apply_threads()
    try:
        ctx.load_plugins()  # the run's --include files: their names exist here as in the driver
    except EchobenchError as exc:  # the driver stops the run with this one line
        protocol.write(json.dumps({"status": "failed", "error": str(exc), "fatal": True}) + "\n")
        return 1
    store = Store(job["out"])
    env = environment(ctx.device)
    executor = {"name": "local", "worker": job["worker"], "workers": job["workers"], "pid": os.getpid(),
                "cuda_visible_devices": job["cuda_visible_devices"], "threads": ctx.threads, **job.get("packing", {})}
    spec_types = {"train": RunSpec, "selection": SelectionSpec, "runtime": RuntimeSpec}
    for line in sys.stdin:
        if not line.strip():
            continue
        message = json.loads(line)
        if message.get("kind") == "shard":
            protocol.write(json.dumps(_generate(message, ctx)) + "\n")
            continue
        spec = spec_types[message.get("kind", "train")].from_dict(message["spec"])
        try:
            status, error = compute_cell(store, job["suite"], spec, env, ctx, executor=executor)
        except EchobenchError as exc:  # the store refused a write (full disk, read-only): the run stops
            protocol.write(json.dumps({"run_id": spec.run_id, "status": "failed", "error": str(exc), "fatal": True}) + "\n")
            return 1
        protocol.write(json.dumps({"run_id": spec.run_id, "status": status, "error": error}) + "\n")
    return 0


def _generate(message: dict, ctx: RunContext) -> dict:
    """A generation shard job in a worker: its summary, or the error (the driver goes on without it)."""
    from echobench.harness.echomod_shards import GenerationGroup, generate_shard

    group = GenerationGroup(**{**message["group"], "cells": tuple(message["group"]["cells"])})
    try:
        return {"status": "generated", "doc": generate_shard(group, tuple(message["shard"]), ctx)}
    except Exception as exc:  # noqa: BLE001 - reported in one line; the cells meet the same error with its context
        return {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}


if __name__ == "__main__":
    try:
        sys.exit(worker_main())
    except KeyboardInterrupt:
        sys.exit(130)
