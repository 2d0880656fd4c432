"""EchoMod's generation for a set of cells, split into shards that separate processes can run.

The cells of the EchoAlign methods (`echoalign`, `echoalign-released`, `im-only`, `echoselect-only`)
need EchoMod's output for every (training index, noisy label) of their training split. Those pairs
live in the cache (`echobench/echoalign/cache.py`), keyed by dataset and generator config, and a pair made
once serves every cell that needs it. An executor that runs cells in parallel therefore generates the
pairs first, once, split into shards, and the training of each cell then only reads the cache:

    groups = generation_groups(cells)            # one group per (dataset, options, engine, options, base seed)
    for group in groups:
        for i in range(n):
            generate_shard(group, (i, n), ...)   # in n processes: cache shards whose number % n == i

Shard (i, n) is the same split as `echobench modify --shard i/n`: cache shard s (dataset indices
s·SHARD_SIZE … (s+1)·SHARD_SIZE − 1) belongs to generation shard s mod n, so no two generation
shards ever write the same cache file. Each shard recomputes the cells' noisy labels and splits
exactly as the runner does (`runner.make_noisy_labels`, `noise.split_train_val` with the cell's seed),
so it generates exactly the pairs the cells will look up.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from echobench.harness.context import RunContext
from echobench.harness.suite import RunSpec, RuntimeSpec, SelectionSpec
from echobench.training.method import uses_echomod


@dataclass(frozen=True)
class GenerationGroup:
    """Cells whose pairs come from one generator on one dataset (one cache directory)."""

    dataset: str
    dataset_options: dict
    engine: str
    engine_options: dict
    base_seed: int
    batch_size: int
    cells: tuple[dict, ...]  # RunSpec.to_dict() of each cell

    @property
    def key(self) -> str:
        return generator_key(self.dataset, self.dataset_options, self.engine, self.engine_options, self.base_seed)

    def describe(self) -> str:
        options = ",".join(f"{k}={v}" for k, v in sorted(self.engine_options.items()))
        return f"{self.dataset} {self.engine}{f'[{options}]' if options else ''} base_seed={self.base_seed}"


def generator_key(dataset: str, dataset_options: dict, engine: str, engine_options: dict, base_seed: int) -> str:
    return json.dumps([dataset, dataset_options, engine, engine_options, int(base_seed)], sort_keys=True)


def group_key_of(spec: RunSpec) -> str | None:
    """The generation group a cell reads from, or None when its method does not use EchoMod."""
    from echobench.echoalign.echomod import default_engine

    if not uses_echomod(spec.method):
        return None
    p = spec.method_params
    return generator_key(spec.dataset, spec.dataset_options, p.get("engine") or default_engine(spec.dataset),
                         dict(p.get("engine_options") or {}), int(p.get("base_seed", 0)))


def generation_groups(cells: list[RunSpec]) -> list[GenerationGroup]:
    """The EchoMod cells grouped by generator, in the order of their first cell."""
    from echobench.echoalign.echomod import default_engine

    groups: dict[str, list[RunSpec]] = {}
    for spec in cells:
        key = group_key_of(spec)
        if key is not None:
            groups.setdefault(key, []).append(spec)
    out = []
    for members in groups.values():
        first = members[0]
        p = first.method_params
        out.append(GenerationGroup(
            dataset=first.dataset, dataset_options=dict(first.dataset_options),
            engine=p.get("engine") or default_engine(first.dataset), engine_options=dict(p.get("engine_options") or {}),
            base_seed=int(p.get("base_seed", 0)), batch_size=int(p.get("generation_batch_size", 64)),
            cells=tuple(m.to_dict() for m in members)))
    return out


def group_pairs(group: GenerationGroup, dataset) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (training index, noisy label) pairs over the group's cells, sorted by index then label."""
    from echobench.data.noise import split_train_val
    from echobench.echoalign.cache import pair_keys, split_pair_keys
    from echobench.harness.train_cell import make_noisy_labels
    from echobench.seeding import numpy_rng

    keys: set[int] = set()
    for cell in group.cells:
        spec = RunSpec.from_dict(cell)
        noisy = make_noisy_labels(spec, dataset)
        train_idx, _ = split_train_val(len(noisy.labels), numpy_rng(spec.seed, "split"), spec.protocol["val_fraction"])
        keys.update(pair_keys(train_idx, noisy.labels[train_idx]).tolist())
    return split_pair_keys(np.array(sorted(keys), dtype=np.int64))


