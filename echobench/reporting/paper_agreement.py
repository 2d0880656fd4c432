"""How far a results table agrees with the paper's Tables 1 and 2, column by column.

For every noise column that the paper reports for a table's dataset — or, for the embedded `shapes`
world, for its stated analog CIFAR-10 (`PAPER_ANALOG`) — and for each of the three metrics:

- `spearman`: Spearman's rank correlation between our mean accuracy and the paper's over the methods
  both report (average ranks for ties). Only methods with exactly one row take part: a method with
  several rows (e.g. EchoAlign with two generators) has no single rank, so its rows are left out and
  named in `left_out`; `spearman_with` gives, for each such row, ρ with that row standing for its
  method (its siblings left out), so that each variant's agreement is visible too.
- `beat_ce`: how many of the paper's baselines (its Table 1 rows other than CE and "Ours") have a
  higher mean than CE in our column, beside the same count in the paper's column.

The paper does not say at which epoch its accuracies are taken. Which of our metrics best matches it is
a question the per-metric numbers answer; `metric_agreement` gives each metric's mean over columns.
One figure per column (`plot_column`): the paper's accuracy against ours, one labelled point per method.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from echobench.errors import EchobenchError
from echobench.files import save_png

# A dataset the paper has no table for → the paper dataset it stands in for.
PAPER_ANALOG = {"shapes": "cifar10"}
AGREEMENT_TABLES = ("table1", "table2")


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's ρ: Pearson's correlation of the average ranks (nan for fewer than 3 pairs or a
    constant side)."""
    if len(x) != len(y):
        raise ValueError("spearman needs two sequences of one length")
    if len(x) < 3:
        return math.nan
    rx, ry = _ranks(np.asarray(x, float)), _ranks(np.asarray(y, float))
    if rx.std() == 0 or ry.std() == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def _ranks(values: np.ndarray) -> np.ndarray:
    order = values.argsort(kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1, len(values) + 1)
    for v in np.unique(values):  # ties share their average rank
        tied = values == v
        ranks[tied] = ranks[tied].mean()
    return ranks


def paper_column(dataset: str, noise: str) -> tuple[str, str, dict[str, float]] | None:
    """(paper table, paper dataset, method → the paper's mean) for our (dataset, noise), or None."""
    from echobench.reporting.paper_reference import METHODS, paper_value

    target = PAPER_ANALOG.get(dataset, dataset)
    for table in AGREEMENT_TABLES:
        try:
            values = {m: paper_value(table, target, noise, m) for m in METHODS}
        except EchobenchError:  # a dataset or noise kind the registries do not know: no column to compare with
            return None
        if all(v is not None for v in values.values()):
            return table, target, {m: v[0] for m, v in values.items()}
    return None


def column_agreement(table, noise: str, paper: dict[str, float]) -> dict[str, Any]:
    """Spearman and beat-CE counts of one column of a `reporting.tables.Table` against `paper`."""
    rows_of: dict[str, list[str]] = {}
    for label in table.methods:
        if (label, noise) in table.entries:
            rows_of.setdefault(table.rows.get(label, {"method": label})["method"], []).append(label)
    single = {m: rows[0] for m, rows in rows_of.items() if len(rows) == 1 and m in paper}
    left_out = sorted(label for m, rows in rows_of.items() if len(rows) > 1 and m in paper for label in rows)
    ours = {m: table.entries[(label, noise)].mean for m, label in single.items()}
    methods = sorted(ours)
    baselines = [m for m in paper if m not in ("ce", "echoalign")]
    spearman_with = {}
    for label in left_out:
        method = table.rows.get(label, {"method": label})["method"]
        with_row = {**ours, method: table.entries[(label, noise)].mean}
        spearman_with[label] = _round(spearman([with_row[m] for m in sorted(with_row)], [paper[m] for m in sorted(with_row)]))
    out = {"methods": methods, "left_out": left_out, "spearman_with": spearman_with,
           "left_out_ours": {label: round(table.entries[(label, noise)].mean, 2) for label in left_out},
           "left_out_paper": {label: paper[table.rows.get(label, {"method": label})["method"]] for label in left_out},
           "spearman": _round(spearman([ours[m] for m in methods], [paper[m] for m in methods])),
           "ours": {m: round(ours[m], 2) for m in methods}, "paper": {m: paper[m] for m in methods}}
    if "ce" in ours:
        compared = [m for m in baselines if m in ours]
        out["beat_ce"] = sum(ours[m] > ours["ce"] for m in compared)
        out["beat_ce_of"] = len(compared)
        out["paper_beat_ce"] = sum(paper[m] > paper["ce"] for m in compared)
    return out


