"""The local executor with `--workers N` > 1: N worker processes on this machine, one cell each at a time.

The driver (`run_suite_pool`) starts N copies of `python -m echobench.local_pool`, each with its own
environment: CUDA_VISIBLE_DEVICES set to one GPU (so the worker's `cuda` is that GPU: the variable is
read when torch initialises CUDA, and the worker is a fresh process, so it is set before) or, on CPU,
OMP_NUM_THREADS and torch's thread count set to `--threads`. The driver hands each idle worker the
next pending cell over its stdin (one JSON line) and reads one JSON line back per cell on the
worker's stdout; the worker computes the cell with `runner.compute_cell` (a selection cell with
`kinds.compute_kind_cell`), i.e. under the cell's lock
in the same results store as every other executor, so a second runner on the same directory skips
the cells these workers hold.

Failures:
- a worker that dies (SIGKILL, out of memory) loses only its current cell: the kernel drops its
  `flock` when it dies, the driver records the cell as failed (error.json: which worker, which
  signal; a re-run computes it) and the other workers go on with the rest;
- a driver that dies takes its workers with it (Linux: PR_SET_PDEATHSIG; elsewhere a watchdog
  thread notices the new parent within a second), so a re-run never races a leftover worker;
- Ctrl-C stops the workers and the driver; finished cells are kept.
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
from dataclasses import dataclass
from pathlib import Path

from .executors import LocalPlan
from .runner import SuiteOutcome, cell_label, split_pending
from .store import Store
from .suite import RunSpec, SelectionSpec, Suite


@dataclass
class _Worker:
    index: int
    proc: subprocess.Popen
    gpu: str | None
    current: RunSpec | SelectionSpec | None = None
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


def _worker_env(plan: LocalPlan, gpu: str | None) -> dict[str, str]:
    env = dict(os.environ)
    package_parent = str(Path(__file__).resolve().parent.parent)  # the workers import this very echobench
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


def run_suite_pool(suite: Suite, out: str | Path, plan: LocalPlan, *, seeds: list[int] | None = None,
                   force: bool = False, data_root: str | None = None, cache_dir: str | None = None,
                   progress: bool = True, selection=()) -> SuiteOutcome:
    """Compute the suite's pending training cells and the `selection` cells (first: each is as long as
    several training cells) on `plan.workers` worker processes; see the module docstring."""
    from tqdm.auto import tqdm

    cells = [*selection, *suite.expand(seeds)]
    store = Store(out)
    store.claim(suite.name)
    outcome = SuiteOutcome(cells, device=plan.describe())
    started = time.perf_counter()
    pending, outcome.skipped = split_pending(store, cells, force)
    queue = deque(pending)
    bar = tqdm(total=len(cells), initial=len(outcome.skipped), desc=f"suite {suite.name}", unit="cell",
               disable=not progress, file=sys.stderr, dynamic_ncols=True)
    job = {"out": str(store.root), "suite": suite.name, "device": plan.device, "threads": plan.threads,
           "data_root": data_root, "cache_dir": cache_dir, "force": force, "workers": plan.workers,
           "parent": os.getpid()}
    workers: list[_Worker] = []
    selector = selectors.DefaultSelector()
    try:
        for k in range(min(plan.workers, len(pending))):
            gpu = plan.gpus[k]
            proc = subprocess.Popen([sys.executable, "-m", "echobench.local_pool"], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, env=_worker_env(plan, gpu))
            worker = _Worker(k, proc, gpu)
            worker.send({**job, "worker": k, "cuda_visible_devices": gpu})
            workers.append(worker)
            selector.register(proc.stdout, selectors.EVENT_READ, worker)

        def hand_out(worker: _Worker) -> None:
            worker.current = queue.popleft() if queue else None
            if worker.current is None:
                worker.send(None)
            else:
                bar.set_postfix_str(cell_label(worker.current))
                worker.send({"spec": worker.current.to_dict(), "kind": getattr(worker.current, "kind", "train")})

        for worker in workers:
            hand_out(worker)
        while any(not w.done for w in workers):
            for key, _ in selector.select(timeout=1.0):
                worker = key.data
                chunk = os.read(key.fileobj.fileno(), 65536)
                if chunk:
                    for line in worker.feed(chunk):
                        report = json.loads(line)
                        outcome.record(report["run_id"], report["status"], report.get("error"))
                        if report["status"] == "failed":
                            bar.write(f"cell {report['run_id']} ({cell_label(worker.current)}) failed: "
                                      f"{report.get('error')}", file=sys.stderr)
                        bar.update(1)
                        hand_out(worker)
                    continue
                selector.unregister(key.fileobj)  # EOF: the worker exited (or died)
                worker.done = True
                code = worker.proc.wait()  # after wait() every fd of the worker is closed: its lock is free
                if worker.current is not None:
                    why = f"worker {worker.index} (pid {worker.proc.pid}) {_describe_exit(code)} while computing this cell"
                    status, message = _settle_orphaned_cell(store, worker.current, why)
                    outcome.record(worker.current.run_id, status, message)
                    if status == "failed":
                        bar.write(f"cell {worker.current.run_id} ({cell_label(worker.current)}) failed: {message}",
                                  file=sys.stderr)
                    bar.update(1)
                    worker.current = None
        for spec in queue:  # every worker died before these were handed out
            outcome.record(spec.run_id, "failed", "not started: every worker exited before it; re-run to compute it")
            bar.update(1)
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
        bar.close()
        for worker in workers:
            for stream in (worker.proc.stdin, worker.proc.stdout):
                try:
                    stream.close()
                except OSError:
                    pass
    outcome.seconds = time.perf_counter() - started
    return outcome


def _settle_orphaned_cell(store: Store, spec: RunSpec, why: str) -> tuple[str, str | None]:
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
    import torch

    from .environment import environment
    from .kinds import compute_kind_cell
    from .runner import compute_cell

    if job["threads"]:
        torch.set_num_threads(int(job["threads"]))
    store = Store(job["out"])
    env = environment(job["device"])
    executor = {"name": "local", "worker": job["worker"], "workers": job["workers"], "pid": os.getpid(),
                "cuda_visible_devices": job["cuda_visible_devices"], "threads": job["threads"]}
    for line in sys.stdin:
        if not line.strip():
            continue
        message = json.loads(line)
        where = {"device": job["device"], "data_root": job["data_root"], "cache_dir": job["cache_dir"],
                 "force": job["force"], "executor": executor}
        if message.get("kind", "train") == "selection":
            spec = SelectionSpec.from_dict(message["spec"])
            status, error = compute_kind_cell(store, job["suite"], spec, env, **where)
        else:
            spec = RunSpec.from_dict(message["spec"])
            status, error = compute_cell(store, job["suite"], spec, env, **where)
        protocol.write(json.dumps({"run_id": spec.run_id, "status": status, "error": error}) + "\n")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(worker_main())
    except KeyboardInterrupt:
        sys.exit(130)
