"""The parts of a results directory's report that are not training tables, and its index page.

`echobench.reporting.tables.write_reports` calls these for the cells that `echobench.harness.cell_kinds` wrote:

- Table 4 (the paper's §5.3, "Sensitivity Analysis"), from the selection cells: per dataset, noise
  setting and fixed selection accuracy (precision), how many training samples EchoSelect and each
  peer keep when ranking by their own score, mean ± std over seeds, in the paper's layout (rows:
  noise rate × "select. acc."; columns: BLTM, Ours) with the paper's count beside ours
  (`echobench.reporting.paper_reference.paper_selected`) and the difference. The paper prints every count
  "/ 50000", the whole CIFAR-10 training set, while our cells measure the 90% training split
  (45,000 on CIFAR-10): the difference is therefore taken between *shares* of the measured set, in
  percentage points. Beside it, EchoSelect at its τ (precision, recall, AUROC, KS: §4.2 and Figure 3)
  and the figures each cell wrote (similarity histograms, Figure 3; τ sweeps, Figure 4b).
- The runtime report (appendix D, Tables 6 and 7), from the runtime cells: every measured row; the
  SD 1.5 measurements in the paper's Table 6 and 7 layouts beside the paper's GPU-hours (our device
  measured, and projected to the paper's GPUs by `echobench.reporting.runtime`), then the full runtime
  report with those measurements. Measurements of the `tiny` configuration (the CPU variant) are
  listed as measured only: the compute model is SD 1.5's.
- `index.md`: one Markdown page linking every file the report wrote and every figure, with the
  configuration (suite, cells per kind, the recorded commands) and the environments of the cells.

Every file is written atomically (`echobench.harness.store.atomic_write_text`).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from echobench.data.noise import NoiseSpec
from echobench.files import atomic_write_text, read_json
from echobench.harness.store import COMMANDS_DIR, Store

KIND_ORDER = ("train", "selection", "runtime")
FIGURE_TITLES = {"histogram": "similarity histograms", "tau_sweep": "τ sweep", "report": "select.md"}
SELECTOR_TITLES = {"bltm": "BLTM", "echoselect": "EchoSelect (Ours)"}  # the paper's Table 4 column names


# --- reading a results directory ----------------------------------------------------------------------

def collect_cells(results_dir: str | Path) -> dict[str, Any]:
    """Every cell's (run id, config, result) by kind, counts of finished/failed/pending per kind, and the
    distinct environments that ran them."""
    store = Store(results_dir)
    by_kind: dict[str, list] = {k: [] for k in KIND_ORDER}
    counts = {k: {"finished": 0, "failed": 0, "pending": 0} for k in KIND_ORDER}
    environments: dict[str, dict] = {}
    for rid, config, result, error in store.iter_cells():
        kind = config.get("kind", "train")
        if kind not in counts:
            continue  # a kind this version does not know: left out, never misread
        if result is None:
            counts[kind]["failed" if error else "pending"] += 1
            continue
        counts[kind]["finished"] += 1
        by_kind[kind].append((rid, config, result))
        env = config.get("environment") or {}
        key = json.dumps([env.get("git"), env.get("python"), env.get("device"), env.get("packages")], sort_keys=True)
        entry = environments.setdefault(key, {"environment": env, "cells": defaultdict(int)})
        entry["cells"][kind] += 1
    return {"cells": by_kind, "counts": counts,
            "environments": [{"environment": e["environment"], "cells": dict(e["cells"])} for e in environments.values()]}


def commands(results_dir: str | Path) -> list[dict[str, Any]]:
    """The `echobench run` invocations recorded in OUT/commands/, oldest first."""

    folder = Path(results_dir) / COMMANDS_DIR
    out = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            out.append({**read_json(path), "file": f"{COMMANDS_DIR}/{path.name}"})
        except (OSError, ValueError):
            continue  # a record being written by a concurrent run: skipped this time
    return out


# --- Table 4 ------------------------------------------------------------------------------------------

def _pkey(precision: float) -> str:
    return f"{round(precision * 100):d}%"


def _mean_std(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _mean_or_none(values: list[float]) -> float | None:
    """The mean of the values that are numbers (a peer that keeps nothing has no precision), or None."""
    finite = [float(v) for v in values if v is not None and np.isfinite(v)]
    return round(float(np.mean(finite)), 4) if finite else None


def table4_document(selection_cells: list[tuple[str, dict, dict]]) -> dict[str, Any]:
    """Table 4 from the selection cells: records per (dataset, noise, precision, selector) with ours and
    the paper's count, EchoSelect's separation at τ per setting, and each cell's figures."""
    from echobench.reporting.paper_reference import TABLE4, TABLE4_TOTAL, paper_selected

    by_setting: dict[tuple[str, str], list[tuple[str, dict, dict]]] = defaultdict(list)
    for rid, config, result in selection_cells:
        spec = config["spec"]
        by_setting[(spec["dataset"], spec["noise"])].append((rid, spec, result))
    records, settings, figures = [], [], []
    for (dataset, noise) in sorted(by_setting, key=lambda k: (k[0], NoiseSpec.parse(k[1]).sort_key())):
        cells = sorted(by_setting[(dataset, noise)], key=lambda c: c[1]["seed"])
        seeds = [spec["seed"] for _, spec, _ in cells]
        n_train = [result["echoselect"]["n"] for _, _, result in cells]
        paper_precisions = [p for n, p, _ in TABLE4 if n == noise]
        measured = sorted({float(p) for _, spec, _ in cells for p in spec["precisions"]})
        precisions = paper_precisions or measured  # the paper's rows where it has this noise rate
        selectors = list(dict.fromkeys(["bltm", "echoselect", *[s for _, _, r in cells for s in r["table4"]]]))
        for precision in precisions:
            for selector in selectors:
                values = [r["table4"].get(selector, {}).get(_pkey(precision)) for _, _, r in cells]
                paper = paper_selected(noise, precision, selector, dataset)
                rec: dict[str, Any] = {"dataset": dataset, "noise": noise, "precision": precision, "selector": selector,
                                       "seeds": seeds, "values": values, "n_train": n_train,
                                       "paper_selected": paper, "paper_total": TABLE4_TOTAL if paper is not None else None,
                                       "paper_share": None if paper is None else round(paper / TABLE4_TOTAL, 6)}
                if all(v is not None for v in values):
                    mean, std = _mean_std(values)
                    share = float(np.mean([v / n for v, n in zip(values, n_train)]))
                    rec.update(mean=round(mean, 2), std=round(std, 2), share=round(share, 6))
                    if paper is not None:
                        rec["difference_share_pp"] = round(100 * (share - paper / TABLE4_TOTAL), 2)
                        rec["difference_selected"] = round(mean - paper, 2)
                elif paper is None:
                    continue  # neither we nor the paper have this selector here
                records.append(rec)
        e = [r["echoselect"] for _, _, r in cells]
        settings.append({
            "dataset": dataset, "noise": noise, "seeds": seeds, "n_train": n_train,
            "tau": sorted({x["tau"] for x in e}),
            **{k: round(_mean_std([x[k] for x in e])[0], 4) for k in ("n_selected", "precision", "recall", "auroc",
                                                                        "ks_statistic", "n_noisy")},
            "peers": {name: {k: _mean_or_none([r["peers"][name][k] for _, _, r in cells])
                             for k in ("n_selected", "precision", "recall")}
                      for name in cells[0][2]["peers"] if all(name in r["peers"] for _, _, r in cells)},
        })
        for rid, spec, result in cells:
            files = {k: f"cells/{rid}/{v}" for k, v in result.get("files", {}).items()}
            figures.append({"run_id": rid, "dataset": dataset, "noise": noise, "seed": spec["seed"], "files": files})
    return {"caption": "Table 4: samples kept at a fixed selection accuracy (precision), ranking by each "
                       "selector's score (paper §5.3)",
            "records": records, "settings": settings, "figures": figures}