def generate_shard(group: GenerationGroup, shard: tuple[int, int], ctx: RunContext) -> dict[str, Any]:
    """Generate (or find in the cache) the pairs of the group's cells in cache shards ≡ i (mod n)."""
    from echobench.echoalign.methods import modify_pairs
    from echobench.echoalign.cache import SHARD_SIZE
    from echobench.harness.train_cell import get_dataset

    started = time.perf_counter()
    i, n = shard
    data = get_dataset(group.dataset, group.dataset_options, ctx.data_root)
    indices, labels = group_pairs(group, data)
    mine = (indices // SHARD_SIZE) % n == i
    doc: dict[str, Any] = {"group": group.describe(), "shard": f"{i}/{n}", "pairs": int(mine.sum()), "new": 0,
                           "from_cache": 0}
    if mine.any():  # an empty shard never loads the generator
        _, stats = modify_pairs(group.dataset, group.dataset_options, list(data.class_names),
                                np.asarray(data.train_images)[indices[mine]], indices[mine], labels[mine],
                                engine=group.engine, engine_options=group.engine_options, base_seed=group.base_seed,
                                device=ctx.resolved_device, cache_dir=ctx.cache_dir,
                                batch_size=group.batch_size)
        doc.update(new=stats.generated, from_cache=stats.cached)
    doc["seconds"] = round(time.perf_counter() - started, 3)
    return doc


def generation_spec(spec) -> RunSpec | None:
    """The training cell whose EchoMod pairs a cell needs: itself, or for a selection cell `echoalign` on
    its setting with its generator's settings (engine, options, base seed, batch); None for a runtime cell."""
    if isinstance(spec, RuntimeSpec):
        return None
    if not isinstance(spec, SelectionSpec):
        return spec
    setting = spec.setting_spec()
    generator = {k: spec.params[k] for k in ("engine", "engine_options", "base_seed", "generation_batch_size")
                 if spec.params.get(k) is not None}
    return RunSpec(setting.dataset, setting.dataset_options, setting.noise, setting.method, generator, setting.seed,
                   setting.protocol)


def check_cache_writable(cells: list, ctx: RunContext) -> None:
    """Before a run: a read-only EchoMod cache is fine while it holds every pair the cells need; when
    pairs are missing, one line now instead of the same failure in every EchoAlign cell. Looks pairs up
    only when the cache cannot be written (the common case costs one probe file)."""
    from echobench.echoalign.cache import cache_for
    from echobench.echoalign.echomod import make_modifier, modifier_config
    from echobench.files import create_temporary
    from echobench.harness.train_cell import get_dataset

    root = Path(ctx.cache_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, probe = create_temporary(root / ".probe")
        os.close(fd)
        os.unlink(probe)
        return
    except OSError:
        pass
    for group in generation_groups([g for g in map(generation_spec, cells) if g is not None]):
        data = get_dataset(group.dataset, group.dataset_options, ctx.data_root)
        indices, labels = group_pairs(group, data)
        names, size = list(data.class_names), int(data.train_images.shape[1])
        key = (modifier_config(group.engine, group.dataset, names, size, group.engine_options, ctx.resolved_device)
               or make_modifier(group.engine, group.dataset, names, size, group.engine_options, "cpu").config())
        cache = cache_for(key, group.dataset, group.dataset_options, base_seed=group.base_seed, root=ctx.cache_dir)
        _, found = cache.lookup(indices, labels)
        if not found.all():
            cache.check_writable(int((~found).sum()))
