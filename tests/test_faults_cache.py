"""Faults of EchoMod's image cache (issue 16 §2, §3, §5): what survives what.

- files honour the umask, and another user reads (and, in a group-shared cache, extends) the cache
  without anything being deleted; a shard this user may not read is an error, never "corrupt";
- a shard damaged in any way is rejected as damaged and regenerated with a warning, never an escaped
  exception (seeded bit-flip fuzz: a few thousand mutants here, every bit under `slow`);
- a held shard lock names its holder and times out with an error, never a silent hang;
- a cache that cannot be written with pairs still to generate fails before any generation.

Permission cases run in a forked child that drops to uid 65534 after importing (tests run as root,
for whom permissions do not bind), on folders made reachable for that uid.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

from echobench.echoalign.cache import ModCache, UnreadableShard
from echobench.echoalign.echomod import sample_seeds
from echobench.errors import EchobenchError

NOBODY = 65534
needs_root = pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                                reason="drops privileges with setuid, which needs root")


class Counting:
    """A deterministic stand-in generator that counts what it generates."""

    def __init__(self):
        self.generated = 0

    def config(self):
        return {"engine": "counting"}

    def generate(self, images, labels, seeds):
        self.generated += len(images)
        return images + (labels.astype(np.int64) * 17 + seeds % 7).astype(np.uint8)[:, None, None, None]


def _data(n=24, size=4):
    return np.random.default_rng(0).integers(0, 200, size=(n, size, size, 3), dtype=np.uint8)


def _expected(images, idx, labels):
    return Counting().generate(images, labels, sample_seeds(0, "toy", idx, labels))


def _cache(root, **kw) -> ModCache:
    return ModCache(root, "toy", Counting().config(), shard_size=8, **kw)


def _fill(root, n=24, **kw):
    images, idx, labels = _data(n), np.arange(n), np.arange(n) % 3
    cache = _cache(root, **kw)
    cache.get_or_generate(Counting(), images, idx, labels)
    return cache, images, idx, labels


@pytest.fixture
def shared():
    """A folder uid 65534 can reach (pytest's tmp_path lies under a 0700 folder of root's)."""
    folder = Path(tempfile.mkdtemp(prefix="echobench-faults-"))
    folder.chmod(0o777)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def as_nobody(fn, umask=0o022):
    """fn() in a forked child running as uid/gid 65534 (after every import): its JSON-able return
    value, or {"error": "Type: message", "trace": ...} when it raised."""
    import encodings.cp437  # noqa: F401 - zipfile's codec: the child cannot import from root's home

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            os.umask(umask)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                value = fn()
            result = {"value": value, "warnings": [str(w.message) for w in caught]}
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            result = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()}
        with os.fdopen(write, "w") as f:
            f.write(json.dumps(result, default=str))
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        text = f.read()
    os.waitpid(pid, 0)
    return json.loads(text)


# --- §2: modes and other users --------------------------------------------------------------------------

@pytest.mark.parametrize("umask", [0o002, 0o022, 0o077])
def test_cache_files_honour_the_umask(tmp_path, umask):
    before = os.umask(umask)
    try:
        cache, *_ = _fill(tmp_path)
    finally:
        os.umask(before)
    files = [cache.shard_path(0), cache.lock_path(0), cache.dir / "config.json", cache.dir / "last-use"]
    for path in files:
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path
    assert cache.dir.stat().st_mode & 0o777 == 0o777 & ~umask


@needs_root
def test_another_user_reads_a_cache_without_deleting_or_regenerating(shared):
    cache, images, idx, labels = _fill(shared / "cache")  # written by root with umask 022: 0644 files
    before = {p.name: p.stat().st_ino for p in cache.dir.glob("shard-*.npz")}

    def use():
        out, stats = _cache(shared / "cache").get_or_generate(Counting(), images, idx, labels)
        return {"same": bool((out == _expected(images, idx, labels)).all()), **stats.as_dict()}

    got = as_nobody(use)
    assert "error" not in got, got
    assert got["value"]["same"] and got["value"]["cached"] == len(idx) and got["value"]["generated"] == 0
    assert got["value"]["corrupt_shards"] == 0 and got["warnings"] == []
    assert {p.name: p.stat().st_ino for p in cache.dir.glob("shard-*.npz")} == before


@needs_root
def test_a_group_shared_cache_is_extended_by_a_second_user(shared):
    root = shared / "cache"
    root.mkdir()
    os.chown(root, 0, NOBODY)  # the group shares the cache: setgid folder, umask 002
    root.chmod(0o2775)
    before = os.umask(0o002)
    try:
        cache, images, idx, labels = _fill(root, n=12)  # shards 0 and 1 (half)
    finally:
        os.umask(before)
    images, idx, labels = _data(24), np.arange(24), np.arange(24) % 3

    def extend():
        out, stats = _cache(root).get_or_generate(Counting(), images, idx, labels)
        return {"same": bool((out == _expected(images, idx, labels)).all()), **stats.as_dict(),
                "modes": sorted({oct(p.stat().st_mode & 0o777) for p in _cache(root).dir.iterdir()})}

    got = as_nobody(extend, umask=0o002)
    assert "error" not in got, got
    v = got["value"]
    assert v["same"] and (v["cached"], v["generated"], v["corrupt_shards"]) == (12, 12, 0), v
    assert v["modes"] == ["0o664"] and got["warnings"] == []
    out, stats = _cache(root).get_or_generate(Counting(), images, idx, labels)  # the first user sees all of it
    assert stats.cached == 24 and (out == _expected(images, idx, labels)).all()


@needs_root
def test_a_shard_another_user_may_not_read_is_an_error_not_corruption(shared):
    cache, images, idx, labels = _fill(shared / "cache")
    cache.shard_path(1).chmod(0o600)  # written by an older echobench, or a user with umask 077
    got = as_nobody(lambda: _cache(shared / "cache").get_or_generate(Counting(), images, idx, labels)[1].as_dict())
    assert got["error"].startswith("UnreadableShard: cannot read EchoMod cache shard") and "permission denied" in got["error"]
    assert "user root (uid 0), mode 0600" in got["error"] and "nothing was deleted" in got["error"]
    assert cache.shard_path(1).exists()
    assert issubclass(UnreadableShard, EchobenchError)  # the CLI prints it as one line, exit 2


@needs_root
def test_read_only_cache_with_pairs_to_generate_fails_before_generating(shared):
    cache, images, idx, labels = _fill(shared / "cache", n=8)  # root's cache, 0755: read-only for others
    images, idx, labels = _data(24), np.arange(24), np.arange(24) % 3

    def attempt():
        mod = Counting()
        try:
            _cache(shared / "cache").get_or_generate(mod, images, idx, labels)
        except EchobenchError as exc:
            return {"message": str(exc), "generated": mod.generated}
        return {"message": None, "generated": mod.generated}

    got = as_nobody(attempt)["value"]
    assert got["generated"] == 0 and "is not writable (Permission denied" in got["message"]
    assert "16 pair(s) still to generate" in got["message"] and "--cache-dir" in got["message"]
    # all pairs cached: a read-only cache serves them
    ok = as_nobody(lambda: _cache(shared / "cache").get_or_generate(Counting(), images[:8], idx[:8], labels[:8])[1].as_dict())
    assert ok["value"]["cached"] == 8


@needs_root
def test_modify_command_on_a_read_only_cache_says_so_in_one_line(shared):
    """End to end through `echobench modify`, as another user: exit 2, one line, no traceback."""
    from echobench.cli import main

    cache_dir = shared / "ro-cache"
    cache_dir.mkdir(mode=0o755)
    (shared / "data").mkdir(mode=0o777)

    def modify(cache):
        sys.stderr, sys.stdout = err, _ = io.StringIO(), io.StringIO()
        try:
            code = main(["modify", "shapes", "--noise", "symmetric:0.3", "--dataset-option", "n_train=200",
                         "--dataset-option", "n_test=20", "--cache-dir", str(cache), "--data-root",
                         str(shared / "data"), "--no-progress", "--device", "cpu"])
        finally:
            sys.stderr, sys.stdout = sys.__stderr__, sys.__stdout__
        return {"code": code, "stderr": err.getvalue()}

    assert modify(shared / "root-cache")["code"] == 0  # as root: works, and imports what the child needs
    shutil.rmtree(shared / "data" / "shapes", ignore_errors=True)

    got = as_nobody(lambda: modify(cache_dir))["value"]
    assert got["code"] == 2 and got["stderr"].count("\n") == 1, got
    assert got["stderr"].startswith("echobench: error: EchoMod cache ") and "is not writable" in got["stderr"]
    assert list(cache_dir.iterdir()) == []


@needs_root
def test_run_on_a_read_only_cache_with_pairs_to_generate_says_so_before_any_cell(shared):
    """`echobench run` checks once, before computing any cell, that a read-only cache holds every pair
    its EchoAlign cells need: one line, exit 2, no cell computed (not the same failure in each cell)."""
    import json

    from echobench.cli import main
    from echobench.harness import echomod_shards, packing, runner  # noqa: F401 - imported before the child drops root
    from echobench.engines.procedural import engine  # noqa: F401

    (shared / "ro-cache").mkdir(mode=0o755)
    (shared / "data").mkdir(mode=0o777)
    suite = shared / "suite.yaml"
    suite.write_text(json.dumps({"name": "ro", "datasets": {"shapes": {"n_train": 200, "n_test": 20}},
                                 "noise": ["symmetric:0.3"], "methods": ["ce", "echoalign"], "seeds": [1],
                                 "protocol": {"name": "smoke", "epochs": 1}}))
    suite.chmod(0o644)

    def run():
        sys.stderr, sys.stdout = err, _ = io.StringIO(), io.StringIO()
        try:
            code = main(["run", "--suite", str(suite), "--out", str(shared / "out"), "--cache-dir",
                         str(shared / "ro-cache"), "--data-root", str(shared / "data"), "--no-progress",
                         "--device", "cpu", "--threads", "1"])
        finally:
            sys.stderr, sys.stdout = sys.__stderr__, sys.__stdout__
        return {"code": code, "stderr": err.getvalue()}

    got = as_nobody(run)["value"]
    assert got["code"] == 2 and got["stderr"].count("\n") == 1, got
    assert "is not writable" in got["stderr"] and "pair(s) still to generate" in got["stderr"]
    assert not list((shared / "out" / "cells").glob("*/result.json"))
    assert list((shared / "ro-cache").iterdir()) == []


# --- §5: --cache-dir is a file ------------------------------------------------------------------------

@pytest.mark.parametrize("command", [
    ["run", "--suite", "smoke", "--no-progress"],
    ["modify", "shapes", "--noise", "symmetric:0.3", "--no-progress"],
    ["select", "shapes", "--noise", "symmetric:0.3", "--no-progress"],
])
def test_cache_dir_that_is_a_file_is_refused_in_one_line(cli, tmp_path, command):
    target = tmp_path / "a-file"
    target.write_text("not a cache")
    code, out, err = cli(*command, "--cache-dir", target, *(["--out", tmp_path / "out"] if command[0] == "run" else []))
    assert code == 2 and err == f"echobench: error: --cache-dir {target} is a file, not a directory; choose a directory\n"
    assert not (tmp_path / "out").exists()


def test_cache_dir_below_a_file_fails_before_the_generator_is_built(tmp_path, monkeypatch):
    """A diffusion engine's cache key is known without loading it: a cache that cannot be written is
    reported before the model loads."""
    from echobench.echoalign import methods

    (tmp_path / "a-file").write_text("")
    monkeypatch.setattr(methods, "modifier_config", lambda *a, **k: {"engine": "fake-diffusion"})

    def never(*a, **k):
        raise AssertionError("the generator was built")

    monkeypatch.setattr(methods, "make_modifier", never)
    images = _data(4)
    with pytest.raises(EchobenchError, match=r"is not writable \(Not a directory.*4 pair\(s\) still to generate"):
        methods.modify_pairs("toy", None, ["a", "b"], images, np.arange(4), np.zeros(4, dtype=np.int64),
                             engine="eager", cache_dir=str(tmp_path / "a-file" / "cache"))


# --- §3: damaged shards ---------------------------------------------------------------------------------

def _npy(descr="<i8", shape="(4,)", body=b"", version=b"\x01\x00", header=None):
    header = header or f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}"
    text = header.encode("latin1")
    text += b" " * (63 - (len(text) + 10) % 64) + b"\n"
    return b"\x93NUMPY" + version + len(text).to_bytes(2, "little") + text + body


def _zip(path, members):
    with zipfile.ZipFile(path, "w") as z:  # valid CRCs: the damage is past the zip layer
        for name, data in members.items():
            z.writestr(name, data)


def _damage(kind, path: Path, good: bytes):
    idx = np.arange(8, 16, dtype=np.int64)
    if kind == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_bytes(np.random.default_rng(1).bytes(len(good)))
    elif kind == "a bare npy":
        np.save(path.with_suffix(".tmp.npy"), idx)
        path.with_suffix(".tmp.npy").rename(path)
    elif kind == "byte flipped in images":
        raw = bytearray(good)
        raw[-400] ^= 0xFF
        path.write_bytes(bytes(raw))
    elif kind == "missing member":
        with zipfile.ZipFile(io.BytesIO(good)) as z:
            _zip(path, {n: z.read(n) for n in z.namelist() if n != "labels.npy"})
    else:  # npy headers that numpy's parser chokes on, or that decode to something else, with valid CRCs
        with zipfile.ZipFile(io.BytesIO(good)) as z:
            members = {n: z.read(n) for n in z.namelist()}
        body = idx.tobytes()
        members["indices.npy"] = {
            "header syntax": _npy(header="{'descr': '<i8', 'fortran_order': False, 'shape': (8,)), }", body=body),
            "header tokens": _npy(header="{'descr': '<i8', 'fortran_order': False, 'shape': (8,), '''}", body=body),
            "header version": _npy(shape="(8,)", body=body, version=b"\x07\x00"),
            "object dtype": _npy(descr="|O", shape="(8,)", body=body),
            "big-endian, same bytes": _npy(descr=">i8", shape="(8,)", body=body),
            "huge shape": _npy(shape="(1099511627776,)", body=body),
            "another shard's pairs": _npy(shape="(8,)", body=(idx + 8).tobytes()),
        }[kind]
        _zip(path, members)


DAMAGE = ["truncated", "empty", "garbage", "a bare npy", "byte flipped in images", "missing member", "header syntax",
          "header tokens", "header version", "object dtype", "big-endian, same bytes", "huge shape",
          "another shard's pairs"]


@pytest.mark.parametrize("kind", DAMAGE)
def test_a_damaged_shard_is_regenerated_with_a_warning(tmp_path, kind):
    cache, images, idx, labels = _fill(tmp_path)
    path = cache.shard_path(1)
    _damage(kind, path, path.read_bytes())
    mod = Counting()
    with pytest.warns(UserWarning, match=r"shard-000001\.npz is damaged: .*it is deleted and its pairs are generated again"):
        out, stats = cache.get_or_generate(mod, images, idx, labels)
    assert (stats.corrupt_shards, stats.generated, stats.cached, mod.generated) == (1, 8, 16, 8)
    np.testing.assert_array_equal(out, _expected(images, idx, labels))
    assert cache.read_shard(1) is not None  # rewritten whole


def _fuzz_shard(tmp_path):
    """A small real shard (4 pairs of 2×2 images: 1.4 kB, ~11,000 bits) and what it decodes to."""
    cache = ModCache(tmp_path, "toy", {"engine": "fuzz"}, shard_size=8)
    images = np.random.default_rng(0).integers(0, 256, (4, 2, 2, 3), dtype=np.uint8)
    cache._write_shard(0, np.array([0, 1, 3, 5]), np.array([2, 0, 1, 1]), images)
    return cache, cache.shard_path(0).read_bytes(), cache.read_shard(0)


def _fuzz(cache, good, reference, mutants) -> dict:
    """Each mutant written as the shard and read: identical data, or rejected as damaged (None, with a
    warning, the file deleted); anything else is an escape."""
    path, counts, escapes = cache.shard_path(0), {"identical": 0, "rejected": 0}, []
    for name, data in mutants:
        path.write_bytes(data)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                got = cache.read_shard(0)
        except Exception as exc:  # noqa: BLE001 - an escape is what this test looks for
            escapes.append(f"{name}: {type(exc).__name__}: {exc}")
            continue
        if got is None and caught and not path.exists():
            counts["rejected"] += 1
        elif got is not None and all(a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
                                     for a, b in zip(got, reference)):
            counts["identical"] += 1
        else:
            escapes.append(f"{name}: read back different data")
    return {**counts, "escapes": escapes}


def _bit_flips(good: bytes, bits):
    for bit in bits:
        data = bytearray(good)
        data[bit // 8] ^= 1 << (bit % 8)
        yield f"bit {bit}", bytes(data)


def test_bit_flip_fuzz_of_the_shard_reader(tmp_path):
    """2,500 seeded single-bit flips (of ~11,000 bits; every bit under `slow`): zero escapes."""
    cache, good, reference = _fuzz_shard(tmp_path)
    bits = np.random.default_rng(16).choice(len(good) * 8, size=2500, replace=False)
    result = _fuzz(cache, good, reference, _bit_flips(good, bits.tolist()))
    assert result["escapes"] == [] and result["rejected"] > 1500 and result["identical"] > 100, result


@pytest.mark.slow
def test_bit_flip_fuzz_of_the_shard_reader_every_bit_and_byte_garbage(tmp_path):
    """Every single-bit flip, 3,000 random 1–4-byte overwrites and every truncation: zero escapes."""
    cache, good, reference = _fuzz_shard(tmp_path)
    rng = np.random.default_rng(17)

    def overwrites():
        for k in range(3000):
            data, n = bytearray(good), int(rng.integers(1, 5))
            at = int(rng.integers(0, len(good) - n))
            data[at : at + n] = rng.bytes(n)
            yield f"overwrite {k} at {at}", bytes(data)

    truncations = ((f"truncated to {n}", good[:n]) for n in range(len(good)))
    for mutants in (_bit_flips(good, range(len(good) * 8)), overwrites(), truncations):
        result = _fuzz(cache, good, reference, mutants)
        assert result["escapes"] == [], result["escapes"][:20]


# --- §3: locks ------------------------------------------------------------------------------------------

def _hold_lock(cache: ModCache, shard: int, seconds: float) -> int:
    """A forked child that holds the shard's lock for `seconds`; returns once it holds it."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read)
            with cache._locked(shard):
                os.write(write, b"held")
                time.sleep(seconds)
        finally:
            os._exit(0)
    os.close(write)
    assert os.read(read, 4) == b"held"
    os.close(read)
    return pid


