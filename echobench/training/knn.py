"""Cosine k-nearest neighbours of a feature matrix with itself, never holding an N×N matrix.

SimiFeat's official code (UCSC-REAL/SimiFeat `hoc.py` `count_knn_distribution` with `utils.py`
`cosDistance`) builds the full N×N cosine-distance matrix and calls `topk` on it: 50,000 CIFAR images
need a 10 GB float32 matrix. Here only a block of query rows is scored at a time.

Two backends give the same answer (ties aside):

- ``"faiss"``: `faiss.normalize_L2` on a float32 copy, an exact inner-product index (`IndexFlatIP`; a
  `GpuIndexFlatIP` when the installed faiss sees GPUs, `faiss.get_num_gpus() > 0`), searched for the
  k + 1 best of `chunk` queries at a time (cosine = inner product of L2-normalised rows).
  FAISS scores its own query and database blocks with BLAS, so its working memory is bounded too.
- ``"torch"``: rows L2-normalised (`F.normalize`), then for each block of `chunk` rows the (chunk, N)
  similarity block = rows @ allᵀ, the block's own diagonal set to −inf, `topk(k)`. The peak extra
  memory is one (chunk, N) block (default: 2²⁴ entries = 64 MiB of float32). Runs on the device of a torch input (GPU tensors stay on the GPU).
- ``"auto"``: faiss when it can be imported, else torch — except for a torch tensor on a GPU when the
  installed faiss has no GPU support (faiss-cpu): then torch, which keeps the work on the GPU.

Self exclusion: the torch path masks each row's own column, so a point is never its own neighbour. The
faiss path asks for k + 1 neighbours and drops the one whose index is the query's; if the query is not
among them (more than k exact duplicates of it), the (k + 1)-th is dropped instead. With exact duplicates,
which of the tied points are returned may differ between backends; similarities agree to float error.

Results: similarities (N, k) float32, descending per row, and indices (N, k) int64 — NumPy arrays for a
NumPy input, torch tensors (on the input's device) for a torch input.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from echobench.errors import EchobenchError

BACKENDS = ("auto", "faiss", "torch")
CHUNK_ELEMENTS = 1 << 24  # similarity entries per torch block (64 MiB of float32)
FAISS_QUERY_CHUNK = 16384  # queries per faiss search call
FAISS_MISSING = ("kNN backend 'faiss' needs the faiss package, which is not installed: "
                 "`pip install 'echobench[clip]'` (installs faiss-cpu), or use backend='torch'.")


def import_faiss():
    """The faiss module, or an `EchobenchError` saying how to install it."""
    try:
        import faiss  # noqa: PLC0415 (lazy: an optional dependency)
    except ImportError:
        raise EchobenchError(FAISS_MISSING) from None
    return faiss


def faiss_available() -> bool:
    try:
        import_faiss()
    except EchobenchError:
        return False
    return True


def faiss_gpus() -> int:
    """GPUs the installed faiss can use (0 for faiss-cpu or without faiss)."""
    try:
        faiss = import_faiss()
    except EchobenchError:
        return 0
    return int(faiss.get_num_gpus()) if hasattr(faiss, "get_num_gpus") else 0


def resolve_backend(backend: str, on_gpu: bool = False) -> str:
    """"faiss" or "torch" for a requested backend (`on_gpu`: the features are a CUDA tensor)."""
    if backend not in BACKENDS:
        raise EchobenchError(f"unknown kNN backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "auto":
        if not faiss_available() or (on_gpu and faiss_gpus() == 0):
            return "torch"
        return "faiss"
    if backend == "faiss":
        import_faiss()
    return backend


def default_chunk(n: int) -> int:
    """Rows per torch block so that a (chunk, n) float32 block holds at most `CHUNK_ELEMENTS` entries."""
    return max(1, min(n, CHUNK_ELEMENTS // max(n, 1)))


def knn(features: Any, k: int, *, backend: str = "auto", chunk: int | None = None):
    """The `k` most cosine-similar other rows of every row of `features` (N, D).

    Returns (similarities (N, k) float32, indices (N, k) int64), best first, each point excluded from
    its own list. `chunk` = query rows per block (torch default: 64 MiB blocks, `default_chunk`;
    faiss default `FAISS_QUERY_CHUNK`). See the module docstring for the backends.
    """
    import torch

    is_torch = isinstance(features, torch.Tensor)
    if not is_torch:
        features = np.asarray(features)
    if features.ndim != 2:
        raise EchobenchError(f"knn: features must be a 2-D (N, D) array, got shape {tuple(features.shape)}")
    n = int(features.shape[0])
    if not 1 <= k <= n - 1:
        raise EchobenchError(f"knn: k must lie in [1, N - 1] = [1, {n - 1}], got k={k}")
    if chunk is not None and chunk < 1:
        raise EchobenchError(f"knn: chunk must be a positive number of rows, got {chunk}")
    which = resolve_backend(backend, on_gpu=is_torch and features.device.type == "cuda")
    if which == "torch":
        x = features if is_torch else _as_tensor(features)
        sims, idx = _knn_torch(x, k, chunk or default_chunk(n))
        return (sims, idx) if is_torch else (sims.numpy(), idx.numpy())
    x = features.detach().float().cpu().numpy() if is_torch else features
    sims, idx = _knn_faiss(x, k, chunk or FAISS_QUERY_CHUNK)
    if is_torch:
        return torch.from_numpy(sims).to(features.device), torch.from_numpy(idx).to(features.device)
    return sims, idx


def _as_tensor(x: np.ndarray):
    """A tensor sharing `x`'s memory (read-only arrays too: the torch path never writes to its input)."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(np.ascontiguousarray(x))


