"""The cache of EchoMod's modified images, keyed by (dataset, index, label, generator config).

A modified image depends only on the original (a dataset and an index), the target label and the
generator's config (`Modifier.config()` plus EchoMod's base seed), so one generated pair serves every
noise setting and every seed that asks for it: CIFAR-10 at 30% and 50% symmetric noise share the
70%-or-so of samples whose noisy label is the clean one, and every seed shares the clean pairs.

Layout under the cache root (default `<data root>/echomod`, see `cache_root`):

    <root>/<dataset key>/<config digest>/config.json        the generator config and shard size (for people)
    <root>/<dataset key>/<config digest>/last-use           touched by every lookup (`echobench cache ls`)
    <root>/<dataset key>/<config digest>/shard-000012.npz   pairs whose index // shard_size == 12
    <root>/<dataset key>/<config digest>/shard-000012.lock  flock held while the shard is rewritten;
                                                            holds the holder's pid, host and start time

A shard holds `indices`, `labels` (sorted by (index, label)), `images` (uint8 NHWC) and `sha256`, the
digest of the three arrays' bytes. Writing a shard merges the pairs already there with the new ones
under the shard's lock, writes a temporary file and renames it over the shard: a reader never sees
half a shard, a SIGKILL loses at most the shard being generated, and two processes never lose each
other's pairs.

Faults, and what they do:

- A shard that fails to decode for any reason (zip CRC, npy header, dtypes or shapes other than the
  writer's, unsorted keys, sha256 mismatch) is damaged: a warning, the shard is deleted and its pairs
  generated again (`read_shard`; fuzzed with bit flips in tests/test_faults_cache.py).
- A shard this user may not read (another user's, mode 0600) is *not* damaged: an `EchobenchError` says
  whose it is and what to do; nothing is deleted.
- Files are created with mode 0666 minus the user's umask (never `tempfile.mkstemp`'s 0600), so a cache
  shared by a group (umask 002) is readable and extendable by every member.
- A shard lock is waited for at most `lock_timeout` seconds; while waiting, one line on stderr names the
  holder, and at the timeout an `EchobenchError` says which process to look at.
- Pairs still to generate in a cache this user cannot write: an `EchobenchError` before any generation
  (`check_writable`; `echobench.echoalign.methods.modify_pairs` checks before loading the generator).

`echobench cache ls | verify | prune` (echobench/cli/cache.py) use `list_configs`, `verify_config` and
`prune_configs` below.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import pwd
import shutil
import socket
import sys
import time
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

import numpy as np

from echobench import paths
from echobench.echoalign.echomod import Modifier, config_digest, sample_seeds
from echobench.errors import EchobenchError
from echobench.files import atomic_write_bytes, atomic_write_stream, create_temporary

SHARD_SIZE = 1024  # dataset indices per shard: a CIFAR-10 shard at 32 px is ~3 MiB per label
LABEL_BITS = 20  # a pair key keeps the label in its low bits: labels lie in [0, 2**20)
LOCK_TIMEOUT_S = 600.0  # a shard's lock is held for one merge-and-write (seconds), never for a generation
LAST_USE = "last-use"
SHARD_MEMBERS = {"indices.npy", "labels.npy", "images.npy", "sha256.npy"}


def pair_keys(indices: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """One int64 key per (dataset index, label) pair, `(index << LABEL_BITS) + label`: distinct pairs
    have distinct keys, and sorting the keys sorts the pairs by index, then label."""
    return np.asarray(indices, dtype=np.int64) * (1 << LABEL_BITS) + np.asarray(labels, dtype=np.int64)


def split_pair_keys(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(indices, labels) of `pair_keys` keys."""
    keys = np.asarray(keys, dtype=np.int64)
    return keys >> LABEL_BITS, keys & ((1 << LABEL_BITS) - 1)


def cache_root(explicit: str | os.PathLike | None = None, data_dir: str | os.PathLike | None = None) -> Path:
    """`explicit`, else $ECHOBENCH_CACHE, else `<data root>/echomod` (see `echobench.paths`)."""
    return paths.echomod_cache(explicit, data_dir)


def dataset_key(name: str, options: dict[str, Any] | None) -> str:
    """`name`, plus a digest of the loader options when there are any (they change the images), the
    loader's identity fields included (`dataset_identity`: e.g. the `shapes` world's version)."""
    from echobench.data.base import DATASETS, dataset_identity

    if name in DATASETS:  # an unregistered name (a plugin dataset not imported here) keeps its options as given
        options = dataset_identity(name, options)
    if not options:
        return name
    return f"{name}-{config_digest(dict(options))[:10]}"