def _signed(rho: float | None) -> str:
    return "—" if rho is None else f"{rho:+.2f}"


def _round(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 3)


def agreement(tables_by_metric: dict[str, list]) -> list[dict[str, Any]]:
    """One record per (metric, dataset, noise column) the paper reports (or has an analog for)."""
    out = []
    for metric, tables in tables_by_metric.items():
        for t in tables:
            for noise in t.noises:
                column = paper_column(t.dataset, noise)
                if column is None:
                    continue
                paper_table, paper_dataset, paper = column
                record = column_agreement(t, noise, paper)
                if len(record["methods"]) < 3:  # too few methods for a rank correlation
                    continue
                out.append({"metric": metric, "dataset": t.dataset, "noise": noise, "paper_table": paper_table,
                            "paper_dataset": paper_dataset, **record})
    return out


def metric_agreement(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (metric, dataset): mean Spearman over its columns and the beat-CE totals."""
    out = []
    for metric, dataset in dict.fromkeys((r["metric"], r["dataset"]) for r in records):
        rs = [r for r in records if r["metric"] == metric and r["dataset"] == dataset]
        rhos = [r["spearman"] for r in rs if r["spearman"] is not None]
        out.append({"metric": metric, "dataset": dataset, "paper_dataset": rs[0]["paper_dataset"], "columns": len(rs),
                    "mean_spearman": round(float(np.mean(rhos)), 3) if rhos else None,
                    "beat_ce": sum(r.get("beat_ce", 0) for r in rs), "beat_ce_of": sum(r.get("beat_ce_of", 0) for r in rs),
                    "paper_beat_ce": sum(r.get("paper_beat_ce", 0) for r in rs)})
    return out


def figure_name(dataset: str, noise: str) -> str:
    """Where a column's figure goes, relative to the results directory."""
    return f"agreement/{dataset}-{noise.replace(':', '-')}.png"


def write_figures(root: Path, records: list[dict[str, Any]], metric: str, metric_title: str) -> list[str]:
    """One figure per column of `metric` (the report's), under root/agreement/; returns their names."""
    from echobench.data.noise import NoiseSpec

    names = []
    for r in records:
        if r["metric"] != metric:
            continue
        name = figure_name(r["dataset"], r["noise"])
        (root / name).parent.mkdir(exist_ok=True)
        plot_column(r, root / name, f"{r['dataset']}, {NoiseSpec.parse(r['noise']).label()}: {metric_title}")
        names.append(name)
    return names


def agreement_markdown(records: list[dict[str, Any]], metric: str, metric_titles: dict) -> str:
    from tabulate import tabulate

    from echobench.data.noise import NoiseSpec

    parts = ["## Agreement with the paper\n",
             "Per noise column: Spearman's rank correlation between our mean accuracies and the paper's "
             "(over the methods both report, one row each), and how many of the paper's ten baselines beat CE "
             "in ours and in the paper. Computed for each metric; the paper does not say which epoch it reports.\n"]
    summary = metric_agreement(records)
    rows = [[metric_titles.get(s["metric"], s["metric"]), s["dataset"] + (f" vs {s['paper_dataset']}" if s["paper_dataset"] != s["dataset"] else ""),
             "—" if s["mean_spearman"] is None else f"{s['mean_spearman']:+.2f}",
             f"{s['beat_ce']} / {s['beat_ce_of']}", f"{s['paper_beat_ce']} / {s['beat_ce_of']}"] for s in summary]
    parts.append(tabulate(rows, ["metric", "dataset", "mean Spearman", "baselines beat CE (ours)",
                                 "(paper)"], tablefmt="pipe", stralign="center", disable_numparse=True) + "\n")
    for s in summary:
        rs = [r for r in records if r["metric"] == s["metric"] and r["dataset"] == s["dataset"]]
        several = any(r.get("spearman_with") for r in rs)  # the column only where a method has several rows
        rows = [[NoiseSpec.parse(r["noise"]).label(), "—" if r["spearman"] is None else f"{r['spearman']:+.2f}",
                 len(r["methods"]), f"{r.get('beat_ce', '—')} / {r.get('beat_ce_of', '—')}",
                 f"{r.get('paper_beat_ce', '—')}",
                 *(["; ".join(f"{label}: {_signed(rho)}" for label, rho in r.get("spearman_with", {}).items()) or "—"]
                   if several else []),
                 f"[figure]({figure_name(r['dataset'], r['noise'])})" if s["metric"] == metric else ""]
                for r in rs]
        parts.append(f"### {s['dataset']}, {metric_titles.get(s['metric'], s['metric'])}\n")
        parts.append(tabulate(rows, ["column", "Spearman", "methods", "beat CE (ours)", "beat CE (paper)",
                                     *(["several rows: Spearman with each"] if several else []), "figure"],
                              tablefmt="pipe", stralign="center", disable_numparse=True) + "\n")
    return "\n".join(parts)


def label_heights(x: list[float], y: list[float], *, gap: float, near: float) -> list[float]:
    """A height for each point's label, at least `gap` from the label of any point less than `near`
    away along x: from the lowest point up, a label that would touch one below it moves up (methods
    with close accuracies would otherwise print over each other)."""
    heights = list(y)
    placed: list[int] = []
    for i in sorted(range(len(y)), key=lambda k: (y[k], x[k])):
        for j in sorted(placed, key=lambda k: heights[k]):
            if abs(x[i] - x[j]) < near and heights[i] - heights[j] < gap:
                heights[i] = heights[j] + gap
        placed.append(i)
    return heights


def plot_column(record: dict[str, Any], path: Path, title: str) -> None:
    """The paper's accuracy (x) against ours (y) in one column, one labelled point per method, the
    diagonal dashed (atomic PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = record["methods"]
    x = [record["paper"][m] for m in methods]
    y = [record["ours"][m] for m in methods]
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    ax.scatter(x, y, s=22, color="tab:blue")
    extra = record.get("left_out", [])  # rows of a method with several: hollow, not in ρ
    if extra:
        ax.scatter([record["left_out_paper"][r] for r in extra], [record["left_out_ours"][r] for r in extra], s=22,
                   facecolors="none", edgecolors="tab:blue", label="a method's several rows (not in ρ)")
        methods = methods + extra
        x = x + [record["left_out_paper"][r] for r in extra]
        y = y + [record["left_out_ours"][r] for r in extra]
    low, high = min(x + y) - 3, max(x + y) + 3
    gap, near = 0.035 * (high - low), 0.12 * (high - low)
    for m, a, b, label_y in zip(methods, x, y, label_heights(x, y, gap=gap, near=near)):
        moved = abs(label_y - b) > 1e-9
        # right of every point it would otherwise print over
        label_x = max([a] + [c for c, d in zip(x, y) if abs(c - a) < near and abs(d - label_y) < gap]) + 0.012 * (high - low)
        ax.annotate(m, (a, b), xytext=(label_x, label_y), textcoords="data", fontsize=7,
                    va="center", color="tab:red" if m == "ce" else "black",
                    arrowprops={"arrowstyle": "-", "color": "grey", "linewidth": 0.5} if moved else None)
    ax.plot([low, high], [low, high], "--", color="grey", linewidth=0.8, label="ours = paper")
    ax.set_xlabel(f"paper, {record['paper_dataset']} (%)")
    ax.set_ylabel(f"ours, {record['dataset']} (%)")
    rho = record["spearman"]
    ax.set_title(f"{title}\nSpearman {'—' if rho is None else f'{rho:+.2f}'}, "
                 f"{record.get('beat_ce', '—')} of {record.get('beat_ce_of', '—')} baselines beat CE "
                 f"(paper: {record.get('paper_beat_ce', '—')})", fontsize=8)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    save_png(fig, path)
