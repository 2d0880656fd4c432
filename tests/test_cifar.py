"""CIFAR-10/100 loaders against small folders written in the official format (no downloads)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pickle
import urllib.error
from pathlib import Path

import numpy as np
import pytest

from echobench.data import cifar
from echobench.errors import EchobenchError
from echobench.data.safe_pickle import UnsafePickleError, read_torch_zip_pickle, safe_loads

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


# --- fixtures: tiny CIFAR folders --------------------------------------------------------------


def _key(key: str, as_bytes: bool):
    return key.encode() if as_bytes else key


def _write_batch(path: Path, data: np.ndarray, labels_key: str, labels: list[int], *, as_bytes: bool = True) -> None:
    """A batch dict pickled like the real files (bytes keys as Python 3 reads them with encoding='bytes')."""
    entry = {
        _key("batch_label", as_bytes): path.name.encode(),
        _key(labels_key, as_bytes): labels,
        _key("data", as_bytes): data,
        _key("filenames", as_bytes): [f"img_{i}.png".encode() for i in range(len(labels))],
    }
    path.write_bytes(pickle.dumps(entry, protocol=2))


def _random_part(rng: np.random.Generator, n: int, num_classes: int) -> tuple[np.ndarray, list[int]]:
    return rng.integers(0, 256, size=(n, 3072), dtype=np.uint8), rng.integers(0, num_classes, size=n).tolist()


def write_cifar(root: Path, name: str, *, as_bytes: bool = True, seed: int = 0) -> dict[str, tuple[np.ndarray, list[int]]]:
    """Write `name`'s folder under root (train: 5x20 or 1x100 images, test: 10); return what was written."""
    rng = np.random.default_rng(seed)
    spec = cifar._spec(name)
    folder = root / spec.folder
    folder.mkdir(parents=True)
    num_classes = 10 if name == "cifar10" else 100
    written = {}
    per_file = 100 // len(spec.train_files)
    for filename, _ in spec.train_files:
        written[filename] = _random_part(rng, per_file, num_classes)
    for filename, _ in spec.test_files:
        written[filename] = _random_part(rng, 10, num_classes)
    # A known pixel: image 0, row 1, column 2 is (R, G, B) = (255, 7, 9). Rows of `data` hold the R,
    # G and B planes (1024 values each, row-major), so the pixel's red value sits at 0*1024 + 1*32 + 2.
    first = written[spec.train_files[0][0]][0]
    first[0, [0 * 1024 + 34, 1 * 1024 + 34, 2 * 1024 + 34]] = [255, 7, 9]
    for filename, (data, labels) in written.items():
        _write_batch(folder / filename, data, spec.labels_key, labels, as_bytes=as_bytes)
    names = CIFAR10_NAMES if name == "cifar10" else [f"class_{i}" for i in range(100)]
    meta = {_key(spec.names_key, as_bytes): [n.encode() if as_bytes else n for n in names]}
    (folder / spec.meta_file).write_bytes(pickle.dumps(meta, protocol=2))
    return written


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def patch_spec(monkeypatch, root: Path, name: str) -> None:
    """Point the spec's per-file md5s at the files now in root (the real ones hash differently)."""
    original = cifar._spec(name)
    folder = root / original.folder

    def with_md5s(files):
        return tuple((f, _md5(folder / f)) for f, _ in files)

    patched = dataclasses.replace(
        original,
        train_files=with_md5s(original.train_files),
        test_files=with_md5s(original.test_files),
        meta_md5=_md5(folder / original.meta_file),
    )
    monkeypatch.setattr(cifar, "_spec", lambda n: patched if n == name else original)


def _nhwc(data: np.ndarray) -> np.ndarray:
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


