"""Accuracy tables from a results directory, in the paper's layout.

Rows are methods, columns noise settings, one table per dataset; each entry is the mean ± standard
deviation over seeds of a test accuracy in percent. The std is the sample standard deviation
(ddof = 1; 0 for a single seed). As in the paper's tables, per column the best mean is underlined and
the top three are bold. Which accuracy is tabulated is chosen with `metric`:

- `best_val` (default): test accuracy at the epoch of best noisy-validation accuracy;
- `last`: test accuracy after the last epoch;
- `oracle`: best test accuracy over epochs (peeks at the test set; what the released EchoAlign code reports).

A results directory may also hold cells of the other suite kinds (`echobench.harness.selection_cell`, `runtime_cell`): `write_reports`
adds Table 4 from the selection cells and the runtime report from the runtime cells
(`echobench.reporting.table4`, `runtime_tables`, `index_page`), and writes `index.md`, one page linking every file and figure with the
configuration and environments of the runs.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from echobench.errors import EchobenchError
from echobench.data.noise import NoiseSpec
from echobench.files import atomic_write_text
from echobench.harness.store import Store

METRICS = {"best_val": "test_acc_best_val", "last": "test_acc_last", "oracle": "test_acc_oracle"}
METRIC_TITLES = {"best_val": "test accuracy at the best noisy-validation epoch",
                 "last": "test accuracy at the last epoch",
                 "oracle": "best test accuracy over epochs (oracle: peeks at the test set)"}


@dataclass
class Entry:
    values: list[float]  # one per seed, in percent
    seeds: list[int]

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))

    @property
    def std(self) -> float:
        return float(np.std(self.values, ddof=1)) if len(self.values) > 1 else 0.0


@dataclass
class Table:
    dataset: str
    methods: list[str]
    noises: list[str]  # canonical noise strings, in column order
    entries: dict[tuple[str, str], Entry]  # (method, noise) → entry

    def ranks(self) -> dict[tuple[str, str], int]:
        """1 = best mean in its column; ties share the better rank."""
        out = {}
        for noise in self.noises:
            means = sorted({round(self.entries[(m, noise)].mean, 10) for m in self.methods if (m, noise) in self.entries}, reverse=True)
            for m in self.methods:
                if (m, noise) in self.entries:
                    out[(m, noise)] = means.index(round(self.entries[(m, noise)].mean, 10)) + 1
        return out


def collect(results_dir: str | Path, metric: str = "best_val") -> tuple[list[Table], dict[str, Any]]:
    """Tables from every finished cell under `results_dir`, plus counts of finished/failed cells."""
    if metric not in METRICS:
        raise EchobenchError(f"unknown metric {metric!r}; choose one of {sorted(METRICS)}")
    store = Store(results_dir)
    if not store.cells.is_dir():
        raise EchobenchError(f"{results_dir} holds no results (no cells/ folder); run `echobench run --out {results_dir}` first")
    values: dict[tuple[str, str, str], Entry] = {}
    info = {"suite": store.owner(), "finished": 0, "failed": 0, "pending": 0, "environments": {}}
    for rid, config, result, error in store.iter_cells():
        if config.get("kind", "train") != "train":
            continue  # selection and runtime cells: reporting.table4 and reporting.runtime_tables
        spec = config["spec"]
        if result is None:
            info["failed" if error else "pending"] += 1
            continue
        info["finished"] += 1
        env = config.get("environment", {})
        info["environments"][env.get("git", "unknown") + " | " + env.get("device", {}).get("name", "?")] = env
        key = (spec["dataset"], spec["method"], spec["noise"])
        entry = values.setdefault(key, Entry([], []))
        entry.values.append(100.0 * result["metrics"][METRICS[metric]])
        entry.seeds.append(spec["seed"])
    tables = []
    for dataset in sorted({k[0] for k in values}):
        keys = [k for k in values if k[0] == dataset]
        methods = list(dict.fromkeys(sorted(k[1] for k in keys)))
        noises = sorted({k[2] for k in keys}, key=lambda n: NoiseSpec.parse(n).sort_key())
        tables.append(Table(dataset, methods, noises, {(k[1], k[2]): values[k] for k in keys}))
    return tables, info


def _cell_text(entry: Entry | None, rank: int | None, style: str) -> str:
    if entry is None:
        return "—"
    text = f"{entry.mean:.2f} ± {entry.std:.2f}" if style != "latex" else f"{entry.mean:.2f} $\\pm$ {entry.std:.2f}"
    if rank is None or rank > 3:
        return text
    if style == "latex":
        text = f"\\textbf{{{text}}}"
        return f"\\underline{{{text}}}" if rank == 1 else text
    text = f"**{text}**"
    return f"<u>{text}</u>" if rank == 1 else text


def _rows(table: Table, style: str) -> tuple[list[str], list[list[str]]]:
    ranks = table.ranks()
    headers = ["method"] + [NoiseSpec.parse(n).label() for n in table.noises]
    rows = [[m] + [_cell_text(table.entries.get((m, n)), ranks.get((m, n)), style) for n in table.noises] for m in table.methods]
    return headers, rows


def to_markdown(tables: list[Table], metric: str) -> str:
    from tabulate import tabulate

    parts = []
    for t in tables:
        headers, rows = _rows(t, "md")
        seeds = sorted({len(e.values) for e in t.entries.values()})
        parts.append(f"### {t.dataset}: {METRIC_TITLES[metric]}, mean ± std over {'/'.join(map(str, seeds))} seed(s), %\n")
        parts.append(tabulate(rows, headers, tablefmt="pipe", stralign="center") + "\n")
    parts.append("Per column: best <u>underlined</u>, top three **bold**.\n")
    return "\n".join(parts)


def to_latex(tables: list[Table], metric: str) -> str:
    from tabulate import tabulate

    parts = []
    for t in tables:
        headers, rows = _rows(t, "latex")
        body = tabulate(rows, headers, tablefmt="latex_raw", stralign="center")
        parts.append(f"% {t.dataset}: {METRIC_TITLES[metric]}, mean $\\pm$ std over seeds (%)\n{body}\n")
    return "\n".join(parts)


def to_records(tables: list[Table], metric: str) -> list[dict[str, Any]]:
    out = []
    for t in tables:
        ranks = t.ranks()
        for (m, n), e in sorted(t.entries.items()):
            out.append({"dataset": t.dataset, "method": m, "noise": n, "metric": metric, "mean": round(e.mean, 4),
                        "std": round(e.std, 4), "n_seeds": len(e.values), "seeds": e.seeds,
                        "values": [round(v, 4) for v in e.values], "rank": ranks[(m, n)]})
    return out


def to_csv(tables: list[Table], metric: str) -> str:
    records = to_records(tables, metric)
    buf = io.StringIO()
    fields = ["dataset", "method", "noise", "metric", "mean", "std", "n_seeds", "rank"]
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return buf.getvalue()


PAPER_TABLES = ("table1", "table2", "table3")


def paper_comparison(tables: list[Table]) -> list[dict[str, Any]]:
    """Each of our entries that the paper's Tables 1–3 also report, with the paper's value and the
    difference (ours − paper, percentage points). The paper's numbers are its reported accuracies
    (`echobench.reporting.paper_reference`), whatever `metric` our side uses."""
    from echobench.reporting.paper_reference import paper_value

    out = []
    for t in tables:
        for (m, n), e in sorted(t.entries.items()):
            for table in PAPER_TABLES:
                value = paper_value(table, t.dataset, n, m)
                if value is not None:
                    out.append({"dataset": t.dataset, "method": m, "noise": n, "paper_table": table,
                                "ours_mean": round(e.mean, 2), "ours_std": round(e.std, 2), "n_seeds": len(e.values),
                                "paper_mean": value[0], "paper_std": value[1], "difference": round(e.mean - value[0], 2)})
                    break
    return out


def paper_markdown(tables: list[Table], comparison: list[dict[str, Any]]) -> str:
    """Our tables again with the paper's number and the difference in each entry the paper reports."""
    from tabulate import tabulate

    by_key = {(c["dataset"], c["method"], c["noise"]): c for c in comparison}
    parts = ["## Beside the paper\n",
             "Each entry: ours (mean ± std) / the paper's (mean ± std) / ours − paper, in percentage points.\n"]
    for t in tables:
        if not any(k[0] == t.dataset for k in by_key):
            continue
        headers = ["method"] + [NoiseSpec.parse(n).label() for n in t.noises]
        rows = []
        for m in t.methods:
            row = [m]
            for n in t.noises:
                c = by_key.get((t.dataset, m, n))
                if c is None:
                    row.append("—")
                    continue
                paper = f"{c['paper_mean']:.2f}" + (f" ± {c['paper_std']:.2f}" if c["paper_std"] is not None else "")
                row.append(f"{c['ours_mean']:.2f} ± {c['ours_std']:.2f} / {paper} / {c['difference']:+.2f}")
            rows.append(row)
        tables_used = sorted({c["paper_table"] for c in comparison if c["dataset"] == t.dataset})
        parts.append(f"### {t.dataset} (paper: {', '.join(tables_used)})\n")
        parts.append(tabulate(rows, headers, tablefmt="pipe", stralign="center") + "\n")
    return "\n".join(parts)


