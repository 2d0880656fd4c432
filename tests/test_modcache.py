"""The cache of EchoMod outputs: keys, sharing, corruption, SIGKILL resume."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from echobench.data.shapes import WORLD_VERSION

from echobench.echoalign.echomod import config_digest, sample_seeds
from echobench.echoalign.cache import ModCache, dataset_key, pair_keys, split_pair_keys


def test_pair_keys_order_pairs_by_index_then_label_and_split_back():
    """The one (index, label) pair key of the cache, the dry run and the EchoMod shards."""
    indices, labels = np.array([3, 0, 3, 70_000, 0]), np.array([9, 2, 1, 0, 2])
    keys = pair_keys(indices, labels)
    assert keys.dtype == np.int64 and keys.tolist()[0] == (3 << 20) + 9
    assert len(set(keys.tolist())) == 4  # (0, 2) twice
    ordered = np.unique(keys)
    back_indices, back_labels = split_pair_keys(ordered)
    assert list(zip(back_indices.tolist(), back_labels.tolist())) == [(0, 2), (3, 1), (3, 9), (70_000, 0)]


class CountingModifier:
    """A deterministic stand-in generator: pixel values shifted by the label and the seed."""

    def __init__(self, tag="v1"):
        self.tag, self.calls, self.generated = tag, 0, 0

    def config(self):
        return {"engine": "counting", "tag": self.tag}

    def generate(self, images, labels, seeds):
        self.calls += 1
        self.generated += len(images)
        shift = (labels.astype(np.int64) * 17 + seeds % 7).astype(np.uint8)
        return images + shift[:, None, None, None]


def _data(n=50, size=4):
    rng = np.random.default_rng(0)
    return rng.integers(0, 200, size=(n, size, size, 3), dtype=np.uint8)


def test_sample_seeds_depend_on_index_label_and_base_only():
    a = sample_seeds(0, "shapes", np.array([3, 4]), np.array([1, 1]))
    b = sample_seeds(0, "shapes", np.array([4]), np.array([1]))
    assert a[1] == b[0]  # the batch does not matter
    assert sample_seeds(0, "shapes", np.array([3]), np.array([2]))[0] != a[0]
    assert sample_seeds(1, "shapes", np.array([3]), np.array([1]))[0] != a[0]
    assert sample_seeds(0, "cifar10", np.array([3]), np.array([1]))[0] != a[0]
    assert a.dtype == np.int64 and (a >= 0).all()


def test_pairs_are_generated_once_and_shared(tmp_path):
    images = _data()
    idx = np.arange(50) + 1000
    labels = np.arange(50) % 5
    mod = CountingModifier()
    cache = ModCache(tmp_path, "toy", mod.config(), shard_size=16)
    first, stats = cache.get_or_generate(mod, images, idx, labels)
    assert (stats.generated, stats.cached) == (50, 0)
    expected = mod.generate(images, labels, sample_seeds(0, "toy", idx, labels))
    np.testing.assert_array_equal(first, expected)

    # another noise setting: half the labels change → only those pairs are new
    labels2 = labels.copy()
    labels2[::2] = (labels2[::2] + 1) % 5
    mod2 = CountingModifier()
    again, stats2 = ModCache(tmp_path, "toy", mod2.config(), shard_size=16).get_or_generate(mod2, images, idx, labels2)
    assert (stats2.generated, stats2.cached) == (25, 25)
    assert mod2.generated == 25
    np.testing.assert_array_equal(again, mod.generate(images, labels2, sample_seeds(0, "toy", idx, labels2)))

    # a subset in another order comes back aligned with the request
    order = np.array([7, 3, 40])
    sub, stats3 = cache.get_or_generate(CountingModifier(), images[order], idx[order], labels[order])
    assert stats3.generated == 0
    np.testing.assert_array_equal(sub, first[order])


def test_config_is_part_of_the_key(tmp_path):
    a, b = CountingModifier("v1"), CountingModifier("v2")
    assert ModCache(tmp_path, "toy", a.config()).dir != ModCache(tmp_path, "toy", b.config()).dir
    assert config_digest({"x": 1, "y": 2}) == config_digest({"y": 2, "x": 1})
    assert dataset_key("toy", {}) == "toy"  # a name no loader registers: its options as given
    assert dataset_key("shapes", {}) == dataset_key("shapes", {"world": WORLD_VERSION}) != "shapes"
    assert dataset_key("shapes", {"n_train": 10}) != dataset_key("shapes", {"n_train": 11})


def test_corrupt_shard_is_regenerated_with_a_warning(tmp_path):
    images, idx, labels = _data(20), np.arange(20), np.zeros(20, dtype=np.int64)
    mod = CountingModifier()
    cache = ModCache(tmp_path, "toy", mod.config(), shard_size=8)
    good, _ = cache.get_or_generate(mod, images, idx, labels)
    path = cache.shard_path(1)
    raw = bytearray(path.read_bytes())
    at = raw.find(good[8:16].tobytes())
    assert at > 0
    raw[at + 5] ^= 0xFF  # flip a byte inside the stored images
    path.write_bytes(bytes(raw))
    mod2 = CountingModifier()
    with pytest.warns(UserWarning, match="checksum"):
        again, stats = cache.get_or_generate(mod2, images, idx, labels)
    assert stats.corrupt_shards == 1 and stats.generated == 8 and stats.cached == 12
    np.testing.assert_array_equal(again, good)


SLOW_WRITER = textwrap.dedent("""
    import sys, time
    import numpy as np
    sys.path.insert(0, {tests!r})
    from test_modcache import CountingModifier, _data
    from echobench.echoalign.cache import ModCache

    class Slow(CountingModifier):
        def generate(self, images, labels, seeds):
            time.sleep(0.4)
            return super().generate(images, labels, seeds)

    mod = Slow()
    ModCache({root!r}, "toy", mod.config(), shard_size=10).get_or_generate(
        mod, _data(100), np.arange(100), np.arange(100) % 3, batch_size=5)
""")


def test_sigkill_mid_generation_then_resume(tmp_path, subprocess_env):
    script = SLOW_WRITER.format(tests=os.path.dirname(__file__), root=str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-c", script], env=subprocess_env)
    cache = ModCache(tmp_path, "toy", CountingModifier().config(), shard_size=10)
    deadline = time.time() + 60
    while time.time() < deadline and len(list(cache.dir.glob("shard-*.npz"))) < 2:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list(cache.dir.glob("shard-*.npz")))
    assert 2 <= done < 10, "the writer should have been killed mid-way"
    mod = CountingModifier()
    images, idx, labels = _data(100), np.arange(100), np.arange(100) % 3
    out, stats = cache.get_or_generate(mod, images, idx, labels)
    assert stats.cached == 10 * done and stats.generated == 100 - 10 * done
    np.testing.assert_array_equal(out, mod.generate(images, labels, sample_seeds(0, "toy", idx, labels)))
