"""`echobench cache ls | verify | prune` on a small cache of two generator configurations."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

from echobench.echoalign.cache import ModCache


class Tagged:
    def __init__(self, tag):
        self.tag = tag

    def config(self):
        return {"engine": "counting", "tag": self.tag}

    def generate(self, images, labels, seeds):
        return images + labels.astype(np.uint8)[:, None, None, None]


@pytest.fixture
def cache(tmp_path):
    """Two configurations of dataset `toy`: v1 with 20 pairs in 3 shards, v2 with 5 pairs in 1 shard."""
    images = np.random.default_rng(0).integers(0, 200, size=(20, 4, 4, 3), dtype=np.uint8)
    caches = {}
    for tag, n in (("v1", 20), ("v2", 5)):
        c = ModCache(tmp_path, "toy", Tagged(tag).config(), shard_size=8)
        c.get_or_generate(Tagged(tag), images[:n], np.arange(n), np.zeros(n, dtype=np.int64))
        caches[tag] = c
    (tmp_path / "_engines").mkdir()  # engines' own cache lives beside: not listed
    return tmp_path, caches


def test_ls_lists_configurations_with_pairs_bytes_and_last_use(cli, cache):
    root, caches = cache
    code, out, _ = cli("cache", "ls", "--cache-dir", root, "--json")
    doc = json.loads(out)
    assert code == 0 and doc["cache_dir"] == str(root)
    rows = {r["config"]: r for r in doc["configs"]}
    assert set(rows) == {caches["v1"].dir.name, caches["v2"].dir.name}
    v1 = rows[caches["v1"].dir.name]
    assert (v1["dataset"], v1["engine"], v1["shards"], v1["pairs"], v1["unreadable"]) == ("toy", "counting", 3, 20, 0)
    assert v1["generator"] == {"engine": "counting", "tag": "v1"}
    assert v1["bytes"] == sum(p.stat().st_size for p in caches["v1"].dir.iterdir())
    assert v1["last_use"][:10] == time.strftime("%Y-%m-%d")
    code, out, _ = cli("cache", "ls", "--cache-dir", root)
    assert code == 0 and caches["v1"].dir.name in out and "2 configuration(s), 25 pairs" in out


def test_lookup_records_the_last_use(cache):
    root, caches = cache
    used = caches["v2"].dir / "last-use"
    os.utime(used, (1_000_000_000, 1_000_000_000))
    for shard in caches["v2"].dir.glob("shard-*.npz"):
        os.utime(shard, (1_000_000_000, 1_000_000_000))
    caches["v2"].lookup(np.arange(2), np.zeros(2, dtype=np.int64))
    assert time.time() - used.stat().st_mtime < 60


def test_ls_of_an_empty_or_missing_cache(cli, tmp_path):
    code, out, _ = cli("cache", "ls", "--cache-dir", tmp_path / "nothing-here")
    assert code == 0 and "no EchoMod cache entries" in out
    assert not (tmp_path / "nothing-here").exists()


def test_verify_names_the_damaged_shards_and_exits_1(cli, cache):
    root, caches = cache
    code, out, _ = cli("cache", "verify", "--cache-dir", root)
    assert code == 0 and "4 shard(s) in 2 configuration(s)" in out and "4 ok" in out
    damaged = caches["v1"].shard_path(1)
    raw = bytearray(damaged.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    damaged.write_bytes(bytes(raw))
    code, out, _ = cli("cache", "verify", "--cache-dir", root)
    assert code == 1 and f"damaged: {damaged}: " in out and "3 ok, 1 damaged" in out
    assert damaged.exists()  # verify changes nothing
    code, out, _ = cli("cache", "verify", "--cache-dir", root, "--json", "--config", caches["v1"].dir.name[:6])
    doc = json.loads(out)
    assert code == 1 and doc["shards"] == 3 and [d["shard"] for d in doc["damaged"]] == [str(damaged)]
    code, out, _ = cli("cache", "verify", "--cache-dir", root, "--config", caches["v2"].dir.name[:6])
    assert code == 0


def test_prune_by_configuration_with_dry_run(cli, cache):
    root, caches = cache
    prefix = caches["v2"].dir.name[:8]
    code, out, _ = cli("cache", "prune", "--cache-dir", root, "--config", prefix, "--dry-run")
    assert code == 0 and "would delete 1 configuration(s), 5 pairs" in out and caches["v2"].dir.exists()
    code, out, _ = cli("cache", "prune", "--cache-dir", root, "--config", prefix, "--json")
    doc = json.loads(out)
    assert code == 0 and [r["config"] for r in doc["configs"] if r["removed"]] == [caches["v2"].dir.name]
    assert not caches["v2"].dir.exists() and caches["v1"].dir.exists()


def test_prune_by_last_use(cli, cache):
    root, caches = cache
    for path in caches["v1"].dir.iterdir():
        os.utime(path, (1_600_000_000, 1_600_000_000))  # 2020-09-13
    code, out, _ = cli("cache", "prune", "--cache-dir", root, "--unused-since", "2021-01-01")
    assert code == 0 and "deleted 1 configuration(s), 20 pairs" in out
    assert not caches["v1"].dir.exists() and caches["v2"].dir.exists()
    code, out, _ = cli("cache", "prune", "--cache-dir", root, "--unused-since", "30d")
    assert code == 0 and "nothing to prune" in out and caches["v2"].dir.exists()
    code, out, _ = cli("cache", "prune", "--cache-dir", root, "--dataset", "toy", "--all-configs")
    assert code == 0 and not (root / "toy").exists() and (root / "_engines").exists()


@pytest.mark.parametrize("args, message", [
    ([], "say what to prune"),
    (["--config", "ffffffffff"], "no configuration in"),
    (["--unused-since", "yesterday"], "--unused-since must be a date"),
])
def test_prune_refuses_unclear_requests_in_one_line(cli, cache, args, message):
    root, caches = cache
    code, out, err = cli("cache", "prune", "--cache-dir", root, *args)
    assert code == 2 and err.startswith(f"echobench: error: {message}") and err.count("\n") == 1
    assert caches["v1"].dir.exists() and caches["v2"].dir.exists()


@pytest.mark.parametrize("action", ["ls", "verify", "prune"])
def test_cache_commands_help_and_file_as_cache_dir(cli, tmp_path, action, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli("cache", action, "--help")
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and "examples:" in out and f"echobench cache {action}" in out and "--json" in out
    (tmp_path / "f").write_text("")
    code, _, err = cli("cache", action, "--cache-dir", tmp_path / "f", *(["--all-configs"] if action == "prune" else []))
    assert code == 2 and "is a file, not a directory" in err
