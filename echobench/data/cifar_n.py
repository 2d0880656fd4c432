"""CIFAR-10N and CIFAR-100N: real human labels for the CIFAR training images.

Source: Wei et al., "Learning with Noisy Labels Revisited: A Study Using Real-World Human
Annotations", ICLR 2022; files from the repository UCSC-REAL/cifar-10-100n, folder `data/`
(https://github.com/UCSC-REAL/cifar-10-100n), licence CC BY-NC 4.0. We fetch them from there (or
read a path the user gives); we do not ship them.

Each file is a PyTorch zip archive (`torch.save`) of a dict of numpy int64 arrays of shape (50000,),
in the image order of torchvision's CIFAR training set:
  CIFAR-10_human.pt:  clean_label, aggre_label, worse_label, random_label1/2/3
  CIFAR-100_human.pt: clean_label, noisy_label, clean_coarse_label, noisy_coarse_label

Why `echobench.data.safe_pickle`: the archive's data.pkl references numpy globals
(numpy.core.multiarray._reconstruct, numpy.ndarray, numpy.dtype), so `torch.load` with its default
`weights_only=True` (PyTorch >= 2.6) refuses the file, and `weights_only=False` is plain pickle, which
would execute any code a tampered file names. Our allow-list unpickler reads exactly these globals
and nothing else, and needs no torch.

Published noise rates (share of labels that differ from clean_label, from the paper / repository):
aggre 9.03% (the released file gives 9.01%), random1 17.23%, random2 18.12%, random3 17.64%,
worst 40.21%; CIFAR-100N noisy 40.20%.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from echobench.errors import EchobenchError
from echobench.files import create_temporary
from echobench.data.safe_pickle import read_torch_zip_pickle
from echobench.data import cifar
from echobench.data.base import Dataset
from echobench.paths import DATA_ENV, data_root

NUM_TRAIN = 50_000
DOWNLOAD_TIMEOUT_S = 20.0
SUBDIR = "cifar-n"  # under the data root
_BASE_URL = "https://github.com/UCSC-REAL/cifar-10-100n/raw/main/data/"

# Label-set name (as echobench calls it) -> key in the file.
LABEL_SETS: dict[str, dict[str, str]] = {
    "cifar10n": {
        "aggre": "aggre_label",
        "random1": "random_label1",
        "random2": "random_label2",
        "random3": "random_label3",
        "worst": "worse_label",
    },
    "cifar100n": {"noisy": "noisy_label"},
}


@dataclass(frozen=True)
class HumanLabelFile:
    """One official CIFAR-N file: where it comes from, what it must hash to, what it must hold."""

    which: str  # "cifar10n" | "cifar100n"
    filename: str
    size: int  # bytes
    sha256: str
    required: dict[str, int]  # key -> number of classes its labels range over

    @property
    def url(self) -> str:
        return _BASE_URL + self.filename


# Sizes and sha256 of the files in UCSC-REAL/cifar-10-100n data/ (main branch, the released
# version).
FILES: dict[str, HumanLabelFile] = {
    "cifar10n": HumanLabelFile(
        "cifar10n",
        "CIFAR-10_human.pt",
        2_401_007,
        "873e69c39cb9b5e97fb6bae2d60bb59b38a5cbc31d2b868f7903dcb2b9dd2310",
        {k: 10 for k in ("clean_label", "aggre_label", "worse_label", "random_label1", "random_label2", "random_label3")},
    ),
    "cifar100n": HumanLabelFile(
        "cifar100n",
        "CIFAR-100_human.pt",
        1_000_959,
        "bd2d80409754d420292d622e15e25248ba21e37d27429efac49c8da723f44394",
        {"clean_label": 100, "noisy_label": 100, "clean_coarse_label": 20, "noisy_coarse_label": 20},
    ),
}


def _file_spec(which: str) -> HumanLabelFile:
    if which not in FILES:
        raise EchobenchError(f"unknown CIFAR-N label file {which!r}; choose one of {', '.join(FILES)}")
    return FILES[which]


# --- public API --------------------------------------------------------------------------------


def read_human_labels(
    which: str,
    *,
    labels_file: Path | None = None,
    root: Path | None = None,
    download: bool = True,
    verify: bool = True,
) -> dict[str, np.ndarray]:
    """{"clean": clean_label, <label-set name>: labels, ...}, each int64 of shape (50000,).

    With `labels_file`, read that file (never downloaded). Otherwise use `root/cifar-n/<filename>`
    (root defaults to `data_root()`), downloading it from UCSC-REAL/cifar-10-100n when missing.
    `verify=False` skips only the byte-size and sha256 checks, for label files a user made
    themselves; keys, shapes and label ranges are always checked.
    """
    spec = _file_spec(which)
    path = _locate(spec, labels_file=labels_file, root=root, download=download)
    if verify:
        _check_size(spec, path)
        _check_sha256(spec, path)
    content = _read(spec, path)
    _check_keys(spec, path, content)
    arrays = {key: _check_array(spec, path, key, content[key]) for key in spec.required}
    return {"clean": arrays["clean_label"], **{name: arrays[key] for name, key in LABEL_SETS[which].items()}}


def load_cifar10n(
    root: Path, *, labels_file: Path | None = None, download: bool = True, verify: bool = True
) -> Dataset:
    """CIFAR-10 with the CIFAR-10N human label sets in `extras["human_labels"]` (aggre, random1-3, worst)."""
    return _load("cifar10n", cifar.load_cifar10, Path(root), labels_file, download, verify)


def load_cifar100n(
    root: Path, *, labels_file: Path | None = None, download: bool = True, verify: bool = True
) -> Dataset:
    """CIFAR-100 (fine labels) with the CIFAR-100N human label set in `extras["human_labels"]` (noisy)."""
    return _load("cifar100n", cifar.load_cifar100, Path(root), labels_file, download, verify)


def check_clean_labels(which: str, clean: np.ndarray, train_labels: np.ndarray, *, source: str | os.PathLike) -> None:
    """Raise unless the file's clean_label equals the CIFAR training labels, image by image.

    CIFAR-N labels are indexed by image position; if clean_label disagrees, the file belongs to the
    other CIFAR, or the images come in another order, and every human label would land on the wrong
    image.
    """
    base = "CIFAR-10" if which == "cifar10n" else "CIFAR-100 (fine labels)"
    if clean.shape != train_labels.shape:
        raise EchobenchError(
            f"{source}: clean_label has {clean.shape[0]} entries but the {base} training set has "
            f"{train_labels.shape[0]} images; the label file does not belong to these images. "
            f"Use the official {FILES[which].filename} from {FILES[which].url}."
        )
    wrong = np.flatnonzero(clean != train_labels)
    if wrong.size:
        i = int(wrong[0])
        raise EchobenchError(
            f"{source}: clean_label disagrees with the {base} training labels at {wrong.size} of "
            f"{clean.size} images (first at image {i}: {int(clean[i])} vs {int(train_labels[i])}); the label "
            f"file does not belong to these images (the other CIFAR's file, or a differently ordered "
            f"copy of the images). Use the official {FILES[which].filename} from {FILES[which].url} "
            "together with torchvision's CIFAR python-version files."
        )


# --- loading -----------------------------------------------------------------------------------


def _load(which: str, load_images, root: Path, labels_file: Path | None, download: bool, verify: bool) -> Dataset:
    # Labels first: the file is small, so problems with it surface before 180 MB of images load.
    labels = read_human_labels(which, labels_file=labels_file, root=root, download=download, verify=verify)
    base = load_images(root, download=download)
    source = labels_file if labels_file is not None else root / SUBDIR / FILES[which].filename
    check_clean_labels(which, labels["clean"], base.train_labels, source=source)
    human = {name: labels[name] for name in LABEL_SETS[which]}
    extras = {**base.extras, "human_labels": human, "human_labels_file": str(source)}
    return dataclasses.replace(base, name=which, extras=extras)


def _locate(spec: HumanLabelFile, *, labels_file: Path | None, root: Path | None, download: bool) -> Path:
    """The path to read, downloading the official file into the data root when it is missing."""
    if labels_file is not None:
        path = Path(labels_file).expanduser()
        if not path.is_file():
            raise EchobenchError(
                f"CIFAR-N labels file {path} (given with --labels-file) does not exist. Pass the path of "
                f"{spec.filename}, which comes from {spec.url}."
            )
        return path
    path = (Path(root) if root is not None else data_root()) / SUBDIR / spec.filename
    if path.is_file():
        return path
    reason = "downloading is turned off"
    if download:
        try:
            _download(spec, path)
            return path
        # URLError, HTTPError and socket timeouts are all OSErrors.
        except OSError as exc:
            reason = f"the download failed ({type(exc).__name__}: {exc})"
    raise EchobenchError(
        f"CIFAR-N labels file {path} is missing and {reason}. It comes from {spec.url}: download it "
        f"by hand to that path, or pass its location with --labels-file PATH, or choose a data root that holds "
        f"{SUBDIR}/{spec.filename} with --data-root DIR (or {DATA_ENV}=DIR)."
    )


def _download(spec: HumanLabelFile, path: Path) -> None:
    """Fetch the official file to `path`: to a temporary name beside it, renamed only once its
    size and sha256 match, so an interrupted or wrong download never sits at `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = create_temporary(path)
    try:
        digest, size = hashlib.sha256(), 0
        request = urllib.request.Request(spec.url, headers={"User-Agent": "echobench"})
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response:
            for chunk in iter(lambda: response.read(1 << 16), b""):
                out.write(chunk)
                digest.update(chunk)
                size += len(chunk)
        if size != spec.size or digest.hexdigest() != spec.sha256:
            raise EchobenchError(
                f"downloaded {spec.url} but got {size} bytes with sha256 {digest.hexdigest()}, expected "
                f"{spec.size} bytes with sha256 {spec.sha256}; the file at that address has changed or the "
                f"download was altered. Nothing was saved. Get the original {spec.filename} and pass it "
                "with --labels-file PATH."
            )
        os.replace(tmp_name, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)


# --- checks, in the order they run -------------------------------------------------------------


def _check_size(spec: HumanLabelFile, path: Path) -> None:
    size = path.stat().st_size
    if size != spec.size:
        raise EchobenchError(
            f"CIFAR-N labels file {path} has {size} bytes, but the official {spec.filename} has "
            f"{spec.size} bytes: it is truncated or another file. Delete it and load again to download "
            f"it from {spec.url}, or, for a label file you made yourself, turn verification off "
            "(verify=False)."
        )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_sha256(spec: HumanLabelFile, path: Path) -> None:
    actual = _sha256(path)
    if actual != spec.sha256:
        raise EchobenchError(
            f"CIFAR-N labels file {path} has sha256 {actual}, but the official {spec.filename} has "
            f"{spec.sha256}: it is damaged or modified. Delete it and load again to download it from "
            f"{spec.url}, or, for a label file you made yourself, turn verification off (verify=False)."
        )


def _read(spec: HumanLabelFile, path: Path) -> dict:
    content = read_torch_zip_pickle(path)  # raises EchobenchError naming the file
    if not isinstance(content, dict):
        raise EchobenchError(
            f"CIFAR-N labels file {path} holds a {type(content).__name__}, expected a dict of label "
            f"arrays like the official {spec.filename} ({spec.url})."
        )
    return content


def _check_keys(spec: HumanLabelFile, path: Path, content: dict) -> None:
    missing = [key for key in spec.required if key not in content]
    if missing:
        raise EchobenchError(
            f"CIFAR-N labels file {path} lacks the keys {', '.join(missing)} (it has "
            f"{', '.join(map(str, content)) or 'none'}); a {spec.which} label file needs "
            f"{', '.join(spec.required)}, as in the official {spec.filename} ({spec.url})."
        )


def _check_array(spec: HumanLabelFile, path: Path, key: str, value: object) -> np.ndarray:
    """`value` as int64 (50000,), after checking shape, integer type and label range."""
    array = np.asarray(value)
    if array.shape != (NUM_TRAIN,) or not np.issubdtype(array.dtype, np.integer):
        raise EchobenchError(
            f"CIFAR-N labels file {path}: {key} is {array.dtype} of shape {array.shape}, expected integer "
            f"labels of shape ({NUM_TRAIN},), one per CIFAR training image in torchvision's order."
        )
    num_classes = spec.required[key]
    if array.min() < 0 or array.max() >= num_classes:
        raise EchobenchError(
            f"CIFAR-N labels file {path}: {key} has labels from {int(array.min())} to {int(array.max())}, "
            f"expected 0..{num_classes - 1}; is this the file for the other CIFAR?"
        )
    return array.astype(np.int64)