@pytest.fixture
def no_network(monkeypatch):
    """Make torchvision's downloader fail as it does without network; record its calls."""
    from torchvision.datasets import utils as tv_utils

    calls = []

    def unreachable(url, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", unreachable)
    return calls


# --- the official metadata ---------------------------------------------------------------------


def test_spec_comes_from_torchvision():
    spec = cifar._spec("cifar10")
    assert spec.url == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    assert spec.folder == "cifar-10-batches-py"
    assert [f for f, _ in spec.train_files] == [f"data_batch_{i}" for i in range(1, 6)]
    assert spec.test_files[0][0] == "test_batch" and spec.meta_file == "batches.meta"
    spec100 = cifar._spec("cifar100")
    assert spec100.folder == "cifar-100-python" and spec100.labels_key == "fine_labels"
    assert spec100.names_key == "fine_label_names"


# --- round trips -------------------------------------------------------------------------------


@pytest.mark.parametrize("as_bytes", [True, False], ids=["bytes-keys", "str-keys"])
def test_cifar10_round_trip(tmp_path, monkeypatch, as_bytes):
    written = write_cifar(tmp_path, "cifar10", as_bytes=as_bytes)
    patch_spec(monkeypatch, tmp_path, "cifar10")
    ds = cifar.load_cifar10(tmp_path, download=False)

    assert ds.name == "cifar10" and ds.class_names == CIFAR10_NAMES and ds.num_classes == 10
    train = [written[f"data_batch_{i}"] for i in range(1, 6)]
    np.testing.assert_array_equal(ds.train_images, _nhwc(np.concatenate([d for d, _ in train])))
    np.testing.assert_array_equal(ds.train_labels, np.concatenate([l for _, l in train]))
    np.testing.assert_array_equal(ds.test_images, _nhwc(written["test_batch"][0]))
    np.testing.assert_array_equal(ds.test_labels, written["test_batch"][1])
    assert ds.train_images.shape == (100, 32, 32, 3) and ds.test_images.shape == (10, 32, 32, 3)
    assert ds.train_images.dtype == np.uint8 and ds.train_labels.dtype == np.int64
    assert ds.train_images[0, 1, 2].tolist() == [255, 7, 9]  # NHWC: red channel first


def test_cifar100_round_trip(tmp_path, monkeypatch):
    written = write_cifar(tmp_path, "cifar100")
    patch_spec(monkeypatch, tmp_path, "cifar100")
    ds = cifar.load_cifar100(tmp_path, download=False)

    assert ds.name == "cifar100" and ds.num_classes == 100 and ds.class_names[42] == "class_42"
    np.testing.assert_array_equal(ds.train_images, _nhwc(written["train"][0]))
    np.testing.assert_array_equal(ds.train_labels, written["train"][1])
    np.testing.assert_array_equal(ds.test_images, _nhwc(written["test"][0]))
    np.testing.assert_array_equal(ds.test_labels, written["test"][1])
    assert ds.train_images[0, 1, 2].tolist() == [255, 7, 9]


def test_download_path_extracts_then_loads(tmp_path, monkeypatch):
    """A successful download (simulated: the 'archive' writes the folder) is followed by loading."""
    staging = tmp_path / "staging"
    write_cifar(staging, "cifar10")
    patch_spec(monkeypatch, staging, "cifar10")
    from torchvision.datasets import utils as tv_utils

    def fake_download(url, download_root, filename=None, md5=None, **kwargs):
        assert url == cifar._spec("cifar10").url and filename == "cifar-10-python.tar.gz"
        os.rename(staging / "cifar-10-batches-py", Path(download_root) / "cifar-10-batches-py")

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", fake_download)
    root = tmp_path / "data"
    root.mkdir()
    assert cifar.load_cifar10(root).train_images.shape == (100, 32, 32, 3)


# --- failures ----------------------------------------------------------------------------------


def test_tampered_file_fails_integrity(tmp_path, monkeypatch):
    write_cifar(tmp_path, "cifar10")
    patch_spec(monkeypatch, tmp_path, "cifar10")
    path = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    expected = _md5(path)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))

    with pytest.raises(EchobenchError) as info:
        cifar.load_cifar10(tmp_path, download=False)
    message = str(info.value)
    assert "data_batch_3" in message and expected in message and _md5(path) in message
    assert "md5" in message and "re-download" in message


def test_real_spec_rejects_fixture_files(tmp_path):
    """Without the patched md5s, fixture files fail torchvision's checksums."""
    write_cifar(tmp_path, "cifar10")
    with pytest.raises(EchobenchError, match="c99cafc152244af753f735de768cd75f"):
        cifar.load_cifar10(tmp_path, download=False)