def write_reports(results_dir: str | Path, metric: str = "best_val") -> dict[str, Any]:
    """Write the report of a results directory and return its JSON document (with "markdown").

    Training cells: report.{md,tex,csv} (Tables 1–3 layout, the paper's numbers beside ours where it
    has them); selection cells: Table 4 in report.md; runtime cells: runtime.{md,json}; always
    report.json and index.md, the page that links everything. "written" lists the files written."""
    from echobench.reporting.index_page import collect_cells, commands, write_index
    from echobench.reporting.runtime_tables import runtime_document, runtime_markdown
    from echobench.reporting.table4 import table4_document, table4_markdown

    tables, info = collect(results_dir, metric)
    kinds = collect_cells(results_dir)
    counts = kinds["counts"]
    if not tables and not kinds["cells"]["selection"] and not kinds["cells"]["runtime"]:
        failed = sum(c["failed"] for c in counts.values())
        pending = sum(c["pending"] for c in counts.values())
        raise EchobenchError(f"{results_dir} has no finished cells to report ({failed} failed, {pending} pending)")
    root = Path(results_dir)
    doc = {"suite": info["suite"], "metric": metric, "metric_title": METRIC_TITLES[metric],
           "cells": {k: sum(c[k] for c in counts.values()) for k in ("finished", "failed", "pending")},
           "cells_per_kind": counts, "results": to_records(tables, metric),
           "environments": list(info["environments"].values())}
    parts, reports, holds = [], [("report.md", "")], []
    if tables:
        parts.append(to_markdown(tables, metric))
        comparison = paper_comparison(tables)
        if comparison:  # a dataset the paper reports (CIFAR-10/100, CIFAR-10N): its numbers beside ours
            doc["paper"] = comparison
            parts.append(paper_markdown(tables, comparison))
        holds.append("accuracy tables (the paper's Tables 1–3 layout)" + (", the paper's numbers beside ours" if comparison else ""))
        atomic_write_text(root / "report.tex", to_latex(tables, metric))
        atomic_write_text(root / "report.csv", to_csv(tables, metric))
        reports += [("report.tex", ""), ("report.csv", "")]
    figures = []
    if kinds["cells"]["selection"]:
        table4 = table4_document(kinds["cells"]["selection"])
        doc["table4"] = table4
        figures = table4["figures"]
        parts.append(table4_markdown(table4))
        holds.append("Table 4 (selection quality" + (", the paper's numbers beside ours" if any(
            r["paper_selected"] is not None for r in table4["records"]) else "") + ") with links to the figures")
    if kinds["cells"]["runtime"]:
        runtime = runtime_document(kinds["cells"]["runtime"])
        atomic_write_text(root / "runtime.json", json.dumps(runtime, indent=2, ensure_ascii=False, default=str) + "\n")
        atomic_write_text(root / "runtime.md", runtime_markdown(runtime, info["suite"]))
        doc["runtime"] = {k: runtime[k] for k in ("rows", "table6_beside_paper", "table7_beside_paper")}
        reports += [("runtime.md", ""), ("runtime.json", "")]
        holds.append("a pointer to the runtime report")
        parts.append("## Runtime (the paper's appendix D, Tables 6 and 7)\n\n"
                     f"{len(runtime['rows'])} measured rows from {len(kinds['cells']['runtime'])} runtime cell(s): "
                     "see [runtime.md](runtime.md) (the paper's Tables 6 and 7 beside ours, the compute model, "
                     "projections).\n")
    markdown = "\n".join(parts)
    reports[0] = ("report.md", "; ".join(holds))
    reports.append(("report.json", ""))
    doc["written"] = [name for name, _ in reports] + ["index.md"]
    doc["figures"] = [path for f in figures for path in f["files"].values()]
    atomic_write_text(root / "report.md", markdown)
    write_index(root, suite=info["suite"], counts=counts, reports=reports, figures=figures,
                environments=kinds["environments"], runs=commands(root))
    atomic_write_text(root / "report.json", json.dumps(doc, indent=2, default=float) + "\n")
    doc["markdown"] = markdown
    return doc
