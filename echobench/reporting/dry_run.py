"""What a suite will cost before it runs: cells, EchoMod's distinct pairs, projected GPU-hours.

EchoMod generates one image per distinct (dataset, training index, noisy label) among the cells of
the methods that use EchoMod (`echobench.training.method.uses_echomod`: the EchoAlign methods): a pair made
for one noise setting or seed serves every other cell that needs it (`echobench.echoalign.cache`). Counting
them needs each cell's noisy labels and split, exactly as the runner draws them, so it needs the
dataset's labels (and images, for instance-dependent noise); a dataset that is not available here is
reported as such instead of guessed.

The selection cells of the paper's Table 4 (`echobench.harness.selection_cell`) run EchoMod on their settings too:
their pairs are counted with the training cells' (they are the `echoalign` cells' pairs where the
settings coincide, as in the `paper` suite). Runtime cells generate from random inputs, not pairs.

GPU-hours of EchoMod are projected at the paper's own rates (appendix D: V100-SXM2, 512², batch 16,
1.24 s per image; RTX 4090, 512², batch 8, 0.61 s per image) — projections, not measurements. The
EchoSelect and training stages are projected by `echobench.reporting.training_cost` (from each method's data
passes, FLOP per image and a measured efficiency); they need no data on disk.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from echobench.errors import EchobenchError
from echobench.training.method import uses_echomod


def echomod_pairs(cells, data_root: str | None = None) -> dict[str, Any]:
    """Distinct (index, label) pairs per dataset key over the aligning cells, and cells needing them."""
    from echobench.echoalign.echomod import default_engine, is_diffusion_engine
    from echobench.echoalign.cache import dataset_key, pair_keys
    from echobench.data.noise import split_train_val
    from echobench.training.protocols import Protocol
    from echobench.harness.train_cell import get_dataset, make_noisy_labels
    from echobench.seeding import numpy_rng

    per_dataset: dict[str, set] = defaultdict(set)
    requested: dict[str, int] = defaultdict(int)
    unavailable: dict[str, str] = {}
    train_sizes: dict[tuple, int] = {}  # setting → training-split size, counted once per setting
    diffusion: set[str] = set()  # dataset keys that some cell modifies with a diffusion engine
    for spec in cells:
        if not uses_echomod(spec.method):
            continue
        key = dataset_key(spec.dataset, spec.dataset_options)
        if is_diffusion_engine(spec.method_params.get("engine") or default_engine(spec.dataset)):
            diffusion.add(key)
        setting = (key, spec.noise, spec.seed, spec.protocol["val_fraction"])
        if key in unavailable:
            continue
        if setting in train_sizes:  # the same noisy labels and split as a cell already counted
            requested[key] += train_sizes[setting]
            continue
        # a dry run never downloads: a dataset that is not on disk is reported as unavailable
        options = dict(spec.dataset_options) if spec.dataset == "shapes" else {**spec.dataset_options, "download": False}
        try:
            data = get_dataset(spec.dataset, options, data_root)
        except EchobenchError as exc:
            unavailable[key] = str(exc).splitlines()[0]
            continue
        noisy = make_noisy_labels(spec, data)
        protocol = Protocol(**{**spec.protocol, "milestones": tuple(spec.protocol["milestones"])})
        train_idx, _ = split_train_val(len(noisy.labels), numpy_rng(spec.seed, "split"), protocol.val_fraction)
        pairs = pair_keys(train_idx, noisy.labels[train_idx])
        per_dataset[key].update(pairs.tolist())
        train_sizes[setting] = len(train_idx)
        requested[key] += len(train_idx)
    return {"pairs": {k: len(v) for k, v in per_dataset.items()}, "requested": dict(requested),
            "unavailable": unavailable, "diffusion": sorted(diffusion & set(per_dataset))}


def projected_hours(pairs: int) -> dict[str, float]:
    """EchoMod GPU-hours for `pairs` images at the paper's measured rates (projections)."""
    from echobench.reporting.runtime import paper_efficiencies

    return {gpu: round(pairs * row["seconds_per_image"] / 3600, 2) for gpu, row in paper_efficiencies().items()}


