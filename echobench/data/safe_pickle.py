"""Unpickle numpy arrays and plain containers without running arbitrary pickled code.

Why this exists: two data files echobench reads are pickles.

* The CIFAR-10/100 "python version" batches (https://www.cs.toronto.edu/~kriz/cifar.html) are
  Python-2 pickles of a dict holding a numpy uint8 array and lists; torchvision reads them with plain
  `pickle.load(f, encoding="latin1")` (torchvision/datasets/cifar.py).
* The CIFAR-N human label files (UCSC-REAL/cifar-10-100n, data/CIFAR-10_human.pt) are PyTorch zip
  archives whose `data.pkl` is a pickled dict of numpy int64 arrays. That pickle references numpy
  globals, so `torch.load(..., weights_only=True)` (the default since PyTorch 2.6) refuses it, and
  `weights_only=False` would be plain `pickle.load`.

Plain `pickle.load` calls whatever global a file names (`os.system`, `builtins.eval`, ...), so a
tampered download could run code. `SafeUnpickler` instead admits only the handful of globals that
rebuild numpy arrays (`_reconstruct`, `ndarray`, `dtype`, `scalar`) and bytes (`_codecs.encode`, which
protocol-2 pickles use for `bytes` objects); every other global is refused by name. Lists, dicts,
tuples, str, bytes, int and float need no global at all.

This mirrors the allow-list approach of the Python docs ("Restricting Globals",
https://docs.python.org/3/library/pickle.html#restricting-globals) and of torch's own
`weights_only` unpickler (torch/_weights_only_unpickler.py); it needs no torch import.
"""

from __future__ import annotations

import importlib
import io
import os
import pickle
import zipfile
from functools import lru_cache
from typing import Any, Callable

from echobench.errors import EchobenchError


class UnsafePickleError(EchobenchError, pickle.UnpicklingError):
    """A pickle asked for something outside the allow-list (a global or a persistent id)."""


def _multiarray() -> Any:
    """numpy's multiarray module: `numpy._core` since numpy 2 (and as a shim in 1.26), else `numpy.core`.

    Resolved here instead of importing the name the pickle spells, because importing `numpy.core`
    under numpy 2 emits a DeprecationWarning.
    """
    try:
        return importlib.import_module("numpy._core.multiarray")
    except ImportError:  # numpy < 1.26
        return importlib.import_module("numpy.core.multiarray")


@lru_cache(maxsize=1)
def _allowed_globals() -> dict[tuple[str, str], Callable[..., Any]]:
    """(module, name) as spelled in a pickle → the object it may load as."""
    import _codecs

    import numpy as np

    multiarray = _multiarray()
    allowed: dict[tuple[str, str], Callable[..., Any]] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _codecs.encode,
    }
    # numpy < 2 writes numpy.core.multiarray, numpy >= 2 writes numpy._core.multiarray; same objects.
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = multiarray._reconstruct
        allowed[(module, "scalar")] = multiarray.scalar
    return allowed


class SafeUnpickler(pickle.Unpickler):
    """A `pickle.Unpickler` that loads only numpy arrays, numpy scalars and plain containers."""

    def find_class(self, module: str, name: str) -> Any:
        allowed = _allowed_globals()
        if (module, name) not in allowed:
            raise UnsafePickleError(
                f"refused to unpickle the global {module}.{name}: only numpy arrays and plain "
                f"containers are allowed ({', '.join(sorted(f'{m}.{n}' for m, n in allowed))}). "
                "The file is not the expected data file, or it has been tampered with; "
                "delete it and fetch the original again"
            )
        return allowed[(module, name)]

    def persistent_load(self, pid: Any) -> Any:
        # Persistent ids are how torch.save points at tensor storages; the files we read hold numpy
        # arrays only, and rebuilding storages would need torch and its own (larger) allow-list.
        raise UnsafePickleError(
            f"refused a persistent id ({_short(pid)}): the pickle refers to torch tensor storages, "
            "but only numpy arrays are expected; save the labels as numpy arrays "
            "(e.g. torch.save({'clean_label': array, ...}, path) with np.ndarray values)"
        )


def _short(obj: Any, limit: int = 80) -> str:
    text = repr(obj)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def safe_loads(data: bytes, encoding: str = "ASCII") -> Any:
    """`pickle.loads` restricted to numpy arrays and plain containers (see the module docstring).

    `encoding` is how Python-2 `str` objects are decoded, as in `pickle.loads`; use "latin1" for the
    CIFAR batches (numpy needs latin1 to rebuild Python-2 arrays, as torchvision does).
    """
    return SafeUnpickler(io.BytesIO(data), encoding=encoding).load()


def read_torch_zip_pickle(path: str | os.PathLike) -> Any:
    """Unpickle the object inside a PyTorch zip archive (the `torch.save` format since PyTorch 1.6).

    The archive holds `<name>/data.pkl` (the pickled object), `<name>/version` and, for tensors,
    `<name>/data/<key>` storages that the pickle refers to by persistent id. We read `data.pkl` only
    and refuse persistent ids, so only archives of numpy arrays and plain containers load.
    Raises `EchobenchError` (or its subclass `UnsafePickleError`) naming the file on any problem.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            members = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
            if len(members) != 1:
                raise EchobenchError(
                    f"{path}: expected one data.pkl in this PyTorch zip archive, found {len(members)} "
                    f"({', '.join(members) or 'none'}); the file is not a torch.save archive of one object"
                )
            prefix = members[0][: -len("data.pkl")]
            # torch.save puts each tensor's storage at <name>/data/<key>; the pickle would need
            # torch globals and persistent ids to use them, which we never admit, so say so plainly.
            storages = [n for n in archive.namelist() if n.startswith(prefix + "data/")]
            if storages:
                raise UnsafePickleError(
                    f"{path}: this PyTorch archive holds {len(storages)} tensor storage(s) (persistent ids), "
                    "but only numpy arrays are read; save the values as numpy arrays "
                    "(torch.save({'key': np.ndarray, ...}, path)) instead of tensors"
                )
            data = archive.read(members[0])
    except zipfile.BadZipFile as exc:
        raise EchobenchError(
            f"{path}: not a PyTorch zip archive ({exc}); legacy (pre-1.6) torch files are not supported. "
            "Re-save it with torch.save (default zip format) or fetch the original file again"
        ) from None
    try:
        return safe_loads(data)
    except UnsafePickleError as exc:
        raise UnsafePickleError(f"{path}: {exc}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise EchobenchError(
            f"{path}: its data.pkl could not be unpickled ({type(exc).__name__}: {exc}); "
            "the file is damaged; delete it and fetch the original again"
        ) from None