def _digest(indices: np.ndarray, labels: np.ndarray, images: np.ndarray) -> str:
    h = hashlib.sha256()
    for array in (indices, labels, images):
        h.update(np.ascontiguousarray(array).tobytes())
        h.update(str(array.shape).encode())
    return h.hexdigest()


# --- files ------------------------------------------------------------------------------------------

def _owner(path: Path) -> str:
    """'user alice (uid 1001), mode 0600' of a file, as far as it can be told."""
    try:
        st = path.stat()
    except OSError:
        return "another user"
    try:
        name = f"user {pwd.getpwuid(st.st_uid).pw_name} (uid {st.st_uid})"
    except KeyError:
        name = f"uid {st.st_uid}"
    return f"{name}, mode {st.st_mode & 0o777:04o}"


# --- reading a shard ----------------------------------------------------------------------------------

class DamagedShard(Exception):
    """A shard file that is not what `ModCache._write_shard` writes; the message says why."""


class UnreadableShard(EchobenchError):
    """A shard this process may not read (permissions): not damaged, never deleted."""


def decode_shard(handle: BinaryIO, shard: int | None = None, shard_size: int = SHARD_SIZE
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(indices, labels, images) of an open shard file, or `DamagedShard` for anything else.

    Every failure to decode counts (numpy's header parser alone raises SyntaxError, tokenize.TokenError,
    NotImplementedError, RuntimeError, ValueError… on garbage), and so does content that decodes but is
    not what the writer writes: the zip members' CRC-32s are checked first (a CRC-32 catches every single-
    bit flip and every burst of up to 32 bits in a member), then the arrays' dtypes, shapes, order and sha256."""
    try:
        with zipfile.ZipFile(handle) as zf:
            if set(zf.namelist()) != SHARD_MEMBERS:
                raise DamagedShard(f"members {sorted(zf.namelist())}, expected {sorted(SHARD_MEMBERS)}")
            bad = zf.testzip()
            if bad is not None:
                raise DamagedShard(f"member {bad} fails its CRC-32 checksum")
        handle.seek(0)
        with np.load(handle, allow_pickle=False) as z:
            indices, labels, images, digest = z["indices"], z["labels"], z["images"], z["sha256"]
    except DamagedShard:
        raise
    except ImportError:  # this interpreter is broken (a codec or module it cannot load), not the shard
        raise
    except Exception as exc:  # noqa: BLE001 - any other failure to decode means a damaged file
        if type(exc) is LookupError:  # "unknown encoding": the codec would not load (KeyError, IndexError are damage)
            raise
        raise DamagedShard(f"cannot be decoded ({type(exc).__name__}: {exc})") from None
    n = len(indices) if indices.ndim == 1 else -1
    if (indices.dtype != np.dtype("<i8") or labels.dtype != np.dtype("<i8") or images.dtype != np.uint8
            or indices.shape != (n,) or labels.shape != (n,) or images.ndim != 4 or len(images) != n
            or digest.shape != () or digest.dtype.kind != "U"):
        raise DamagedShard(f"unexpected arrays: indices {indices.dtype}{indices.shape}, labels "
                           f"{labels.dtype}{labels.shape}, images {images.dtype}{images.shape}")
    if str(digest) != _digest(indices, labels, images):
        raise DamagedShard("its sha256 checksum does not match its content")
    keys = pair_keys(indices, labels)
    if (n and (np.any(keys[1:] <= keys[:-1]) or labels.min() < 0 or labels.max() >= 1 << LABEL_BITS
               or (shard is not None and np.any(indices // shard_size != shard)))):
        raise DamagedShard("its pairs are not the sorted pairs of this shard")
    return indices, labels, images


# --- one generator configuration ----------------------------------------------------------------------

@dataclass
class CacheStats:
    requested: int = 0
    cached: int = 0  # served from shards that already existed
    generated: int = 0  # new pairs generated and written by this call
    corrupt_shards: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class ModCache:
    """The shards of one (dataset, generator config)."""

    def __init__(self, root: str | os.PathLike, dataset: str, config: dict[str, Any], shard_size: int = SHARD_SIZE,
                 lock_timeout: float = LOCK_TIMEOUT_S):
        self.config = dict(config)
        self.dir = Path(root) / dataset / config_digest(self.config)
        self.dataset = dataset
        self.shard_size = int(shard_size)
        self.lock_timeout = float(lock_timeout)

    # --- shards ------------------------------------------------------------------------------------
    def shard_path(self, shard: int) -> Path:
        return self.dir / f"shard-{shard:06d}.npz"

    def lock_path(self, shard: int) -> Path:
        return self.dir / f"shard-{shard:06d}.lock"

    @contextlib.contextmanager
    def _locked(self, shard: int) -> Iterator[None]:
        """Hold the shard's flock (waiting at most `lock_timeout` s), with this process named in the lock file."""
        path = self.lock_path(shard)
        try:
            fd, writable = os.open(path, os.O_RDWR | os.O_CREAT, 0o666), True
        except PermissionError:  # another user's lock file in a directory we may write: lock, unnamed
            try:
                fd, writable = os.open(path, os.O_RDONLY), False
            except OSError as exc:
                raise self._not_writable(exc, "must write a shard") from None
        except OSError as exc:
            raise self._not_writable(exc, "must write a shard") from None
        with os.fdopen(fd, "r+b" if writable else "rb") as handle:
            self._acquire(handle, shard)
            try:
                if writable:
                    handle.seek(0)
                    handle.truncate()
                    handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                             "since": time.time()}).encode() + b"\n")
                    handle.flush()
                yield
            finally:
                if writable:
                    with contextlib.suppress(OSError):
                        handle.truncate(0)
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _acquire(self, handle: BinaryIO, shard: int) -> None:
        deadline, told, holder = time.monotonic() + self.lock_timeout, False, "another process"
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                pass
            if not told:
                holder = lock_holder(self.lock_path(shard))
                print(f"echobench: EchoMod cache shard {shard} ({self.dir}) is locked by {holder}; waiting up to "
                      f"{self.lock_timeout:.0f} s…", file=sys.stderr, flush=True)
                told = True
            if time.monotonic() >= deadline:
                raise EchobenchError(
                    f"EchoMod cache shard {shard} ({self.dir}) is still locked by {holder} after "
                    f"{self.lock_timeout:.0f} s; if that process is hung, stop it and run again (pairs already "
                    f"in the cache are kept)")
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))

    def read_shard(self, shard: int, stats: CacheStats | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(indices, labels, images) of a shard, or None when absent; a damaged shard is deleted (with a
        warning) and reads as absent; one this user may not read raises `UnreadableShard`."""
        path = self.shard_path(shard)
        try:
            handle = open(path, "rb")
        except (FileNotFoundError, NotADirectoryError):
            return None
        except IsADirectoryError:
            raise EchobenchError(f"{path} is a folder where EchoMod's cache keeps a shard file; move it away") from None
        except PermissionError:
            raise UnreadableShard(
                f"cannot read EchoMod cache shard {path}: permission denied (it belongs to {_owner(path)}); ask its "
                f"owner to make the cache readable (e.g. chmod -R a+rX {self.dir.parent.parent}; a cache shared by a "
                f"group is best written with umask 002) or use another --cache-dir; nothing was deleted") from None
        try:
            with handle:
                return decode_shard(handle, shard, self.shard_size)
        except DamagedShard as exc:
            warnings.warn(f"EchoMod cache shard {path} is damaged: {exc} (checksum or decoding failed); it is "
                          f"deleted and its pairs are generated again", stacklevel=2)
            with contextlib.suppress(OSError):  # a read-only cache keeps it; its pairs are then missing
                path.unlink()
            if stats is not None:
                stats.corrupt_shards += 1
            return None

    def _not_writable(self, exc: OSError, what: str) -> EchobenchError:
        reason = exc.strerror or type(exc).__name__
        return EchobenchError(f"EchoMod cache {self.dir} is not writable ({reason}: {exc.filename or self.dir}) "
                              f"and this run {what}; use a writable --cache-dir (or $ECHOBENCH_CACHE), or ask the "
                              f"cache's owner to make it group-writable or to generate the pairs")

    def check_writable(self, missing: int) -> None:
        """EchobenchError unless this process can add shards here (checked before generating anything)."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            fd, probe = create_temporary(self.dir / ".probe")
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise self._not_writable(exc, f"has {missing} pair(s) still to generate") from None

    def _write_shard(self, shard: int, indices: np.ndarray, labels: np.ndarray, images: np.ndarray) -> None:
        """Merge the new pairs into the shard (under its lock) and replace it atomically."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with self._locked(shard):
            current = self.read_shard(shard)
            if current is not None:
                indices = np.concatenate([current[0], indices])
                labels = np.concatenate([current[1], labels])
                images = np.concatenate([current[2], images])
            keys = pair_keys(indices, labels)
            _, first = np.unique(keys, return_index=True)  # sorted by (index, label), each pair once
            indices, labels, images = indices[first], labels[first], images[first]
            atomic_write_stream(self.shard_path(shard), lambda f: np.savez(
                f, indices=indices, labels=labels, images=images, sha256=np.array(_digest(indices, labels, images))))

    def remove_stale_temporaries(self) -> None:
        """Temporary shards left by a killed writer (only ever renamed over a shard when complete)."""
        if self.dir.exists():
            for tmp in self.dir.glob(".shard-*.tmp"):
                with contextlib.suppress(FileNotFoundError):
                    if time.time() - tmp.stat().st_mtime > 60:
                        tmp.unlink()

    def touch(self) -> None:
        """Record a use of this configuration (`echobench cache ls`, `cache prune --unused-since`); a
        cache this user may not write is used without a record."""
        if self.dir.is_dir():
            with contextlib.suppress(OSError):
                os.close(os.open(self.dir / LAST_USE, os.O_WRONLY | os.O_CREAT, 0o666))
                os.utime(self.dir / LAST_USE)

    # --- lookup and generation ------------------------------------------------------------------------
    def lookup(self, indices: np.ndarray, labels: np.ndarray, stats: CacheStats | None = None) -> tuple[np.ndarray | None, np.ndarray]:
        """Images of the cached pairs: (images or None, found mask), aligned with the request."""
        indices, labels = np.asarray(indices, dtype=np.int64), np.asarray(labels, dtype=np.int64)
        found = np.zeros(len(indices), dtype=bool)
        out = None
        self.touch()
        for shard in np.unique(indices // self.shard_size):
            content = self.read_shard(int(shard), stats)
            if content is None or len(content[0]) == 0:
                continue
            s_idx, s_lab, s_img = content
            want = np.flatnonzero(indices // self.shard_size == shard)
            s_keys, wanted = pair_keys(s_idx, s_lab), pair_keys(indices[want], labels[want])
            pos = np.minimum(np.searchsorted(s_keys, wanted), len(s_keys) - 1)
            hit = s_keys[pos] == wanted
            if out is None:
                out = np.empty((len(indices), *s_img.shape[1:]), dtype=np.uint8)
            out[want[hit]] = s_img[pos[hit]]
            found[want[hit]] = True
        return out, found

    def get_or_generate(self, modifier: Modifier, images: np.ndarray, indices: np.ndarray, labels: np.ndarray, *,
                        base_seed: int = 0, batch_size: int = 256,
                        progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, CacheStats]:
        """Modified images for `images[k]` (dataset index `indices[k]`) with target `labels[k]`.

        Missing pairs are generated shard by shard (each shard written as soon as its pairs exist, so
        a killed run resumes where it stopped); `progress(n)` is called after each generated batch. A
        read-only cache serves requests whose pairs are all cached; with pairs missing it raises an
        `EchobenchError` before generating anything.
        """
        started = time.perf_counter()
        indices, labels = np.asarray(indices, dtype=np.int64), np.asarray(labels, dtype=np.int64)
        stats = CacheStats(requested=len(indices))
        out, found = self.lookup(indices, labels, stats)
        if out is None:
            out = np.empty_like(images)
        stats.cached = int(found.sum())
        missing = np.flatnonzero(~found)
        if len(missing):
            self.check_writable(len(missing))
            if not (self.dir / "config.json").exists():
                text = json.dumps({"dataset": self.dataset, "config": self.config, "shard_size": self.shard_size}, indent=2, sort_keys=True, default=str)
                atomic_write_bytes(self.dir / "config.json", text.encode() + b"\n")
            self.remove_stale_temporaries()
            self.touch()
        # one (index, label) pair is generated once even when requested twice
        for shard in np.unique(indices[missing] // self.shard_size):
            todo = missing[indices[missing] // self.shard_size == shard]
            keys = pair_keys(indices[todo], labels[todo])
            _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
            unique_pos = todo[first]
            seeds = sample_seeds(base_seed, self.dataset, indices[unique_pos], labels[unique_pos])
            made = np.empty((len(unique_pos), *images.shape[1:]), dtype=np.uint8)
            for start in range(0, len(unique_pos), batch_size):
                part = unique_pos[start : start + batch_size]
                made[start : start + len(part)] = modifier.generate(images[part], labels[part], seeds[start : start + len(part)])
                if progress is not None:
                    progress(len(part))
            self._write_shard(int(shard), indices[unique_pos], labels[unique_pos], made)
            out[todo] = made[inverse.reshape(-1)]
            stats.generated += len(unique_pos)
        stats.seconds = time.perf_counter() - started
        return out, stats


def lock_holder(path: Path) -> str:
    """'pid 1234 on host since 12:01:05' from a shard's lock file (what `ModCache._locked` records)."""
    try:
        record = json.loads(Path(path).read_text() or "{}")
        since = dt.datetime.fromtimestamp(float(record["since"])).strftime("%H:%M:%S")
        host = record.get("host")
        return f"pid {int(record['pid'])}{f' on {host}' if host and host != socket.gethostname() else ''} since {since}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


# --- the whole cache: `echobench cache ls | verify | prune` -------------------------------------------------

def config_dirs(root: str | os.PathLike) -> list[Path]:
    """The configuration folders under a cache root (<dataset key>/<config digest>/ holding a config.json
    or a shard), sorted; other folders (`_engines`, hidden ones) are not the image cache's."""
    root, out = Path(root), []
    if not root.is_dir():
        return out
    for dataset in sorted(root.iterdir()):
        if dataset.name.startswith(("_", ".")) or not dataset.is_dir():
            continue
        for folder in sorted(dataset.iterdir()):
            if folder.is_dir() and ((folder / "config.json").exists() or any(folder.glob("shard-*.npz"))):
                out.append(folder)
    return out


def _read_config(folder: Path) -> dict[str, Any]:
    """A configuration's config.json ({} when absent or unreadable: it is for people, not the key)."""
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def last_use(folder: Path) -> float | None:
    """When a configuration was last looked up (its `last-use` file) or written (its newest shard)."""
    times = [p.stat().st_mtime for p in [folder / LAST_USE, *folder.glob("shard-*.npz")] if p.exists()]
    return max(times) if times else None


def describe_config(folder: Path) -> dict[str, Any]:
    """One row of `echobench cache ls`: dataset key, digest, generator config, shards, pairs, bytes,
    last use (pairs are counted from each shard's index array; a shard that cannot be counted is
    listed under `unreadable`; `cache verify` says why)."""
    config = _read_config(folder)
    shards, pairs, unreadable = sorted(folder.glob("shard-*.npz")), 0, 0
    for shard in shards:
        try:
            with np.load(shard, allow_pickle=False) as z:
                pairs += len(z["indices"])
        except Exception:  # noqa: BLE001 - counted, not diagnosed (that is `verify`'s work)
            unreadable += 1
    size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    used = last_use(folder)
    generator = config["config"] if isinstance(config.get("config"), dict) else {}
    return {"dataset": folder.parent.name, "config": folder.name, "path": str(folder),
            "engine": generator.get("engine", "?"), "generator": generator, "shards": len(shards), "pairs": pairs,
            "unreadable": unreadable, "bytes": size,
            "last_use": dt.datetime.fromtimestamp(used).isoformat(timespec="seconds") if used else None}


def verify_config(folder: Path) -> list[dict[str, Any]]:
    """Every shard of a configuration checked like a lookup reads it (nothing is deleted): one
    {"shard", "status": ok | damaged | unreadable, "reason"} per shard."""
    out, shard_size = [], _read_config(folder).get("shard_size")
    shard_size = shard_size if isinstance(shard_size, int) and shard_size > 0 else SHARD_SIZE
    for path in sorted(folder.glob("shard-*.npz")):
        try:
            number = int(path.stem.split("-")[1])
        except (IndexError, ValueError):
            number = None
        status, reason = "ok", ""
        try:
            with open(path, "rb") as handle:
                decode_shard(handle, number, shard_size)
        except PermissionError:
            status, reason = "unreadable", f"permission denied ({_owner(path)})"
        except DamagedShard as exc:
            status, reason = "damaged", str(exc)
        except OSError as exc:
            status, reason = "damaged", f"cannot be read ({exc.strerror or exc})"
        out.append({"shard": str(path), "status": status, "reason": reason})
    return out


def prune_configs(folders: list[Path], dry_run: bool = False) -> list[dict[str, Any]]:
    """Delete whole configuration folders (their `describe_config` rows are returned, with "removed"
    and, on failure, "error"); a dataset folder left empty goes too."""
    out = []
    for folder in folders:
        row = describe_config(folder)
        if not dry_run:
            try:
                shutil.rmtree(folder)
                with contextlib.suppress(OSError):
                    folder.parent.rmdir()  # only when empty
                row["removed"] = True
            except OSError as exc:
                row["removed"], row["error"] = False, f"{exc.strerror or exc}: {exc.filename or folder}"
        else:
            row["removed"] = False
        out.append(row)
    return out


def cache_for(config: dict[str, Any], dataset: str, dataset_options: dict[str, Any] | None, *, base_seed: int,
              root: str | os.PathLike | None = None) -> ModCache:
    """The cache of the outputs of a generator whose `config()` is `config`, on a dataset; the base
    seed is part of the key."""
    return ModCache(cache_root(root), dataset_key(dataset, dataset_options), {**config, "base_seed": int(base_seed)})
