"""The cache of EchoMod's modified images, keyed by (dataset, index, label, generator config).

A modified image depends only on the original (a dataset and an index), the target label and the
generator's config (`Modifier.config()` plus EchoMod's base seed), so one generated pair serves every
noise setting and every seed that asks for it: CIFAR-10 at 30% and 50% symmetric noise share the
70%-or-so of samples whose noisy label is the clean one, and every seed shares the clean pairs.

Layout under the cache root (default `<data root>/echomod`, see `cache_root`):

    <root>/<dataset key>/<config digest>/config.json        the generator config (for people)
    <root>/<dataset key>/<config digest>/shard-000012.npz   pairs whose index // shard_size == 12
    <root>/<dataset key>/<config digest>/shard-000012.lock  flock held while the shard is rewritten

A shard holds `indices`, `labels` (sorted by (index, label)), `images` (uint8 NHWC) and `sha256`, the
digest of the three arrays' bytes. Writing a shard merges the pairs already there with the new ones
under the shard's lock, writes a temporary file and renames it over the shard: a reader never sees
half a shard, a SIGKILL loses at most the shard being generated, and two processes never lose each
other's pairs. On read a shard whose digest does not match (or that cannot be parsed) is reported
with a warning, deleted, and its pairs are generated again.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
import time
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from echobench import paths
from echobench.echoalign.echomod import Modifier, config_digest, sample_seeds
from echobench.files import atomic_write_json

SHARD_SIZE = 1024  # dataset indices per shard: a CIFAR-10 shard at 32 px is ~3 MiB per label
LABEL_BITS = 20  # a pair key keeps the label in its low bits: labels lie in [0, 2**20)


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
    """`name`, plus a digest of the loader options when there are any (they change the images)."""
    if not options:
        return name
    return f"{name}-{config_digest(dict(options))[:10]}"


def _digest(indices: np.ndarray, labels: np.ndarray, images: np.ndarray) -> str:
    h = hashlib.sha256()
    for array in (indices, labels, images):
        h.update(np.ascontiguousarray(array).tobytes())
        h.update(str(array.shape).encode())
    return h.hexdigest()


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

    def __init__(self, root: str | os.PathLike, dataset: str, config: dict[str, Any], shard_size: int = SHARD_SIZE):
        self.config = dict(config)
        self.dir = Path(root) / dataset / config_digest(self.config)
        self.dataset = dataset
        self.shard_size = int(shard_size)

    # --- shards ------------------------------------------------------------------------------------
    def shard_path(self, shard: int) -> Path:
        return self.dir / f"shard-{shard:06d}.npz"

    @contextlib.contextmanager
    def _locked(self, shard: int) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / f"shard-{shard:06d}.lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def read_shard(self, shard: int, stats: CacheStats | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(indices, labels, images) of a shard, or None when absent; a corrupt shard is deleted."""
        path = self.shard_path(shard)
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                indices, labels, images, digest = z["indices"], z["labels"], z["images"], str(z["sha256"])
            ok = digest == _digest(indices, labels, images)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:  # truncated, bad CRC, not an npz
            ok, indices = False, exc
        if not ok:
            warnings.warn(f"EchoMod cache shard {path} failed its checksum; it is deleted and its pairs are generated again",
                          stacklevel=2)
            path.unlink(missing_ok=True)
            if stats is not None:
                stats.corrupt_shards += 1
            return None
        return indices, labels, images

    def _write_shard(self, shard: int, indices: np.ndarray, labels: np.ndarray, images: np.ndarray) -> None:
        """Merge the new pairs into the shard (under its lock) and replace it atomically."""
        with self._locked(shard):
            current = self.read_shard(shard)
            if current is not None:
                indices = np.concatenate([current[0], indices])
                labels = np.concatenate([current[1], labels])
                images = np.concatenate([current[2], images])
            keys = pair_keys(indices, labels)
            _, first = np.unique(keys, return_index=True)  # sorted by (index, label), each pair once
            indices, labels, images = indices[first], labels[first], images[first]
            fd, tmp = tempfile.mkstemp(prefix=f".{self.shard_path(shard).name}.", suffix=".tmp", dir=self.dir)
            try:
                with os.fdopen(fd, "wb") as f:
                    np.savez(f, indices=indices, labels=labels, images=images,
                             sha256=np.array(_digest(indices, labels, images)))
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.shard_path(shard))
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise

    def remove_stale_temporaries(self) -> None:
        """Temporary shards left by a killed writer (only ever renamed over a shard when complete)."""
        if self.dir.exists():
            for tmp in self.dir.glob(".shard-*.tmp"):
                with contextlib.suppress(FileNotFoundError):
                    if time.time() - tmp.stat().st_mtime > 60:
                        tmp.unlink()

    # --- lookup and generation ------------------------------------------------------------------------
    def lookup(self, indices: np.ndarray, labels: np.ndarray, stats: CacheStats | None = None) -> tuple[np.ndarray | None, np.ndarray]:
        """Images of the cached pairs: (images or None, found mask), aligned with the request."""
        indices, labels = np.asarray(indices, dtype=np.int64), np.asarray(labels, dtype=np.int64)
        found = np.zeros(len(indices), dtype=bool)
        out = None
        for shard in np.unique(indices // self.shard_size):
            content = self.read_shard(int(shard), stats)
            if content is None:
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
        a killed run resumes where it stopped); `progress(n)` is called after each generated batch.
        """
        started = time.perf_counter()
        indices, labels = np.asarray(indices, dtype=np.int64), np.asarray(labels, dtype=np.int64)
        stats = CacheStats(requested=len(indices))
        self.dir.mkdir(parents=True, exist_ok=True)
        if not (self.dir / "config.json").exists():
            atomic_write_json(self.dir / "config.json", {"dataset": self.dataset, "config": self.config})
        self.remove_stale_temporaries()
        out, found = self.lookup(indices, labels, stats)
        if out is None:
            out = np.empty_like(images)
        stats.cached = int(found.sum())
        missing = np.flatnonzero(~found)
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


def cache_for(config: dict[str, Any], dataset: str, dataset_options: dict[str, Any] | None, *, base_seed: int,
              root: str | os.PathLike | None = None) -> ModCache:
    """The cache of the outputs of a generator whose `config()` is `config`, on a dataset; the base
    seed is part of the key."""
    return ModCache(cache_root(root), dataset_key(dataset, dataset_options), {**config, "base_seed": int(base_seed)})