def test_a_held_lock_names_its_holder_and_times_out_with_an_error(tmp_path, capsys):
    cache, images, idx, labels = _fill(tmp_path)
    pid = _hold_lock(cache, 1, seconds=30)
    try:
        waiting = _cache(tmp_path, lock_timeout=0.5)
        started = time.monotonic()
        with pytest.raises(EchobenchError, match=rf"shard 1 .* is still locked by pid {pid} since \d\d:\d\d:\d\d "
                                                 rf"after 0 s; if that process is hung, stop it and run again"):
            waiting._write_shard(1, idx[8:9], labels[8:9] + 1, images[8:9])
        assert time.monotonic() - started < 5
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"shard 1 ({waiting.dir}) is locked by pid {pid} since" in err and "waiting" in err


def test_a_lock_released_in_time_is_waited_for_with_one_message(tmp_path, capsys):
    cache, images, idx, labels = _fill(tmp_path)
    pid = _hold_lock(cache, 1, seconds=0.6)
    try:
        _cache(tmp_path, lock_timeout=30)._write_shard(1, idx[8:9], labels[8:9] + 1, images[8:9])
    finally:
        os.waitpid(pid, 0)
    err = capsys.readouterr().err
    assert err.count(f"is locked by pid {pid} since") == 1 and err.count("\n") == 1
    assert len(cache.read_shard(1)[0]) == 9  # merged, nothing lost
    assert cache.lock_path(1).read_text() == ""  # the record goes with the lock