def _count(mean: float, std: float | None, total: float, share: float) -> str:
    spread = f" ± {std:,.0f}" if std is not None else ""
    return f"{mean:,.0f}{spread} / {total:,.0f} ({100 * share:.1f}%)"


def table4_markdown(doc: dict[str, Any]) -> str:
    from tabulate import tabulate


    parts = ["## Table 4: sample selection quality (paper §5.3)\n",
             "Samples kept at a fixed selection accuracy (the precision of the kept set, against the clean labels), "
             "ranking by each selector's own score. Ours: mean ± std over seeds of the count in the training "
             "split and its share; paper: its count of 50,000 (Table 4 prints every cell \"/ 50000\") and share; "
             "Δ: ours − paper, in percentage points of the set (the two sets differ in size). BLTM's numbers in "
             "the paper are cited from its own publication (§5.3). — : not measured / no value in the paper.\n"]
    records = doc["records"]
    for dataset in dict.fromkeys(r["dataset"] for r in records):
        recs = [r for r in records if r["dataset"] == dataset]
        selectors = list(dict.fromkeys(r["selector"] for r in recs))
        with_paper = [s for s in selectors if any(r["paper_selected"] is not None for r in recs if r["selector"] == s)]
        by_key = {(r["noise"], r["precision"], r["selector"]): r for r in recs}
        headers = ["noise", "select. acc."]
        for s in selectors:
            name = SELECTOR_TITLES.get(s, s)
            headers += [f"{name}: paper", f"{name}: ours", "Δ pp"] if s in with_paper else [f"{name}: ours"]
        headers.append("EchoSelect / BLTM: ours, paper")
        rows = []
        for noise, precision in dict.fromkeys((r["noise"], r["precision"]) for r in recs):
            row = [NoiseSpec.parse(noise).label(), f"{precision * 100:g}%"]
            for s in selectors:
                r = by_key.get((noise, precision, s))
                ours = "—" if r is None or "mean" not in r else _count(
                    r["mean"], r["std"] if len(r["values"]) > 1 else None, float(np.mean(r["n_train"])), r["share"])
                if s in with_paper:
                    paper = "—" if r is None or r["paper_selected"] is None else _count(
                        r["paper_selected"], None, r["paper_total"], r["paper_share"])
                    diff = "—" if r is None or "difference_share_pp" not in r else f"{r['difference_share_pp']:+.1f}"
                    row += [paper, ours, diff]
                else:
                    row.append(ours)
            e, b = by_key.get((noise, precision, "echoselect")), by_key.get((noise, precision, "bltm"))
            ratio_ours = (f"{e['mean'] / b['mean']:.2f}×" if e and b and "mean" in e and "mean" in b and b["mean"] > 0
                          else "—")
            ratio_paper = (f"{e['paper_selected'] / b['paper_selected']:.2f}×"
                           if e and b and e["paper_selected"] and b["paper_selected"] else "—")
            row.append(f"{ratio_ours}, {ratio_paper}")
            rows.append(row)
        seeds = sorted({len(r["seeds"]) for r in recs})
        parts.append(f"### {dataset} ({'/'.join(map(str, seeds))} seed(s))\n")
        parts.append(tabulate(rows, headers, tablefmt="pipe", stralign="center", disable_numparse=True) + "\n")
    parts.append("EchoSelect at its τ (Algorithm 1) and the peers' own selections, mean over seeds "
                 "(precision and recall of the kept set; AUROC and KS statistic of S for clean vs noisy labels, §4.2):\n")
    rows = []
    for st in doc["settings"]:
        peers = "; ".join(f"{SELECTOR_TITLES.get(n, n)} {p['n_selected']:,.0f}"
                          + (f" at {p['precision']:.3f}" if p["precision"] is not None else "") for n, p in st["peers"].items())
        rows.append([st["dataset"], NoiseSpec.parse(st["noise"]).label(), "/".join(f"{t:g}" for t in st["tau"]),
                     f"{st['n_selected']:,.0f} / {np.mean(st['n_train']):,.0f}", f"{st['precision']:.3f}",
                     f"{st['recall']:.3f}", f"{st['auroc']:.3f}", f"{st['ks_statistic']:.3f}", peers or "—"])
    parts.append(tabulate(rows, ["dataset", "noise", "τ", "kept", "precision", "recall", "AUROC", "KS",
                                 "peers' own selections (kept at precision)"],
                          tablefmt="pipe", disable_numparse=True) + "\n")
    links = []
    for f in doc["figures"]:
        links.append(f"- {f['dataset']} {NoiseSpec.parse(f['noise']).label()} seed {f['seed']}: "
                     + ", ".join(f"[{FIGURE_TITLES.get(k, k)}]({v})" for k, v in f["files"].items()))
    parts.append("Figures per cell (Figure 3: similarity of clean vs noisy labels; Figure 4b: τ sweep):\n\n"
                 + "\n".join(links) + "\n")
    return "\n".join(parts)