def dry_run_summary(cells, data_root: str | None = None, count_pairs: bool = True, selection=(),
                    runtime=()) -> dict[str, Any]:
    """Counts of a suite's cells: `cells` its training cells (RunSpec), `selection` and `runtime` its cells
    of those kinds (`echobench.harness.suite.SelectionSpec`, `RuntimeSpec`); "cells" is the total of all kinds and
    "cells_per_method" counts the training cells."""
    by_method: dict[str, int] = defaultdict(int)
    for c in cells:
        by_method[c.method] += 1
    out: dict[str, Any] = {"cells": len(cells) + len(selection) + len(runtime),
                           "cells_per_kind": {"train": len(cells), "selection": len(selection), "runtime": len(runtime)},
                           "cells_per_method": dict(sorted(by_method.items()))}
    settings = [s.setting_spec() for s in selection]  # each selection cell's setting, as an echoalign cell
    if count_pairs and (settings or any(uses_echomod(c.method) for c in cells)):
        pairs = echomod_pairs([*cells, *settings], data_root)
        total = sum(pairs["pairs"].values())
        # only pairs made by the diffusion model cost GPU time (`shapes`' procedural engine runs on the CPU)
        generated = sum(pairs["pairs"][k] for k in pairs["diffusion"])
        out["echomod"] = {**pairs, "total_pairs": total, "diffusion_pairs": generated,
                          "projected_gpu_hours": {"basis": "paper appendix D rates at 512² for the diffusion "
                                                           "engines' pairs (projection)", **projected_hours(generated)}}
    if count_pairs:
        from echobench.reporting.training_cost import echoselect_projection, training_projection

        out["echoselect"] = echoselect_projection(cells, selection, data_root)
        out["training"] = training_projection(cells, data_root)
    return out


def format_dry_run(summary: dict[str, Any]) -> str:
    kinds = summary.get("cells_per_kind", {})
    per_method = ", ".join(f"{m} {n}" for m, n in summary["cells_per_method"].items())
    if kinds.get("selection") or kinds.get("runtime"):
        lines = [f"{summary['cells']} cells: " + ", ".join(f"{n} {k}" for k, n in kinds.items() if n)
                 + (f" (training cells: {per_method})" if per_method else "")]
    else:
        lines = [f"{summary['cells']} cells: " + per_method]
    e = summary.get("echomod")
    if e:
        for key, n in e["pairs"].items():
            lines.append(f"EchoMod pairs for {key}: {n:,} distinct (of {e['requested'][key]:,} requested by the cells)")
        for key, why in e["unavailable"].items():
            lines.append(f"EchoMod pairs for {key}: not counted, the dataset is not available here ({why})")
    lines += _stage_table(summary)
    return "\n".join(lines)


def _stage_table(summary: dict[str, Any]) -> list[str]:
    """The projected GPU-hours per stage (and per method for training) as a table."""
    from tabulate import tabulate

    rows = []
    e = summary.get("echomod")
    if e and e["diffusion_pairs"]:
        h = e["projected_gpu_hours"]
        rows.append(["EchoMod", f"{e['diffusion_pairs']:,} images", h["v100"], h["rtx4090"], "the paper's appendix D rates"])
    s = summary.get("echoselect")
    if s and s["images"]:
        rows.append(["EchoSelect", f"{s['images']:,} images", s["v100"], s["rtx4090"], "CLIP FLOP, the paper's EchoMod efficiency"])
    t = summary.get("training")
    if t and t["per_method"]:
        for m, h in t["per_method"].items():
            rows.append([f"training: {m}", "", h["v100"], h["rtx4090"], ""])
        rows.append(["training (all)", "", t["total"]["v100"], t["total"]["rtx4090"],
                     f"FLOP at {t['efficiency']:.1%} of peak (measured on an H200)"])
    if not rows:
        return []
    out = ["", "Projected GPU-hours per stage (projections, not measurements):",
           tabulate(rows, headers=["stage", "work", "V100", "RTX 4090", "basis"])]
    if t:
        out += [f"Training of {d}: not projected ({why})" for d, why in t["unavailable"].items()]
        out += _packed_lines(t.get("packed"))
    return out


def _packed_lines(p: dict[str, Any] | None) -> list[str]:
    """The training stage with several cells per GPU (`training_cost.packed_projection`)."""
    if not p:
        return []
    if not p["measured"]:
        return [f"Training with several cells per GPU (--cells-per-gpu): not projected, {p['note']}"]
    gpu = p["gpu"].upper()
    lines = [f"Training on one {gpu}, from {p['source']} (measured; {p['basis']}):"]
    for key, what in (("one_cell", "one cell at a time"), ("packed", "packed"), ("packed_compiled", "packed, compiled")):
        r = p.get(key)
        if r:
            lines.append(f"  {what}: {r['hours']:,} GPU-hours ({r['cells_per_gpu']} cell(s) per GPU, "
                         f"{r['images_per_s']:,} images/s, {r['speedup_vs_one_cell']}× one cell"
                         + (f"; protocol {r['protocol']}" if "protocol" in r else "") + ")")
    return lines