def _knn_torch(x, k: int, chunk: int):
    import torch
    import torch.nn.functional as F

    f = F.normalize(x.float(), dim=1)
    n = f.shape[0]
    sims, idx = [], []
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        block = torch.mm(f[start:stop], f.t())  # (chunk, N): the only similarity matrix ever held
        rows = torch.arange(stop - start, device=f.device)
        block[rows, rows + start] = -float("inf")  # never its own neighbour
        top = block.topk(k, dim=1)
        sims.append(top.values)
        idx.append(top.indices)
        del block
    return torch.cat(sims).float(), torch.cat(idx).long()


def _faiss_index(faiss, dim: int):
    """(index, resources): an exact inner-product index on GPU 0 when faiss was built with GPUs and sees
    one (with its `StandardGpuResources`, which must outlive the index), else on the CPU (None)."""
    num_gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if num_gpus > 0 and hasattr(faiss, "StandardGpuResources"):
        resources = faiss.StandardGpuResources()
        return faiss.GpuIndexFlatIP(resources, dim), resources
    return faiss.IndexFlatIP(dim), None


def _knn_faiss(x: np.ndarray, k: int, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    faiss = import_faiss()
    f = np.array(x, dtype=np.float32, order="C", copy=True)  # normalize_L2 works in place
    faiss.normalize_L2(f)
    n, dim = f.shape
    index, _resources = _faiss_index(faiss, dim)  # _resources: kept alive until the search ends
    index.add(f)
    want = min(k + 1, n)
    sims = np.empty((n, k), dtype=np.float32)
    idx = np.empty((n, k), dtype=np.int64)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        s, i = index.search(f[start:stop], want)
        s, i = _drop_self(s, i, np.arange(start, stop, dtype=np.int64), k)
        sims[start:stop], idx[start:stop] = s, i
    return sims, idx


def _drop_self(sims: np.ndarray, idx: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """From k + 1 candidates per row, the k that are not the query itself (else the first k)."""
    is_self = idx == query[:, None]
    has_self = is_self.any(axis=1)
    drop = np.where(has_self, is_self.argmax(axis=1), idx.shape[1] - 1)
    keep = np.ones_like(is_self)
    keep[np.arange(len(drop)), drop] = False
    return sims[keep].reshape(-1, k), idx[keep].reshape(-1, k).astype(np.int64, copy=False)