# --- runtime ------------------------------------------------------------------------------------------

def runtime_document(runtime_cells: list[tuple[str, dict, dict]]) -> dict[str, Any]:
    """The runtime cells' measurements, the SD 1.5 ones in the paper's Table 6/7 layouts beside its
    GPU-hours, and the runtime report (`echobench.reporting.runtime.runtime_report`) of those measurements."""
    from echobench.reporting.runtime import (DATASET_IMAGES, PAPER_TABLE6, PAPER_TABLE7, TABLE6_GPU, TABLE7_BATCH,
                                 TABLE7_RESOLUTION, gpu_hours, normalize_measurement, project, runtime_report)

    rows, sd15 = [], []
    for rid, config, result in sorted(runtime_cells, key=lambda c: (c[1]["spec"]["config"], c[1]["spec"]["resolution"],
                                                                     c[1]["spec"]["batch_size"])):
        spec = config["spec"]
        for m in result["measurements"]:
            rows.append({"run_id": rid, **{k: m.get(k) for k in (
                "config", "device", "resolution", "batch_size", "steps", "engine", "seconds_per_image", "images_per_s",
                "peak_mib", "peak_kind", "parity_max_abs", "speedup_vs_reference")}})
            if spec["config"] == "sd15":
                sd15.append((rid, m, normalize_measurement(m, f"cell {rid}")))
        for name, why in result.get("unsupported", {}).items():
            rows.append({"run_id": rid, "config": spec["config"], "resolution": spec["resolution"],
                         "batch_size": spec["batch_size"], "steps": spec["steps"], "engine": name, "unsupported": why})
    table6 = []
    for dataset, r, b, hours in PAPER_TABLE6:
        if dataset != "cifar10":
            continue
        for rid, raw, m in sd15:
            if (m["resolution"], m["batch_size"]) != (r, b):
                continue
            ours_h = gpu_hours(m["seconds_per_image"], DATASET_IMAGES["cifar10"])
            projected = None if m["gpu"] is None else gpu_hours(project(m["seconds_per_image"], m["gpu"], TABLE6_GPU,
                                                                        resolution=r, steps=m["steps"], cfg=m["cfg"]),
                                                                DATASET_IMAGES["cifar10"])
            table6.append({"resolution": r, "batch_size": b, "row": m["engine"], "device": m["device"], "gpu": m["gpu"],
                           "paper_v100_gpu_hours": hours, "ours_seconds_per_image": m["seconds_per_image"],
                           "ours_gpu_hours": round(ours_h, 3),
                           "ours_projected_v100_gpu_hours": None if projected is None else round(projected, 3),
                           "difference_projected_gpu_hours": None if projected is None or hours is None
                           else round(projected - hours, 3)})
    table7 = []
    for rid, raw, m in sd15:
        if (m["resolution"], m["batch_size"]) != (TABLE7_RESOLUTION, TABLE7_BATCH) or m["gpu"] is None:
            continue
        for gpu, dataset, hours in PAPER_TABLE7:
            if dataset != "cifar10":
                continue
            s = m["seconds_per_image"] if gpu == m["gpu"] else project(m["seconds_per_image"], m["gpu"], gpu,
                                                                     resolution=m["resolution"], steps=m["steps"],
                                                                     cfg=m["cfg"])
            ours = gpu_hours(s, DATASET_IMAGES["cifar10"])
            table7.append({"gpu": gpu, "row": m["engine"], "measured_on": m["gpu"],
                           "kind": "measured" if gpu == m["gpu"] else "projection", "paper_gpu_hours": hours,
                           "ours_gpu_hours": round(ours, 3), "difference_gpu_hours": round(ours - hours, 3)})
    engine_rows = [m for _, raw, m in sd15 if not raw.get("reference")]
    return {"rows": rows, "table6_beside_paper": table6, "table7_beside_paper": table7,
            "report": runtime_report(engine_rows or None)}


