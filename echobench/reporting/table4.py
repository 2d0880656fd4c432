"""Table 4 of a results directory (the paper's §5.3, "Sensitivity Analysis"), from its selection cells.

Per dataset, noise setting and fixed selection accuracy (precision), how many training samples
EchoSelect and each peer keep when ranking by their own score, mean ± std over seeds, in the paper's
layout (rows: noise rate × "select. acc."; columns: BLTM, Ours) with the paper's count beside ours
(`echobench.reporting.paper_reference.paper_selected`) and the difference. The paper prints every
count "/ 50000", the whole CIFAR-10 training set, while our cells measure the 90% training split
(45,000 on CIFAR-10): the difference is therefore taken between *shares* of the measured set, in
percentage points. Beside it, EchoSelect at its τ (precision, recall, AUROC, KS: §4.2 and Figure 3)
and the figures each cell wrote (similarity histograms, Figure 3; τ sweeps, Figure 4b).
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import numpy as np

from echobench.data.noise import NoiseSpec

FIGURE_TITLES = {"histogram": "similarity histograms", "tau_sweep": "τ sweep", "report": "select.md"}
SELECTOR_TITLES = {"bltm": "BLTM", "echoselect": "EchoSelect (Ours)"}  # the paper's Table 4 column names


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

    # One entry per experiment (the cell's spec without its seed): two selection settings of one dataset
    # and noise (another extractor, τ, peers...) are two entries, labelled by what differs, never averaged.
    by_setting: dict[tuple[str, str, str], list[tuple[str, dict, dict]]] = defaultdict(list)
    for rid, config, result in selection_cells:
        spec = config["spec"]
        by_setting[(spec["dataset"], spec["noise"], _identity(spec))].append((rid, spec, result))
    variants = _variant_labels(by_setting)
    records, settings, figures = [], [], []
    for key in sorted(by_setting, key=lambda k: (k[0], NoiseSpec.parse(k[1]).sort_key(), variants[k])):
        dataset, noise, _ = key
        variant = variants[key]
        cells = sorted(by_setting[key], key=lambda c: c[1]["seed"])
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
                rec: dict[str, Any] = {"dataset": dataset, "noise": noise, "variant": variant,
                                       "precision": precision, "selector": selector,
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
            "dataset": dataset, "noise": noise, "variant": variant, "seeds": seeds, "n_train": n_train,
            "tau": sorted({x["tau"] for x in e}),
            **{k: round(_mean_std([x[k] for x in e])[0], 4) for k in ("n_selected", "precision", "recall", "auroc",
                                                                        "ks_statistic", "n_noisy")},
            "peers": {name: {k: _mean_or_none([r["peers"][name][k] for _, _, r in cells])
                             for k in ("n_selected", "precision", "recall")}
                      for name in cells[0][2]["peers"] if all(name in r["peers"] for _, _, r in cells)},
        })
        for rid, spec, result in cells:
            files = {k: f"cells/{rid}/{v}" for k, v in result.get("files", {}).items()}
            figures.append({"run_id": rid, "dataset": dataset, "noise": noise, "variant": variant, "seed": spec["seed"],
                            "files": files})
    return {"caption": "Table 4: samples kept at a fixed selection accuracy (precision), ranking by each "
                       "selector's score (paper §5.3)",
            "records": records, "settings": settings, "figures": figures}


def _identity(spec: dict) -> str:
    return json.dumps({k: v for k, v in spec.items() if k != "seed"}, sort_keys=True, default=str)


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in _flat(item, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): value}


def _variant_labels(by_setting: dict) -> dict[tuple[str, str, str], str]:
    """"" where a dataset and noise setting has one selection experiment; else what sets it apart."""
    labels = {}
    for dataset, noise in {(d, n) for d, n, _ in by_setting}:
        keys = [k for k in by_setting if k[:2] == (dataset, noise)]
        flat = {k: _flat(json.loads(k[2])) for k in keys}
        differing = sorted({f for k in keys for f in flat[k]
                            if len({json.dumps(flat[o].get(f), sort_keys=True) for o in keys}) > 1})
        for k in keys:
            labels[k] = ", ".join(f"{f}={flat[k].get(f)}" for f in differing) if len(keys) > 1 else ""
    return labels


def _setting_label(noise: str, variant: str) -> str:
    return NoiseSpec.parse(noise).label() + (f" ({variant})" if variant else "")


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
        by_key = {(r["noise"], r.get("variant", ""), r["precision"], r["selector"]): r for r in recs}
        headers = ["noise", "select. acc."]
        for s in selectors:
            name = SELECTOR_TITLES.get(s, s)
            headers += [f"{name}: paper", f"{name}: ours", "Δ pp"] if s in with_paper else [f"{name}: ours"]
        headers.append("EchoSelect / BLTM: ours, paper")
        rows = []
        for noise, variant, precision in dict.fromkeys((r["noise"], r.get("variant", ""), r["precision"]) for r in recs):
            row = [_setting_label(noise, variant), f"{precision * 100:g}%"]
            for s in selectors:
                r = by_key.get((noise, variant, precision, s))
                ours = "—" if r is None or "mean" not in r else _count(
                    r["mean"], r["std"] if len(r["values"]) > 1 else None, float(np.mean(r["n_train"])), r["share"])
                if s in with_paper:
                    paper = "—" if r is None or r["paper_selected"] is None else _count(
                        r["paper_selected"], None, r["paper_total"], r["paper_share"])
                    diff = "—" if r is None or "difference_share_pp" not in r else f"{r['difference_share_pp']:+.1f}"
                    row += [paper, ours, diff]
                else:
                    row.append(ours)
            e, b = by_key.get((noise, variant, precision, "echoselect")), by_key.get((noise, variant, precision, "bltm"))
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
        rows.append([st["dataset"], _setting_label(st["noise"], st.get("variant", "")), "/".join(f"{t:g}" for t in st["tau"]),
                     f"{st['n_selected']:,.0f} / {np.mean(st['n_train']):,.0f}", f"{st['precision']:.3f}",
                     f"{st['recall']:.3f}", f"{st['auroc']:.3f}", f"{st['ks_statistic']:.3f}", peers or "—"])
    parts.append(tabulate(rows, ["dataset", "noise", "τ", "kept", "precision", "recall", "AUROC", "KS",
                                 "peers' own selections (kept at precision)"],
                          tablefmt="pipe", disable_numparse=True) + "\n")
    links = []
    for f in doc["figures"]:
        links.append(f"- {f['dataset']} {_setting_label(f['noise'], f.get('variant', ''))} seed {f['seed']}: "
                     + ", ".join(f"[{FIGURE_TITLES.get(k, k)}]({v})" for k, v in f["files"].items()))
    parts.append("Figures per cell (Figure 3: similarity of clean vs noisy labels; Figure 4b: τ sweep):\n\n"
                 + "\n".join(links) + "\n")
    return "\n".join(parts)


# --- runtime ------------------------------------------------------------------------------------------
