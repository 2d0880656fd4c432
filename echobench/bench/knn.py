"""Micro-benchmarks of echobench's own building blocks (not of methods): `bench_knn`.

`bench_knn` times the kNN backends of `echobench.training.knn` on one matrix of random features and measures
how much memory each needs.

Method. Each backend runs in a fresh child process (`multiprocessing`, spawn start method, so no
memory or thread pool is inherited from the caller). The child imports torch (and faiss for the faiss
backend), draws the features — standard normal float32, (n, dim), from `np.random.default_rng(seed)`
drawn directly in float32 so that no float64 temporary raises the high-water mark — and then reads its
own peak resident set size, `resource.getrusage(RUSAGE_SELF).ru_maxrss` (the *baseline*: interpreter,
libraries and the inputs). It then runs `knn(features, k, backend=...)` `repeats` times and reads
ru_maxrss again. ``peak_mib`` = peak after − baseline: the most memory the kNN search itself added on
top of its inputs, at any moment (ru_maxrss is a high-water mark, so a short-lived block counts).
``process_peak_mib`` is the child's whole peak. Times are wall-clock seconds of each `knn` call
(`time.perf_counter`), ``seconds`` the fastest of the repeats. On a CUDA ``device`` (torch backend only)
the features are moved to the GPU before the baseline and ``gpu_peak_mib`` is
`torch.cuda.max_memory_allocated()` minus the allocation before the search.

Agreement: recall@k of the faiss neighbour sets against the torch ones (mean over rows of
|faiss ∩ torch| / k; 1.0 unless there are ties at the k-th place) and the largest difference between
the two backends' sorted similarity lists.
"""

from __future__ import annotations

import multiprocessing
import os
import platform
import time
from typing import Any

import numpy as np

from echobench.errors import EchobenchError
from echobench.memory import peak_rss_mib

KNN_BACKENDS = ("faiss", "torch")


def random_features(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """(n, dim) float32 standard normal features, drawn directly in float32."""
    return np.random.default_rng(seed).standard_normal((n, dim), dtype=np.float32)



def _knn_child(conn, backend: str, n: int, dim: int, k: int, repeats: int, seed: int, chunk: int | None,
               threads: int | None, device: str) -> None:
    """Runs in the child process; sends back a dict (or {"error": message})."""
    try:
        import torch

        from echobench.training.knn import import_faiss, knn

        if threads:
            torch.set_num_threads(threads)
        if backend == "faiss":
            faiss = import_faiss()
            if threads:
                faiss.omp_set_num_threads(threads)
        elif device != "cpu" and backend != "torch":
            raise EchobenchError(f"device {device!r} is for the torch backend only")
        features: Any = random_features(n, dim, seed)
        gpu = device != "cpu"
        if gpu:
            features = torch.from_numpy(features).to(device)
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            gpu_base = torch.cuda.memory_allocated()
        baseline = peak_rss_mib()
        seconds, sims, idx = [], None, None
        for _ in range(repeats):
            started = time.perf_counter()
            sims, idx = knn(features, k, backend=backend, chunk=chunk)
            if gpu:
                torch.cuda.synchronize()
            seconds.append(time.perf_counter() - started)
        peak = peak_rss_mib()
        out = {
            "seconds": min(seconds), "seconds_all": seconds, "peak_mib": peak - baseline,
            "baseline_mib": baseline, "process_peak_mib": peak, "device": device,
            "torch_threads": torch.get_num_threads(),
        }
        if gpu:
            out["gpu_peak_mib"] = (torch.cuda.max_memory_allocated() - gpu_base) / 2**20
            sims, idx = sims.cpu().numpy(), idx.cpu().numpy()
        if backend == "faiss":
            out["faiss_version"] = getattr(faiss, "__version__", "?")
            out["faiss_gpus"] = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
            out["faiss_threads"] = faiss.omp_get_max_threads()
        out["sims"], out["indices"] = sims, idx
        conn.send(out)
    except Exception as exc:  # reported to the parent, which records it for this backend
        conn.send({"error": f"{type(exc).__name__}: {exc}" if not isinstance(exc, EchobenchError) else str(exc)})
    finally:
        conn.close()


def _run_child(backend: str, n: int, dim: int, k: int, repeats: int, seed: int, chunk: int | None,
               threads: int | None, device: str, timeout: float | None) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_knn_child, args=(child, backend, n, dim, k, repeats, seed, chunk, threads, device))
    proc.start()
    child.close()
    try:
        if not parent.poll(timeout):
            proc.terminate()
            proc.join()
            return {"error": f"timed out after {timeout} s"}
        result = parent.recv()
    except EOFError:
        result = None
    proc.join()
    if result is None:
        return {"error": f"the child process died (exit code {proc.exitcode}; out of memory?)"}
    return result