def runtime_markdown(doc: dict[str, Any], suite: str | None) -> str:
    from tabulate import tabulate

    from echobench.reporting.runtime import format_runtime_report

    def fmt(v, spec):
        return "—" if v is None else format(v, spec)

    cells = [[r["config"], f"{r['resolution']}²", r["batch_size"], r["steps"], r["engine"],
              r.get("unsupported") or fmt(r.get("seconds_per_image"), ".4g"), fmt(r.get("images_per_s"), ".3g"),
              fmt(r.get("peak_mib"), ".0f"), fmt(r.get("parity_max_abs"), ".1e"),
              fmt(r.get("speedup_vs_reference"), ".2f"), r.get("device") or "—"] for r in doc["rows"]]
    mine = [f"## Runtime cells of this results directory{f' (suite {suite})' if suite else ''}\n",
            "Each cell: `echobench bench engines` at one resolution and batch size; the `diffusers-pipeline` row is "
            "diffusers' stock `StableDiffusionControlNetPipeline` on the same inputs, the others EchoMod's engines. "
            "`tiny` rows (the CPU variant of the runtime suite) check the machinery and are not on the scale of "
            "SD 1.5; only `sd15` rows enter the tables and projections below.\n",
            tabulate(cells, ["config", "resolution", "batch", "steps", "row", "s/image", "images/s", "peak MiB",
                             "max abs Δpixel", "vs stock", "device"], tablefmt="pipe", disable_numparse=True) + "\n"]
    if doc["table6_beside_paper"]:
        rows = [[f"{r['resolution']}²", r["batch_size"], r["row"], fmt(r["paper_v100_gpu_hours"], "g"),
                 f"{r['ours_seconds_per_image']:.4g}", f"{r['ours_gpu_hours']:.2f}",
                 fmt(r["ours_projected_v100_gpu_hours"], ".2f"), fmt(r["difference_projected_gpu_hours"], "+.2f")]
                for r in doc["table6_beside_paper"]]
        device = doc["table6_beside_paper"][0]["device"]
        mine += ["## Table 6 beside ours (CIFAR-10, 50,000 images, GPU-hours)\n",
                 f"Paper: NVIDIA V100-SXM2. Ours: measured on {device}, and projected to the V100 at the efficiency "
                 "measured here (a projection, see below). Δ: projection − paper.\n",
                 tabulate(rows, ["resolution", "batch", "row", "paper V100", "ours s/image", "ours GPU-h",
                                 "ours → V100 (projection)", "Δ"], tablefmt="pipe", disable_numparse=True) + "\n"]
    if doc["table7_beside_paper"]:
        rows = [[r["gpu"], r["row"], f"{r['paper_gpu_hours']:g}", f"{r['ours_gpu_hours']:.2f}", r["kind"],
                 f"{r['difference_gpu_hours']:+.2f}"] for r in doc["table7_beside_paper"]]
        mine += ["## Table 7 beside ours (512², batch 8, CIFAR-10 GPU-hours)\n",
                 tabulate(rows, ["GPU", "row", "paper", "ours", "ours is", "Δ"], tablefmt="pipe",
                          disable_numparse=True) + "\n"]
    note = ("No SD 1.5 measurement in this results directory: its runtime cells ran the `tiny` configuration "
            "(the runtime suite's CPU variant; SD 1.5 at the paper's resolutions is its GPU variant), listed above "
            "as measured. The compute model and projections below are the paper's and the model's only.")
    full = format_runtime_report(doc["report"], no_measurement_note=note)
    head, sep, tail = full.partition("\n## ")
    return head + "\n" + "\n".join(mine) + sep + tail


