"""Files written atomically: to a temporary name in the same directory, flushed, fsynced, then renamed
over the target, so a reader (or a process killed with SIGKILL) never sees half a file.

Modes: the temporary file is created with mode 0666 filtered by the process's umask, like any file
`open(path, "w")` creates (not `tempfile.mkstemp`'s 0600), so a colleague in the same group can read
the results and caches this writes. `atomic_create_*` publishes a complete file under a name that must
not exist yet (a hard link, which fails when the name is taken): of two processes racing to create
it, exactly one wins. A failure (a full disk, a read-only folder) removes the temporary file, leaves
the target as it was, and raises an `OSError` that names the target.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path
from typing import Any, BinaryIO, Callable


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def create_temporary(path: Path) -> tuple[int, Path]:
    """A new hidden file beside `path`, open for writing (fd, its path), with mode 0666 & ~umask: what
    `open` gives, where `tempfile.mkstemp` would give 0600, unreadable by a group sharing the files."""
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path}")  # 100 collisions of 32 random bits


def _write_temporary(path: Path, write: Callable[[BinaryIO], None]) -> Path:
    """A complete, fsynced file beside `path` holding what `write(file)` wrote."""
    fd, tmp = create_temporary(path)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return tmp


def _naming(path: Path, exc: OSError) -> OSError:
    """`exc` again (same errno, so the same OSError subclass) with the target's path in its message."""
    return OSError(exc.errno, exc.strerror or str(exc), str(path)) if exc.errno else exc


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary name in the same directory, fsync, then rename: readers see all or nothing."""
    atomic_write_stream(path, lambda f: f.write(data))


def atomic_write_stream(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """`write(file)` into a temporary name in the same directory, fsync, then rename over `path`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _write_temporary(path, write)
        try:
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError as exc:
        raise _naming(path, exc) from exc


def atomic_create_bytes(path: Path, data: bytes) -> bool:
    """Publish `data` as `path` only if `path` does not exist yet: True if this call created it, False if
    it existed (then it is left untouched). Readers see all of the file or none of it."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _write_temporary(path, lambda f: f.write(data))
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    except OSError as exc:
        raise _naming(path, exc) from exc


def _json_bytes(data: Any) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True, default=_jsonable) + "\n").encode("utf-8")


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, _json_bytes(data))


def atomic_create_json(path: Path, data: Any) -> bool:
    return atomic_create_bytes(path, _json_bytes(data))


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "__dict__"):
        return obj.__dict__
    return str(obj)


def read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def save_png(fig, path) -> None:
    """Write a matplotlib figure as PNG to `path` atomically (a temporary name beside it, then a rename;
    the user's umask, not mkstemp's 0600) and close the figure."""
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=120)
    finally:
        plt.close(fig)
    atomic_write_bytes(Path(path), buffer.getvalue())