def neighbour_recall(reference: np.ndarray, other: np.ndarray) -> float:
    """Mean over rows of |reference row ∩ other row| / k for (N, k) neighbour index arrays."""
    if reference.shape != other.shape:
        raise ValueError(f"neighbour arrays differ in shape: {reference.shape} vs {other.shape}")
    n, k = reference.shape
    hits = 0
    for start in range(0, n, 8192):  # (rows, k, k) comparisons in blocks
        a, b = reference[start : start + 8192], other[start : start + 8192]
        hits += int((a[:, :, None] == b[:, None, :]).any(axis=2).sum())
    return hits / (n * k)


def bench_knn(n: int = 50_000, dim: int = 512, k: int = 10, backends: tuple[str, ...] = KNN_BACKENDS,
              repeats: int = 1, seed: int = 0, *, chunk: int | None = None, threads: int | None = None,
              device: str = "cpu", timeout: float | None = 1800.0) -> dict[str, Any]:
    """Time and memory of `echobench.training.knn.knn` per backend on the same random (n, dim) features.

    Returns {"n", "dim", "k", "repeats", "seed", "chunk", "threads", "device", "method",
    "backends": {name: {"seconds", "seconds_all", "peak_mib", "baseline_mib", "process_peak_mib", ...}
    or {"error"}}, "ratio_torch_over_faiss": {"seconds", "peak_mib"}, "agreement": {"recall_at_k",
    "max_abs_sim_diff"}, "environment": {...}} (the last two only when both backends ran).
    See the module docstring for how memory is measured.
    """
    for b in backends:
        if b not in KNN_BACKENDS:
            raise EchobenchError(f"unknown kNN backend {b!r} to benchmark; choose from {', '.join(KNN_BACKENDS)}")
    if n < 2 or dim < 1 or not 1 <= k < n or repeats < 1:
        raise EchobenchError(f"bench knn needs n ≥ 2, dim ≥ 1, 1 ≤ k < n and repeats ≥ 1 (got n={n}, dim={dim}, k={k}, repeats={repeats})")
    results: dict[str, dict[str, Any]] = {}
    arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for b in dict.fromkeys(backends):
        res = _run_child(b, n, dim, k, repeats, seed, chunk, threads, device if b == "torch" else "cpu", timeout)
        if "error" not in res:
            arrays[b] = (res.pop("sims"), res.pop("indices"))
        results[b] = res
    doc: dict[str, Any] = {
        "n": n, "dim": dim, "k": k, "repeats": repeats, "seed": seed, "chunk": chunk, "threads": threads,
        "device": device,
        "method": "fresh spawn child per backend; peak_mib = ru_maxrss(after knn) - ru_maxrss(after inputs)",
        "backends": results,
        "environment": {"python": platform.python_version(), "machine": platform.machine(),
                        "cpu_count": os.cpu_count(), "numpy": np.__version__, "torch": _torch_version()},
    }
    if "faiss" in arrays and "torch" in arrays:
        f, t = results["faiss"], results["torch"]
        doc["ratio_torch_over_faiss"] = {
            "seconds": t["seconds"] / f["seconds"] if f["seconds"] > 0 else float("inf"),
            "peak_mib": t["peak_mib"] / f["peak_mib"] if f["peak_mib"] > 0 else float("inf"),
        }
        doc["agreement"] = {
            "recall_at_k": neighbour_recall(arrays["torch"][1], arrays["faiss"][1]),
            "max_abs_sim_diff": float(np.abs(arrays["faiss"][0] - arrays["torch"][0]).max()),
        }
    return doc


def _torch_version() -> str:
    try:
        import torch

        return torch.__version__
    except ImportError:  # pragma: no cover - torch is a dependency
        return "missing"


def format_bench_knn(doc: dict[str, Any]) -> str:
    """A plain-text table of a `bench_knn` result."""
    from tabulate import tabulate

    rows = []
    for name, r in doc["backends"].items():
        if "error" in r:
            rows.append([name, "-", "-", "-", r["error"]])
            continue
        note = r["device"]
        if "gpu_peak_mib" in r:
            note += f", GPU peak {r['gpu_peak_mib']:.0f} MiB"
        if name == "faiss":
            note += f", faiss {r.get('faiss_version', '?')}, {r.get('faiss_threads', '?')} threads"
        else:
            note += f", {r.get('torch_threads', '?')} threads"
        rows.append([name, f"{r['seconds']:.3f}", f"{r['peak_mib']:.1f}", f"{r['process_peak_mib']:.1f}", note])
    lines = [f"kNN benchmark: n={doc['n']:,} dim={doc['dim']} k={doc['k']} repeats={doc['repeats']} seed={doc['seed']}",
             tabulate(rows, headers=["backend", "seconds", "peak MiB (over inputs)", "process peak MiB", "notes"])]
    ratio = doc.get("ratio_torch_over_faiss")
    if ratio:
        lines.append(f"torch / faiss: {ratio['seconds']:.2f}× time, {ratio['peak_mib']:.2f}× peak memory")
    agreement = doc.get("agreement")
    if agreement:
        lines.append(f"agreement: recall@{doc['k']} of faiss vs torch = {agreement['recall_at_k']:.4f}, "
                     f"max |similarity difference| = {agreement['max_abs_sim_diff']:.2e}")
    lines.append(f"memory: {doc['method']}")
    return "\n".join(lines)