@pytest.mark.parametrize("name, loader, first_file", [
    ("cifar10", cifar.load_cifar10, "data_batch_1"),
    ("cifar100", cifar.load_cifar100, "train"),
])
def test_missing_folder_without_download(tmp_path, no_network, name, loader, first_file):
    with pytest.raises(EchobenchError) as info:
        loader(tmp_path, download=False)
    message = str(info.value)
    spec = cifar._spec(name)
    assert str(tmp_path / spec.folder / first_file) in message
    assert spec.url in message and "--data-root" in message and "ECHOBENCH_DATA" in message
    assert "turned off" in message
    assert no_network == []  # download=False never touches the network


def test_missing_folder_with_unreachable_network(tmp_path, no_network):
    with pytest.raises(EchobenchError) as info:
        cifar.load_cifar10(tmp_path, download=True)
    message = str(info.value)
    assert no_network == [cifar._spec("cifar10").url]
    assert "data_batch_1" in message and "--data-root" in message
    assert "download failed" in message and "URLError" in message


def test_one_missing_file_is_named(tmp_path, monkeypatch, no_network):
    write_cifar(tmp_path, "cifar10")
    patch_spec(monkeypatch, tmp_path, "cifar10")
    (tmp_path / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(EchobenchError, match=r"missing file .*test_batch"):
        cifar.load_cifar10(tmp_path, download=False)


def test_download_restores_socket_timeout(tmp_path, no_network):
    import socket

    before = socket.getdefaulttimeout()
    with pytest.raises(EchobenchError):
        cifar.load_cifar10(tmp_path)
    assert socket.getdefaulttimeout() == before


# --- the safe unpickler ------------------------------------------------------------------------


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_safe_pickle_refuses_forbidden_global(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"data": _Evil(marker)}, protocol=2)
    with pytest.raises(UnsafePickleError) as info:
        safe_loads(payload)
    assert isinstance(info.value, EchobenchError) and isinstance(info.value, pickle.UnpicklingError)
    assert "system" in str(info.value)  # names the refused global (posix.system / nt.system)
    assert not marker.exists()


def test_cifar_batch_with_forbidden_global_is_refused(tmp_path, monkeypatch):
    write_cifar(tmp_path, "cifar10")
    marker = tmp_path / "pwned"
    evil = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    evil.write_bytes(pickle.dumps({b"data": _Evil(marker)}, protocol=2))
    patch_spec(monkeypatch, tmp_path, "cifar10")  # md5s now "match", so only the unpickler stands guard
    with pytest.raises(EchobenchError, match=r"data_batch_2.*system"):
        cifar.load_cifar10(tmp_path, download=False)
    assert not marker.exists()


def test_safe_pickle_reads_numpy1_spelling():
    """Pickles written by numpy < 2 (e.g. the CIFAR-N files) name numpy.core.multiarray."""
    array = np.arange(6, dtype=np.int64).reshape(2, 3)
    payload = pickle.dumps({"a": array, "s": np.float64(1.5)}, protocol=2)
    old = payload.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert old != payload
    for data in (payload, old):
        loaded = safe_loads(data)
        np.testing.assert_array_equal(loaded["a"], array)
        assert loaded["s"] == 1.5


def test_torch_zip_refuses_tensor_storages(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "tensors.pt"
    torch.save({"clean_label": torch.arange(3)}, path)
    with pytest.raises(UnsafePickleError, match="tensor storage"):
        read_torch_zip_pickle(path)


def test_safe_pickle_refuses_persistent_ids():
    class WithPid(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", 0) if isinstance(obj, bytearray) else None

    buffer = io.BytesIO()
    WithPid(buffer, protocol=2).dump({"x": bytearray(b"abc")})
    with pytest.raises(UnsafePickleError, match="persistent id"):
        safe_loads(buffer.getvalue())


def test_torch_zip_reads_numpy_dict(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "labels.pt"
    torch.save({"clean_label": np.arange(4, dtype=np.int64)}, path)
    np.testing.assert_array_equal(read_torch_zip_pickle(path)["clean_label"], np.arange(4))


def test_not_a_zip_is_an_echobench_error(tmp_path):
    path = tmp_path / "legacy.pt"
    path.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(EchobenchError, match="not a PyTorch zip archive"):
        read_torch_zip_pickle(path)
