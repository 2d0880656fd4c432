"""Named random streams derived from a run's seed.

Every random choice of a run (noise, split, weights, shuffling) draws from its own stream, derived
from (seed, stream name) through `np.random.SeedSequence`. Adding a new consumer of randomness thus
never shifts the numbers an existing one sees, and nothing relies on global seeding.
"""

from __future__ import annotations

import numpy as np

from echobench.checks import check_seed


def _sequence(seed: int, stream: str) -> np.random.SeedSequence:
    check_seed(seed)  # a negative seed is a user's mistake, not numpy's ValueError
    return np.random.SeedSequence([int(seed), *stream.encode()])


def numpy_rng(seed: int, stream: str) -> np.random.Generator:
    return np.random.default_rng(_sequence(seed, stream))


def torch_seed(seed: int, stream: str) -> int:
    """A 63-bit integer seed for torch generators, stable across processes and platforms."""
    hi, lo = (int(v) for v in _sequence(seed, stream).generate_state(2, dtype=np.uint32))
    return ((hi & 0x7FFFFFFF) << 32) | lo
