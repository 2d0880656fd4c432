"""`echobench bench train`: the speed of one training epoch of the paper's protocol, through the trainer.

What runs. The `paper` protocol (`protocols.get_protocol("paper")`: ResNet-18 for 10 classes, SGD with
momentum and weight decay, batch 128, pad-4 crop + flip) trains on random CIFAR-shaped data: `n` uint8
images of 32 × 32 × 3 and labels in 0..9, both from `np.random.default_rng(seed)`. The data, the
model, the optimizer and the batches come from the same pieces a method uses (`trainer.Task`:
`DeviceSplit` on the device, `new_model` — channels_last on GPU —, `new_optimizer`, `Task.train_epoch`
with its batched augmentation and, on GPU, bf16 autocast), with the cross-entropy loss of the `ce`
baseline. Nothing is evaluated: the epoch is the training pass only. Random pixels cost the network
exactly what CIFAR images cost, so the numbers hold for the real dataset.

Warm-up. Before the timed epoch, `warmup_steps` full batches and, when `n` is not a multiple of the
batch size, one batch of the last partial batch's size run through `train_epoch` on a subset of the
same data: the first steps of a process pay for CUDA context creation, cuDNN's per-shape algorithm
choice, the caching allocator's first allocations and lazy module initialisation, which a 200-epoch
run pays once. The warm-up updates the model, as a real run's first steps would.

Timing. `time.perf_counter` around one `Task.train_epoch` call; on CUDA the device is synchronised
before the clock starts and before it is read, so queued kernels are counted. `seconds_per_epoch` is
that wall time, `images_per_s` = n / seconds, `seconds_per_step` = seconds / batches.

Memory. On CUDA: `torch.cuda.max_memory_allocated` over the timed epoch (peak statistics reset just
before it), which includes the device-resident data, the model, the optimizer state and the
activations — what a training run must fit — and, beside it, the allocation before the epoch and the
caching allocator's reserved peak. Everywhere: the process's peak resident set size
(`resource.getrusage(RUSAGE_SELF).ru_maxrss`, a high-water mark of the whole process since it
started, including the interpreter, torch and the host copy of the data).

Single run, no repeats: on a shared machine the number moves with the load; compare runs on the same
machine in the same session.

`--compile` times the `paper-compiled` protocol (`Task.train_epoch`'s step through torch.compile, on
CUDA with CUDA graphs; the last partial batch dropped): compilation happens in the warm-up, whose
seconds are reported. `--concurrent K [K ...]` (`bench_train_concurrent`) runs the measurement as
separate processes, one per cell, as `echobench run --cells-per-gpu K` does: one uncompiled cell alone
(the reference), with `--compile` one compiled cell alone, then K cells at once for each K. The cells
of a row prepare and warm up together, wait until all are ready, and are released at once; the row's
aggregate images/s is the K epochs' images over the wall time from the release to the last cell's
result, beside each cell's own rate and the peak memory per cell (each process's, as above).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from echobench.errors import EchobenchError
from echobench.memory import own_gpu_mib, peak_rss_mib

IMAGE_SHAPE = (32, 32, 3)  # CIFAR
NUM_CLASSES = 10
# The paper's CIFAR-10 training split: 50,000 images less the 10% validation split (protocols.py).
PAPER_TRAIN_IMAGES = 45_000



def random_cifar(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, 32, 32, 3) uint8 images and (n,) int64 labels in 0..9 from `np.random.default_rng(seed)`."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, *IMAGE_SHAPE), dtype=np.uint8)
    labels = rng.integers(0, NUM_CLASSES, n, dtype=np.int64)
    return images, labels


def bench_train(*, n: int = 50_000, device: str = "cpu", warmup_steps: int = 3, batch_size: int | None = None,
                seed: int = 0, compile: bool = False, before_epoch=None) -> dict[str, Any]:
    """One timed training epoch of the paper protocol's ResNet-18 on `n` random CIFAR-shaped images.

    `device` is a resolved torch device name (cpu, cuda, cuda:N). `batch_size` None keeps the
    protocol's 128. Returns a JSON-able dict: the setting (n, batch size, steps, warm-up, precision,
    channels_last, device), the measurement (seconds_per_epoch, images_per_s, seconds_per_step,
    peak_memory_mib with its peak_memory_kind, peak_rss_mib and on CUDA the gpu_* fields), the
    epoch's mean training loss (a sanity check: on random labels it stays at or above ln 10 ≈ 2.3,
    and a NaN or inf would show a broken run), a projection of the paper's 200 epochs from the
    measured rate, and the environment. See the module docstring for what each number measures.

    `compile=True` times the `paper-compiled` protocol instead (the step compiled, the last partial
    batch dropped; the compilation happens in the warm-up). `before_epoch()`, when given, is called
    after the warm-up, right before the clock starts (`bench_train_concurrent` holds every cell there
    until all are ready).
    """
    if n < 1:
        raise EchobenchError(f"bench train needs at least one image: --n must be at least 1, got {n}")
    if warmup_steps < 0:
        raise EchobenchError(f"--warmup-steps must be 0 or more, got {warmup_steps}")
    if batch_size is not None and batch_size < 1:
        raise EchobenchError(f"--batch-size must be at least 1, got {batch_size}")

    import torch
    import torch.nn.functional as F

    from echobench.environment import device_description, environment
    from echobench.training.protocols import get_protocol
    from echobench.training.trainer import DeviceSplit, History, Normalizer, Task, channel_stats

    protocol = get_protocol("paper-compiled" if compile else "paper", {"batch_size": batch_size} if batch_size else None)
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    if cuda and dev.index is not None:
        torch.cuda.set_device(dev)  # cuda:N: the trainer's tensors and the memory statistics on that GPU

    images, labels = random_cifar(n, seed)
    mean, std = channel_stats(images)
    split = DeviceSplit.from_numpy(images, labels, np.arange(n), dev)
    del images  # the host copy is not needed once the split is on the device
    task = Task(dataset="random-cifar", num_classes=NUM_CLASSES, class_names=[str(c) for c in range(NUM_CLASSES)],
                train=split, val=split, test=split, protocol=protocol, device=dev, seed=seed, noise_kind="none",
                noise_rate=0.0, normalizer=Normalizer(mean, std, dev), history=History())
    model = task.new_model()
    optimizer = task.new_optimizer(model.parameters())

    def loss_fn(logits, y, idx):
        return F.cross_entropy(logits, y)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(dev)

    bs = protocol.batch_size
    dropping = protocol.last_batch == "drop" and n >= bs
    steps = n // bs if dropping else math.ceil(n / bs)
    warm_full = min(warmup_steps, n // bs)
    # The partial last batch has its own shape (its own cuDNN choice on GPU): warm it up too, unless
    # the protocol drops it.
    warm_n = warm_full * bs + (n % bs if warmup_steps > 0 and not dropping else 0)
    warm_started = time.perf_counter()
    if warm_n:
        warm_split = task.train.subset(torch.arange(warm_n))
        task.train_epoch(model, optimizer, task.generator("warmup"), loss_fn, split=warm_split)
    sync()
    warmup_seconds = time.perf_counter() - warm_started

    if before_epoch is not None:
        before_epoch()
    if cuda:
        torch.cuda.reset_peak_memory_stats(dev)
        gpu_before = torch.cuda.memory_allocated(dev)
    rss_before = peak_rss_mib()
    sync()
    started = time.perf_counter()
    loss_sum, _, seen = task.train_epoch(model, optimizer, task.generator("batches"), loss_fn)
    sync()
    seconds = time.perf_counter() - started
    rss_peak = peak_rss_mib()

    precision = "bf16 autocast" if cuda and protocol.mixed_precision else "fp32"
    doc: dict[str, Any] = {
        "benchmark": "train",
        "what": "one training epoch (Task.train_epoch: batched augmentation, SGD step; no evaluation) of the "
                "paper protocol on random CIFAR-shaped uint8 data resident on the device",
        "protocol": protocol.name, "model": protocol.resolved_model(NUM_CLASSES), "optimizer": protocol.optimizer,
        "compile": protocol.compile, "last_batch": protocol.last_batch,
        "n": n, "image_shape": list(IMAGE_SHAPE), "num_classes": NUM_CLASSES, "batch_size": bs,
        "steps_per_epoch": steps, "seed": seed,
        "warmup_steps": warm_full + (1 if warm_n > warm_full * bs else 0), "warmup_images": warm_n,
        "warmup_seconds": round(warmup_seconds, 3),
        "device": device, "device_name": device_description(device)["name"],
        "precision": precision, "channels_last": task.normalizer.channels_last,
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "seconds_per_epoch": seconds,
        "images_per_s": seen / seconds,
        "images": seen,
        "seconds_per_step": seconds / steps,
        "train_loss": float(loss_sum) / max(seen, 1),
        "peak_rss_mib": rss_peak,
        "rss_before_epoch_mib": rss_before,
    }
    if cuda:
        doc.update({
            "gpu_process_mib": own_gpu_mib(),  # nvidia-smi's figure for this process (context included), or None
            "gpu_peak_mib": torch.cuda.max_memory_allocated(dev) / 2**20,
            "gpu_allocated_before_epoch_mib": gpu_before / 2**20,
            "gpu_reserved_peak_mib": torch.cuda.max_memory_reserved(dev) / 2**20,
        })
        doc["peak_memory_mib"], doc["peak_memory_kind"] = doc["gpu_peak_mib"], "torch.cuda.max_memory_allocated over the epoch"
    else:
        doc["peak_memory_mib"], doc["peak_memory_kind"] = rss_peak, "process peak RSS (ru_maxrss)"
    doc["projection"] = {
        "paper_run_hours": PAPER_TRAIN_IMAGES * protocol.epochs / doc["images_per_s"] / 3600,
        "images_per_epoch": PAPER_TRAIN_IMAGES, "epochs": protocol.epochs,
        "note": "the paper's 200 epochs on CIFAR-10's 45,000 training images at the measured rate: "
                "training steps only, without the per-epoch evaluation; an extrapolation, not a run",
    }
    doc["environment"] = environment(device)
    return doc


def format_bench_train(doc: dict[str, Any]) -> str:
    """A few lines of text for a `bench_train` result."""
    from tabulate import tabulate

    memory = (f"GPU peak {doc['gpu_peak_mib']:.0f} MiB allocated ({doc['gpu_reserved_peak_mib']:.0f} reserved), "
              f"process peak RSS {doc['peak_rss_mib']:.0f} MiB" if "gpu_peak_mib" in doc
              else f"process peak RSS {doc['peak_rss_mib']:.0f} MiB")
    rows = [[doc["images_per_s"], doc["seconds_per_epoch"], doc["seconds_per_step"] * 1000, doc["train_loss"]]]
    return "\n".join([
        f"One training epoch{' (compiled step)' if doc.get('compile') else ''}: {doc['model']} ({doc['protocol']} protocol, batch {doc['batch_size']}, "
        f"{doc['steps_per_epoch']} steps) on {doc['n']:,} random {doc['image_shape'][0]}×{doc['image_shape'][1]} "
        f"images, {doc['device']} ({doc['device_name']}), {doc['precision']}"
        f"{', channels_last' if doc['channels_last'] else ''}, torch {doc['torch']} (intra-op threads: {doc['torch_threads']})",
        tabulate(rows, headers=["images/s", "s/epoch", "ms/step", "train loss"], floatfmt=(".1f", ".2f", ".1f", ".3f"),
                 tablefmt="github"),
        f"memory: {memory}",
        f"warm-up first: {doc['warmup_steps']} steps ({doc['warmup_images']} images, {doc['warmup_seconds']:.2f} s)",
        f"the paper's {doc['projection']['epochs']} epochs on {doc['projection']['images_per_epoch']:,} images at "
        f"this rate: ≈ {doc['projection']['paper_run_hours']:.2f} h of training steps (extrapolated)",
    ])


# --- several cells at once: `bench train --concurrent K [K ...] [--compile]` ------------------------------

MAX_CONCURRENT = 16  # as --cells-per-gpu
CELL_KEYS = ("images_per_s", "seconds_per_epoch", "seconds_per_step", "images", "warmup_seconds", "train_loss",
             "peak_memory_mib", "peak_memory_kind", "peak_rss_mib", "gpu_peak_mib", "gpu_reserved_peak_mib",
             "gpu_process_mib", "torch_threads", "compile", "last_batch", "precision", "seed")


def _cell_main() -> int:
    """One cell of `bench_train_concurrent`, in its own process: prepare and warm up, print a ready line,
    wait for the go line on stdin, time one epoch, print the result line."""
    job = json.loads(sys.stdin.readline())
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything else printed goes to stderr
    if job.get("threads"):
        import torch

        torch.set_num_threads(int(job["threads"]))

    def ready_then_wait() -> None:
        out.write(json.dumps({"ready": True}) + "\n")
        if not sys.stdin.readline():
            sys.exit(1)  # the driver went away

    try:
        doc = bench_train(n=job["n"], device=job["device"], warmup_steps=job["warmup_steps"],
                          batch_size=job["batch_size"], seed=job["seed"], compile=job["compile"],
                          before_epoch=ready_then_wait)
    except Exception as exc:  # reported as this cell's error (e.g. out of memory); the driver goes on
        out.write(json.dumps({"error": f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"}) + "\n")
        return 1
    out.write(json.dumps({k: doc.get(k) for k in CELL_KEYS} | {"done": True}) + "\n")
    return 0


def _run_group(k: int, *, compile: bool, n: int, device: str, warmup_steps: int, batch_size: int | None,
               seed: int, threads: int | None, timeout: float) -> dict[str, Any]:
    """K cell processes: all prepared and warmed up, then released together; the aggregate rate is the
    K epochs' images over the wall time from the release to the last cell's result."""
    import selectors
    import subprocess

    env = dict(os.environ)
    package_parent = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = package_parent + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    procs = []
    try:
        for i in range(k):
            proc = subprocess.Popen([sys.executable, "-m", "echobench.bench.train"], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
            proc.stdin.write(json.dumps({"n": n, "device": device, "warmup_steps": warmup_steps, "batch_size": batch_size,
                                         "seed": seed + i, "compile": compile, "threads": threads}) + "\n")
            proc.stdin.flush()
            procs.append(proc)
        deadline = time.monotonic() + timeout
        ready: dict[int, dict] = {}
        results: dict[int, dict] = {}
        sel = selectors.DefaultSelector()
        for i, proc in enumerate(procs):
            sel.register(proc.stdout, selectors.EVENT_READ, i)

        def read_one() -> None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            for key, _ in sel.select(timeout=min(left, 1.0)):
                i = key.data
                line = key.fileobj.readline()
                if not line:
                    sel.unregister(key.fileobj)
                    results.setdefault(i, {"error": f"cell process exited with code {procs[i].wait()}"})
                    continue
                msg = json.loads(line)
                if msg.get("ready"):
                    ready[i] = msg
                else:
                    results[i] = msg

        try:
            while len(ready) + len(results) < k:  # warm-ups (and compilation) in parallel
                read_one()
            started = time.perf_counter()
            for i in ready:
                procs[i].stdin.write("go\n")
                procs[i].stdin.flush()
            while len(results) < k:
                read_one()
            wall = time.perf_counter() - started
        except TimeoutError:
            return {"cells": k, "compile": compile, "error": f"not finished within {timeout:.0f} s"}
        finally:
            sel.close()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    cells = [results[i] for i in range(k)]
    errors = [c["error"] for c in cells if "error" in c]
    row: dict[str, Any] = {"cells": k, "compile": compile}
    if errors:
        return {**row, "error": errors[0], "failed_cells": len(errors)}
    images = sum(c["images"] for c in cells)
    return {**row, "aggregate_images_per_s": images / wall, "wall_s": wall, "images": images,
            "per_cell_images_per_s": [c["images_per_s"] for c in cells],
            "peak_memory_mib_per_cell": max(c["peak_memory_mib"] for c in cells),
            "peak_memory_kind": cells[0]["peak_memory_kind"],
            "gpu_process_mib_per_cell": max((c["gpu_process_mib"] or 0 for c in cells), default=None) or None,
            "warmup_seconds_max": max(c["warmup_seconds"] for c in cells),
            "torch_threads_per_cell": cells[0]["torch_threads"], "cell_results": cells}


def bench_train_concurrent(*, concurrent: tuple[int, ...], compile: bool = False, n: int = 50_000, device: str = "cpu",
                           warmup_steps: int = 3, batch_size: int | None = None, seed: int = 0,
                           threads: int | None = None, timeout: float = 900) -> dict[str, Any]:
    """Aggregate training throughput of K cells at once against one cell alone, in one run.

    Every cell is a process of its own (as `echobench run --cells-per-gpu K` runs them) doing
    `bench_train` on `device`: prepared and warmed up (compiled, with `compile`) concurrently, then
    released together. Rows: one uncompiled cell alone (the reference), with `compile` one compiled
    cell alone, then for each K in `concurrent` K cells at once (compiled with `compile`):
    aggregate images/s = the K epochs' images / the wall time from release to the last result, its
    ratio to the reference, each cell's own rate and the peak memory per cell. `threads`: torch
    threads per cell (default: the cores divided among the cells of the row).
    """
    if not concurrent or any(not 1 <= k <= MAX_CONCURRENT for k in concurrent):
        raise EchobenchError(f"--concurrent takes cell counts from 1 to {MAX_CONCURRENT}, got {list(concurrent)}")
    if n < 1 or warmup_steps < 0 or (batch_size is not None and batch_size < 1):
        raise EchobenchError("--n and --batch-size must be at least 1 and --warmup-steps 0 or more")
    cores = os.cpu_count() or 1
    common = dict(n=n, device=device, warmup_steps=warmup_steps, batch_size=batch_size, seed=seed, timeout=timeout)
    groups = [(1, False)] + ([(1, True)] if compile else []) + [(k, compile) for k in concurrent]
    rows = [_run_group(k, compile=c, threads=threads or max(1, cores // k), **common) for k, c in groups]
    reference = rows[0].get("aggregate_images_per_s")
    for row in rows:
        if reference and "aggregate_images_per_s" in row:
            row["speedup_vs_solo"] = row["aggregate_images_per_s"] / reference
    from echobench.environment import device_description, environment

    best = max((r for r in rows if "aggregate_images_per_s" in r), key=lambda r: r["aggregate_images_per_s"], default=None)
    doc: dict[str, Any] = {
        "benchmark": "train-concurrent",
        "what": "K training cells at once (one process each, as --cells-per-gpu K runs them), each one timed epoch of "
                "bench train, released together after their warm-ups; aggregate images/s against one uncompiled cell alone",
        "protocol": "paper-compiled" if compile else "paper", "model": "resnet18", "n": n,
        "batch_size": batch_size or 128, "warmup_steps": warmup_steps, "compile": compile,
        "concurrent": list(concurrent), "device": device, "device_name": device_description(device)["name"],
        "rows": rows,
        "best": None if best is None else {"cells": best["cells"], "compile": best["compile"],
                                           "aggregate_images_per_s": best["aggregate_images_per_s"],
                                           "speedup_vs_solo": best.get("speedup_vs_solo")},
        "environment": environment(device),
    }
    return doc


def format_bench_train_concurrent(doc: dict[str, Any]) -> str:
    from tabulate import tabulate

    table = []
    for r in doc["rows"]:
        name = ("1 cell alone" if r["cells"] == 1 else f"{r['cells']} cells at once") + (", compiled" if r["compile"] else "")
        if "error" in r:
            table.append([name, None, None, None, None, None, r["error"]])
            continue
        per_cell = sum(r["per_cell_images_per_s"]) / len(r["per_cell_images_per_s"])
        table.append([name, r["aggregate_images_per_s"], r.get("speedup_vs_solo"), per_cell,
                      r["peak_memory_mib_per_cell"], r["warmup_seconds_max"], ""])
    return "\n".join([
        f"Training cells at once: {doc['model']} ({doc['protocol']} protocol, batch {doc['batch_size']}) on "
        f"{doc['n']:,} random images each, {doc['device']} ({doc['device_name']}); one process per cell",
        tabulate(table, headers=["row", "images/s (all cells)", "× 1 cell", "images/s per cell", "peak MiB per cell",
                                 "warm-up s", "error"], floatfmt=(None, ".1f", ".2f", ".1f", ".0f", ".1f"),
                 tablefmt="github"),
        f"peak memory per cell: {doc['rows'][0].get('peak_memory_kind', '')}",
    ])


if __name__ == "__main__":
    sys.exit(_cell_main())
