"""CIFAR-10 and CIFAR-100 (Krizhevsky, 2009), read from the official "python version" archives.

Source and layout follow torchvision (torchvision/datasets/cifar.py): the archive
https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz extracts to `cifar-10-batches-py/`
(data_batch_1..5, test_batch, batches.meta) and cifar-100-python.tar.gz to `cifar-100-python/`
(train, test, meta). The URL, archive md5 and per-file md5s are taken from torchvision's class
attributes (`CIFAR10.url`, `.tgz_md5`, `.train_list`, `.test_list`, `.meta`), so a data root that
torchvision filled works here and vice versa. Image order is the files' order, which is also the
order CIFAR-N's human labels refer to.

Each batch is a Python-2 pickle of a dict: `data` is a uint8 (N, 3072) array whose rows hold the red,
green and blue 32x32 planes one after another; `labels` (CIFAR-10) or `fine_labels` (CIFAR-100) is
a list of ints. We unpickle with `echobench.data.safe_pickle` rather than `pickle.load`, so a tampered
file cannot run code even before its md5 is checked against a monkeypatched or stale spec.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from echobench.errors import EchobenchError
from echobench.data.safe_pickle import UnsafePickleError, safe_loads
from echobench.data.base import Dataset
from echobench.paths import DATA_ENV

# A download that stalls this long (per socket operation) is treated as "no network".
DOWNLOAD_TIMEOUT_S = 20.0

# Which dict key holds the labels; torchvision reads "labels" if present, else "fine_labels".
_LABEL_KEYS = {"cifar10": "labels", "cifar100": "fine_labels"}


@dataclass(frozen=True)
class CifarSpec:
    """Where one CIFAR variant comes from and what its files must hash to."""

    name: str  # "cifar10" | "cifar100"
    url: str  # the .tar.gz archive
    archive: str  # its file name
    archive_md5: str
    folder: str  # what the archive extracts to, under the data root
    train_files: tuple[tuple[str, str], ...]  # (file name, md5)
    test_files: tuple[tuple[str, str], ...]
    meta_file: str
    meta_md5: str
    names_key: str  # meta key of the class names
    labels_key: str  # batch key of the labels

    def all_files(self) -> list[tuple[str, str]]:
        return [*self.train_files, *self.test_files, (self.meta_file, self.meta_md5)]


def _spec(name: str) -> CifarSpec:
    """The official metadata for `name`, read from torchvision's dataset classes.

    One small function on purpose: tests monkeypatch it to point the md5s at fixture files.
    """
    from torchvision.datasets import CIFAR10, CIFAR100  # lazy: torchvision imports torch

    cls = {"cifar10": CIFAR10, "cifar100": CIFAR100}[name]
    return CifarSpec(
        name=name,
        url=cls.url,
        archive=cls.filename,
        archive_md5=cls.tgz_md5,
        folder=cls.base_folder,
        train_files=tuple((f, md5) for f, md5 in cls.train_list),
        test_files=tuple((f, md5) for f, md5 in cls.test_list),
        meta_file=cls.meta["filename"],
        meta_md5=cls.meta["md5"],
        names_key=cls.meta["key"],
        labels_key=_LABEL_KEYS[name],
    )


def load_cifar10(root: Path, *, download: bool = True) -> Dataset:
    """CIFAR-10: 50,000 train and 10,000 test 32x32 RGB images in 10 classes."""
    return _load("cifar10", Path(root), download=download)


def load_cifar100(root: Path, *, download: bool = True) -> Dataset:
    """CIFAR-100 with its 100 fine labels (the 20 coarse superclasses are not used)."""
    return _load("cifar100", Path(root), download=download)


def _load(name: str, root: Path, *, download: bool) -> Dataset:
    spec = _spec(name)
    folder = root / spec.folder
    _ensure_files(spec, root, download=download)
    for filename, md5 in spec.all_files():
        _check_md5(spec, folder / filename, md5)
    class_names = _read_class_names(folder / spec.meta_file, spec.names_key)
    train_images, train_labels = _read_batches(folder, spec.train_files, spec.labels_key, len(class_names))
    test_images, test_labels = _read_batches(folder, spec.test_files, spec.labels_key, len(class_names))
    return Dataset(name, class_names, train_images, train_labels, test_images, test_labels)


# --- getting the files -------------------------------------------------------------------------


def _missing(spec: CifarSpec, folder: Path) -> list[str]:
    return [f for f, _ in spec.all_files() if not (folder / f).is_file()]


def _ensure_files(spec: CifarSpec, root: Path, *, download: bool) -> None:
    """Download and extract the archive when a file is missing; raise if that is off or fails."""
    folder = root / spec.folder
    missing = _missing(spec, folder)
    if not missing:
        return
    reason = "downloading is turned off"
    if download:
        try:
            _download_archive(spec, root)
            reason = f"the archive was downloaded but does not contain {spec.folder}/{missing[0]}"
        # URLError and socket timeouts are OSErrors; torchvision raises RuntimeError when the
        # downloaded archive fails its md5; a cut-off download can leave an unreadable tar.
        except (OSError, RuntimeError, tarfile.TarError, EOFError) as exc:
            reason = f"the download failed ({type(exc).__name__}: {exc})"
        missing = _missing(spec, folder)
    if missing:
        raise _missing_error(spec, root, missing[0], reason)


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    # torchvision's downloader opens URLs without a timeout; without a default one, a machine
    # behind a silent firewall would hang instead of failing with a clear message.
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _download_archive(spec: CifarSpec, root: Path) -> None:
    """Fetch and unpack the official archive into `root` with torchvision's downloader (md5-checked)."""
    from torchvision.datasets import utils as tv_utils  # looked up at call time so tests can patch it

    with _socket_timeout(DOWNLOAD_TIMEOUT_S):
        tv_utils.download_and_extract_archive(
            spec.url, download_root=str(root), filename=spec.archive, md5=spec.archive_md5
        )