# --- index page ---------------------------------------------------------------------------------------

def _env_row(entry: dict[str, Any]) -> list[str]:
    env = entry["environment"]
    device = env.get("device") or {}
    name = device.get("name", "?")
    if device.get("type") == "cpu":
        name += f" ({device.get('threads', '?')} torch threads, {device.get('cores', '?')} cores)"
    elif device.get("memory_gib"):
        name += f" ({device['memory_gib']} GiB, CUDA {device.get('cuda')})"
    packages = env.get("packages") or {}
    pk = ", ".join(f"{k} {packages[k]}" for k in ("echobench", "torch", "numpy", "diffusers", "open_clip_torch",
                                                  "faiss-cpu", "faiss-gpu", "onnxruntime") if k in packages)
    cells = ", ".join(f"{n} {k}" for k, n in entry["cells"].items())
    return [cells, name, env.get("git", "unknown"), env.get("python", "?"), env.get("platform", "?"), pk or "—"]


def index_markdown(root: Path, *, suite: str | None, counts: dict, reports: list[tuple[str, str]],
                   figures: list[dict], environments: list[dict], runs: list[dict]) -> str:
    """The index page: configuration, every report file, every figure, the environments."""
    from tabulate import tabulate


    lines = [f"# Results{f' of suite `{suite}`' if suite else ''}\n", f"Directory: `{root}`\n", "## Configuration\n"]
    described = next((r for r in reversed(runs) if r.get("description")), None)
    if suite:
        lines.append(f"- suite: `{suite}`" + (f" ({described['suite_source']}): {described['description']}"
                                               if described else ""))
    total = {k: sum(c[k] for c in counts.values()) for k in ("finished", "failed", "pending")}
    lines.append(f"- cells: {total['finished']} finished, {total['failed']} failed, {total['pending']} pending — "
                 + "; ".join(f"{k}: {c['finished']} finished, {c['failed']} failed, {c['pending']} pending"
                             for k, c in counts.items() if any(c.values())))
    lines.append("- cell files: `cells/<id>/config.json` (spec and environment), `result.json`, `error.json`\n")
    if runs:
        rows = [[r.get("started", "?"), "`" + str(r.get("command", "?")).replace("|", "\\|") + "`", r.get("device", "?"),
                 ", ".join(f"{n} {k}" for k, n in (r.get("cells") or {}).items() if n), f"[record]({r['file']})"]
                for r in runs]
        lines += ["Commands that ran in this directory (recorded by `echobench run`):\n",
                  tabulate(rows, ["started (UTC)", "command", "device", "cells", ""], tablefmt="pipe",
                           disable_numparse=True) + "\n"]
    else:
        lines.append("No command recorded (the directory was written by an `echobench run` that did not record "
                     "commands, or by other means).\n")
    titles = {"report.md": "the tables in the paper's layout, the paper's numbers beside ours",
              "report.tex": "the accuracy tables in LaTeX", "report.csv": "the accuracy tables as CSV",
              "report.json": "everything above as JSON", "runtime.md": "the runtime report (Tables 6 and 7)",
              "runtime.json": "the runtime report as JSON"}
    lines += ["## Reports\n", *[f"- [{name}]({name}): {what or titles.get(name, '')}" for name, what in reports], ""]
    if figures:
        lines += ["## Figures\n",
                  "Per selection cell: the similarity histograms of clean vs noisy labels with τ (the paper's Figure 3) "
                  "and the τ sweep of precision, recall and kept share (Figure 4b).\n"]
        for f in figures:
            title = f"{f['dataset']}, {NoiseSpec.parse(f['noise']).label()}, seed {f['seed']}"
            lines.append(f"### {title}\n")
            files = f["files"]
            lines.append(" · ".join(f"[{FIGURE_TITLES.get(k, k)}]({v})" for k, v in files.items()) + "\n")
            for key in ("histogram", "tau_sweep"):
                if key in files:
                    lines.append(f"![{title}: {FIGURE_TITLES[key]}]({files[key]})\n")
    lines += ["## Environment\n", "What ran the cells (from each cell's `config.json`):\n",
              tabulate([_env_row(e) for e in environments] or [["—"] * 6],
                       ["cells", "device", "git", "python", "platform", "packages"], tablefmt="pipe",
                       disable_numparse=True) + "\n"]
    return "\n".join(lines)


def write_index(root: Path, **kwargs: Any) -> str:
    text = index_markdown(root, **kwargs)
    atomic_write_text(root / "index.md", text)
    return text


def links(markdown: str) -> list[str]:
    """The targets of the Markdown links and images in `markdown` (for tests and checks)."""
    import re

    return re.findall(r"\]\(([^)\s]+)\)", markdown)
