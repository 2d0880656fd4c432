"""echobench.training.knn: cosine kNN without an N×N matrix, faiss and torch backends."""

import builtins

import numpy as np
import pytest
import torch

from echobench.training import knn as knn_module
from echobench.errors import EchobenchError
from echobench.training.knn import knn


def brute_force(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference: the full cosine matrix in float64, diagonal excluded."""
    f = x.astype(np.float64)
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    sim = f @ f.T
    np.fill_diagonal(sim, -np.inf)
    idx = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sim, idx, axis=1), idx


def features(n=300, d=12, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def same_sets(a: np.ndarray, b: np.ndarray) -> bool:
    return np.array_equal(np.sort(a, axis=1), np.sort(b, axis=1))


BACKENDS = ["torch", pytest.param("faiss", marks=pytest.mark.skipif(not knn_module.faiss_available(), reason="faiss not installed"))]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("chunk", [None, 7, 1000])
def test_matches_brute_force(backend, chunk):
    x = features()
    ref_s, ref_i = brute_force(x, 5)
    sims, idx = knn(x, 5, backend=backend, chunk=chunk)
    assert sims.shape == (300, 5) and idx.shape == (300, 5)
    assert sims.dtype == np.float32 and idx.dtype == np.int64
    assert same_sets(idx, ref_i)
    np.testing.assert_allclose(sims, ref_s, atol=1e-5)
    assert np.all(np.diff(sims, axis=1) <= 1e-6)  # best first
    assert not np.any(idx == np.arange(300)[:, None])  # never its own neighbour


@pytest.mark.parametrize("backend", BACKENDS)
def test_self_excluded_even_when_it_ties_with_duplicates(backend):
    x = features(50, 6)
    x[10] = x[20] = x[30]  # three identical points: each one's best neighbours are the other two
    sims, idx = knn(x, 3, backend=backend)
    for i in (10, 20, 30):
        assert i not in idx[i]
        assert set(idx[i, :2]) == {10, 20, 30} - {i}
        np.testing.assert_allclose(sims[i, :2], 1.0, atol=1e-5)


def test_scale_invariant_and_torch_input_stays_torch():
    x = features(80, 8)
    scaled = x * np.random.default_rng(1).uniform(0.1, 10, size=(80, 1)).astype(np.float32)
    s1, i1 = knn(x, 4, backend="torch")
    s2, i2 = knn(torch.from_numpy(scaled), 4, backend="torch", chunk=9)
    assert isinstance(s2, torch.Tensor) and s2.dtype == torch.float32 and i2.dtype == torch.int64
    assert same_sets(i1, i2.numpy())
    np.testing.assert_allclose(s1, s2.numpy(), atol=1e-5)


@pytest.mark.skipif(not knn_module.faiss_available(), reason="faiss not installed")
def test_faiss_and_torch_agree_with_chunks():
    x = features(1000, 32, seed=3)
    sf, i_f = knn(x, 10, backend="faiss", chunk=64)
    st, it = knn(x, 10, backend="torch", chunk=13)
    assert same_sets(i_f, it)
    np.testing.assert_allclose(sf, st, atol=1e-5)
    sf_t, if_t = knn(torch.from_numpy(x), 10, backend="faiss")
    assert isinstance(sf_t, torch.Tensor) and np.array_equal(if_t.numpy(), i_f)


def test_faiss_gpu_index_used_when_faiss_sees_a_gpu(monkeypatch):
    faiss = pytest.importorskip("faiss")
    built = []

    def fake_gpu_index(resources, dim):  # a CPU index standing in for GpuIndexFlatIP
        built.append((resources, dim))
        return faiss.IndexFlatIP(dim)

    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1, raising=False)
    monkeypatch.setattr(faiss, "StandardGpuResources", lambda: "resources", raising=False)
    monkeypatch.setattr(faiss, "GpuIndexFlatIP", fake_gpu_index, raising=False)
    x = features(200, 8)
    sims, idx = knn(x, 4, backend="faiss", chunk=50)
    assert built == [("resources", 8)]
    assert same_sets(idx, brute_force(x, 4)[1])


@pytest.mark.skipif(not knn_module.faiss_available(), reason="faiss not installed")
def test_auto_backend_choice(monkeypatch):
    assert knn_module.resolve_backend("auto") == "faiss"
    monkeypatch.setattr(knn_module, "faiss_gpus", lambda: 0)
    assert knn_module.resolve_backend("auto", on_gpu=True) == "torch"  # CUDA tensors stay on the GPU
    monkeypatch.setattr(knn_module, "faiss_gpus", lambda: 1)
    assert knn_module.resolve_backend("auto", on_gpu=True) == "faiss"


def test_read_only_input():
    x = features(30, 4)
    x.flags.writeable = False
    sims, idx = knn(x, 3, backend="torch")
    assert same_sets(idx, brute_force(x, 3)[1])


def test_torch_path_never_builds_an_n_by_n_matrix(monkeypatch):
    n, chunk = 120, 7
    shapes = []
    real_mm = torch.mm

    def spy(a, b, *args, **kwargs):
        out = real_mm(a, b, *args, **kwargs)
        shapes.append(tuple(out.shape))
        return out

    monkeypatch.setattr(torch, "mm", spy)
    sims, idx = knn(features(n, 5), 3, backend="torch", chunk=chunk)
    assert shapes, "the torch path should score blocks with torch.mm"
    assert max(s[0] for s in shapes) <= chunk and all(s[1] == n for s in shapes)
    ref_s, ref_i = brute_force(features(n, 5), 3)
    assert same_sets(idx, ref_i)


def test_default_chunk_bounds_the_block():
    assert knn_module.default_chunk(50_000) * 50_000 <= knn_module.CHUNK_ELEMENTS
    assert knn_module.default_chunk(10) == 10


def test_missing_faiss(monkeypatch):
    real_import = builtins.__import__

    def no_faiss(name, *args, **kwargs):
        if name == "faiss" or name.startswith("faiss."):
            raise ImportError("No module named 'faiss'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_faiss)
    with pytest.raises(EchobenchError, match=r"pip install 'echobench\[clip\]'"):
        knn(features(20, 4), 3, backend="faiss")
    sims, idx = knn(features(20, 4), 3, backend="auto")  # falls back to torch
    assert idx.shape == (20, 3)
    assert knn_module.resolve_backend("auto") == "torch"


@pytest.mark.parametrize("k", [0, 20])
def test_bad_k(k):
    with pytest.raises(EchobenchError, match="k must lie"):
        knn(features(20, 4), k, backend="torch")


def test_bad_backend():
    with pytest.raises(EchobenchError, match="unknown kNN backend"):
        knn(features(20, 4), 3, backend="annoy")