def _missing_error(spec: CifarSpec, root: Path, filename: str, reason: str) -> EchobenchError:
    return EchobenchError(
        f"{spec.name}: missing file {root / spec.folder / filename}, which comes from the archive "
        f"{spec.url}; {reason}. Download that archive and extract it so that the folder "
        f"{spec.folder}/ sits under the data root ({root}), or point echobench at a data root that "
        f"already holds it with --data-root DIR or by setting {DATA_ENV}=DIR."
    )


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)  # a checksum, not security (FIPS builds need the flag)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_md5(spec: CifarSpec, path: Path, expected: str) -> None:
    actual = _md5(path)
    if actual != expected:
        raise EchobenchError(
            f"{spec.name}: {path} is damaged or not the official file: its md5 is {actual}, expected "
            f"{expected} (torchvision's checksum). Delete the folder {path.parent} (and the archive "
            f"{spec.archive} next to it, if present) and load again to re-download it from {spec.url}, "
            "or extract a fresh copy of that archive there."
        )


# --- reading the files -------------------------------------------------------------------------


def _unpickle(path: Path) -> dict[Any, Any]:
    """One batch or meta dict; latin1 because they are Python-2 pickles (as torchvision reads them)."""
    try:
        entry = safe_loads(path.read_bytes(), encoding="latin1")
    except UnsafePickleError as exc:
        raise UnsafePickleError(f"{path}: {exc}") from None
    except Exception as exc:  # any unpickling failure means a damaged file
        raise EchobenchError(f"{path}: cannot be unpickled ({type(exc).__name__}: {exc}); delete it and re-download") from None
    if not isinstance(entry, dict):
        raise EchobenchError(f"{path}: expected a pickled dict, found {type(entry).__name__}; delete it and re-download")
    return entry


def _get(entry: dict[Any, Any], key: str, path: Path) -> Any:
    """entry[key] whether the pickle was read with str keys (latin1) or bytes keys."""
    for candidate in (key, key.encode("latin1")):
        if candidate in entry:
            return entry[candidate]
    raise EchobenchError(f"{path}: has no {key!r} entry (keys: {sorted(map(str, entry))}); delete it and re-download")


def _read_class_names(path: Path, key: str) -> list[str]:
    names = _get(_unpickle(path), key, path)
    return [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names]


def _read_batch(path: Path, labels_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, 32, 32, 3) uint8 images and (N,) int64 labels from one batch file."""
    entry = _unpickle(path)
    data = np.asarray(_get(entry, "data", path))
    labels = np.asarray(_get(entry, labels_key, path), dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.shape != (data.shape[0],):
        raise EchobenchError(
            f"{path}: expected uint8 data of shape (N, 3072) and N labels, found {data.dtype} {data.shape} "
            f"and {labels.shape[0] if labels.ndim else 0} labels; delete it and re-download"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise EchobenchError(f"{path}: labels outside 0..{num_classes - 1}; delete it and re-download")
    # Rows are channel planes (R, G, B), each 32x32 row-major: CHW per image, so NCHW -> NHWC.
    images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return images, labels


def _read_batches(
    folder: Path, files: tuple[tuple[str, str], ...], labels_key: str, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    parts = [_read_batch(folder / f, labels_key, num_classes) for f, _ in files]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
