"""Accuracy tables from a results directory, in the paper's layout.

Rows are experiments, columns noise settings, one table per dataset; each entry is the mean ± standard
deviation over seeds of a test accuracy in percent. An experiment is a cell's spec without its seed
(and noise, the column): two settings of one method are two rows, labelled with what differs
(`row_labels`: `apl (alpha=5.0)`), never averaged. Cells of one entry that ran in different
environments (`PROVENANCE`) are averaged and the entry is marked †. Stale cells (not in the
directory's current suite) and damaged ones are left out (`index_page.read_results`). The std is the sample standard deviation
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from echobench.errors import EchobenchError
from echobench.data.noise import NoiseSpec
from echobench.files import atomic_write_text

METRICS = {"best_val": "test_acc_best_val", "last": "test_acc_last", "oracle": "test_acc_oracle"}
METRIC_TITLES = {"best_val": "test accuracy at the best noisy-validation epoch",
                 "last": "test accuracy at the last epoch",
                 "oracle": "best test accuracy over epochs (oracle: peeks at the test set)"}


@dataclass
class Entry:
    values: list[float]  # one per seed, in percent
    seeds: list[int]
    run_ids: list[str] = field(default_factory=list)
    provenance: list[dict] = field(default_factory=list)  # per cell: `provenance(config)`

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))

    @property
    def std(self) -> float:
        return float(np.std(self.values, ddof=1)) if len(self.values) > 1 else 0.0

    @property
    def provenance_differs(self) -> list[str]:
        """The provenance fields in which this entry's cells differ (empty: one environment)."""
        return [k for k in PROVENANCE if len({json.dumps(p.get(k), sort_keys=True) for p in self.provenance}) > 1]


@dataclass
class Table:
    dataset: str
    methods: list[str]  # row labels: the method, plus what tells its settings apart (`row_labels`)
    noises: list[str]  # canonical noise strings, in column order
    entries: dict[tuple[str, str], Entry]  # (row label, noise) → entry
    rows: dict[str, dict] = field(default_factory=dict)  # row label → {"method", "experiment", "stale"}

    def ranks(self) -> dict[tuple[str, str], int]:
        """1 = best mean in its column; ties share the better rank."""
        out = {}
        for noise in self.noises:
            means = sorted({round(self.entries[(m, noise)].mean, 10) for m in self.methods if (m, noise) in self.entries}, reverse=True)
            for m in self.methods:
                if (m, noise) in self.entries:
                    out[(m, noise)] = means.index(round(self.entries[(m, noise)].mean, 10)) + 1
        return out


# Provenance: how and where a cell ran. Cells of one experiment that differ only in these are averaged
# as seeds, and the entry is marked (†). Identity (what makes a row) is the spec without the seed.
# `plugins`: version and source digest of each plugin the cell uses (echobench.harness.cells.plugin_provenance),
# so a row whose seeds ran different versions of a plugin is marked like one that ran different revisions.
PROVENANCE = ("git", "packages", "plugins", "python", "device", "threads", "host")
# how a setting is named in a label (the first prefix that matches)
ROW_PATH_NAMES = (("method_params.engine_options.", ""), ("method_params.", ""), ("dataset_options.", "dataset."))


def provenance(config: dict) -> dict[str, Any]:
    env = config.get("environment") if isinstance(config.get("environment"), dict) else {}
    device = env.get("device") if isinstance(env.get("device"), dict) else {}
    plugins = env.get("plugins") if isinstance(env.get("plugins"), dict) else {}
    return {"git": env.get("git"), "packages": env.get("packages"), "python": env.get("python"),
            "plugins": {k: {"version": v.get("version"), "digest": v.get("digest")} if isinstance(v, dict) else v
                        for k, v in plugins.items()} or None,
            "device": device.get("name"), "threads": device.get("threads"), "host": env.get("host")}


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _setting_name(path: str) -> str:
    for prefix, shown in ROW_PATH_NAMES:
        if path.startswith(prefix):
            return shown + path[len(prefix):]
    return path


def row_labels(rows: dict[str, dict]) -> dict[str, str]:
    """Row key → label: the method name, and for a method with several settings in one table the
    settings that differ between them (`apl (alpha=5.0)`); a stale row ends in ` [stale]`."""
    by_method: dict[str, list[str]] = {}
    for key, row in rows.items():
        by_method.setdefault(row["method"], []).append(key)
    labels = {}
    for method, keys in by_method.items():
        flats = {k: _flat({p: v for p, v in rows[k]["experiment"].items() if p != "method"}) for k in keys}
        paths = sorted({p for f in flats.values() for p in f})
        differing = [p for p in paths if len({json.dumps(f[p], sort_keys=True, default=str) if p in f else None
                                              for f in flats.values()}) > 1]
        # A setting a row leaves unset (absent, or an empty dict where another row has entries) is left
        # out of its label, unless that makes two labels equal: then every differing setting is shown.
        compact = {k: [p for p in differing if flats[k].get(p, {}) != {}] for k in keys}
        if len({tuple((p, json.dumps(flats[k][p], default=str)) for p in compact[k]) for k in keys}) < len(keys):
            compact = {k: differing for k in keys}
        for k in keys:
            shown = ", ".join(f"{_setting_name(p)}={_value_text(flats[k].get(p, '—'))}" for p in compact[k])
            labels[k] = method + (f" ({shown})" if shown else "") + (" [stale]" if rows[k]["stale"] else "")
    return labels


def _value_text(value: Any) -> str:
    if value == "":
        return "default"  # e.g. echoalign's engine "": the dataset's default engine
    return value if isinstance(value, str) else json.dumps(value, default=str)


def collect(results_dir: str | Path, metric: str = "best_val", include_stale: bool = False,
            read: dict | None = None) -> tuple[list[Table], dict[str, Any]]:
    """Tables from every finished training cell under `results_dir`, plus counts of finished/failed cells.

    One row per experiment (the cell's spec without seed and noise, the noise being the column); cells
    the directory's current suite no longer contains (stale) are left out unless `include_stale`, then
    as rows of their own; damaged cells are left out and listed (`read_results`)."""
    from echobench.reporting.index_page import read_results

    if metric not in METRICS:
        raise EchobenchError(f"unknown metric {metric!r}; choose one of {sorted(METRICS)}")
    read = read or read_results(results_dir, include_stale)
    values: dict[tuple[str, str, str], Entry] = {}
    rows: dict[str, dict[str, dict]] = {}  # dataset → row key → row
    info = {"suite": read["suite"], "finished": 0, "failed": 0, "pending": 0, "environments": {}}
    for cell, stale in read["cells"]:
        config, result = cell.config, cell.result
        if cell.kind != "train":
            continue  # selection and runtime cells: reporting.table4 and reporting.runtime_tables
        spec = config["spec"]
        if result is None:
            info["failed" if cell.error else "pending"] += 1
            continue
        info["finished"] += 1
        env = config.get("environment") if isinstance(config.get("environment"), dict) else {}
        device = env.get("device") if isinstance(env.get("device"), dict) else {}
        info["environments"][str(env.get("git", "unknown")) + " | " + str(device.get("name", "?"))] = env
        experiment = {k: v for k, v in spec.items() if k not in ("seed", "noise", "dataset")}
        key = json.dumps({"experiment": experiment, "stale": stale}, sort_keys=True, default=str)
        rows.setdefault(spec["dataset"], {})[key] = {"method": spec["method"], "experiment": experiment, "stale": stale}
        entry = values.setdefault((spec["dataset"], key, spec["noise"]), Entry([], []))
        entry.values.append(100.0 * result["metrics"][METRICS[metric]])
        entry.seeds.append(spec["seed"])
        entry.run_ids.append(cell.run_id)
        entry.provenance.append(provenance(config))
    tables = []
    for dataset in sorted(rows):
        labels = row_labels(rows[dataset])
        keys = [k for k in values if k[0] == dataset]
        noises = sorted({k[2] for k in keys}, key=lambda n: NoiseSpec.parse(n).sort_key())
        tables.append(Table(dataset, sorted(labels.values()), noises, {(labels[k[1]], k[2]): values[k] for k in keys},
                            {labels[k]: row for k, row in rows[dataset].items()}))
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


def _marked(text: str, entry: Entry | None, style: str) -> str:
    """† after an entry whose seeds ran in different environments (provenance)."""
    if entry is None or not entry.provenance_differs:
        return text
    return text + (" $\\dagger$" if style == "latex" else " †")


def _provenance_note(table: Table) -> str:
    differing = sorted({k for e in table.entries.values() for k in e.provenance_differs})
    if not differing:
        return ""
    return (f"† the seeds of this entry ran in different environments ({', '.join(differing)} differ): averaged "
            f"as seeds, since provenance is not identity; report.json lists each entry's run ids.\n")


def _rows(table: Table, style: str) -> tuple[list[str], list[list[str]]]:
    ranks = table.ranks()
    headers = ["method"] + [NoiseSpec.parse(n).label() for n in table.noises]
    rows = [[m] + [_marked(_cell_text(table.entries.get((m, n)), ranks.get((m, n)), style), table.entries.get((m, n)), style)
                   for n in table.noises] for m in table.methods]
    return headers, rows


def to_markdown(tables: list[Table], metric: str) -> str:
    from tabulate import tabulate

    parts = []
    for t in tables:
        headers, rows = _rows(t, "md")
        seeds = sorted({len(e.values) for e in t.entries.values()})
        parts.append(f"### {t.dataset}: {METRIC_TITLES[metric]}, mean ± std over {'/'.join(map(str, seeds))} seed(s), %\n")
        parts.append(tabulate(rows, headers, tablefmt="pipe", stralign="center") + "\n")
        if _provenance_note(t):
            parts.append(_provenance_note(t))
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
            row = t.rows.get(m, {"method": m, "experiment": {}, "stale": False})
            out.append({"dataset": t.dataset, "method": row["method"], "row": m, "noise": n, "metric": metric,
                        "mean": round(e.mean, 4), "std": round(e.std, 4), "n_seeds": len(e.values), "seeds": e.seeds,
                        "values": [round(v, 4) for v in e.values], "rank": ranks[(m, n)], "run_ids": e.run_ids,
                        "provenance_differs": e.provenance_differs, "stale": row["stale"],
                        "experiment": row["experiment"]})
    return out


def to_csv(tables: list[Table], metric: str) -> str:
    """One line per entry; the `method` column holds the row label (`apl (alpha=5.0)`), as the tables do."""
    records = [{**r, "method": r["row"]} for r in to_records(tables, metric)]
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
            method = t.rows.get(m, {"method": m})["method"]
            for table in PAPER_TABLES:
                value = paper_value(table, t.dataset, n, method)
                if value is not None:
                    out.append({"dataset": t.dataset, "method": method, "row": m, "noise": n, "paper_table": table,
                                "ours_mean": round(e.mean, 2), "ours_std": round(e.std, 2), "n_seeds": len(e.values),
                                "paper_mean": value[0], "paper_std": value[1], "difference": round(e.mean - value[0], 2)})
                    break
    return out


def paper_markdown(tables: list[Table], comparison: list[dict[str, Any]]) -> str:
    """Our tables again with the paper's number and the difference in each entry the paper reports."""
    from tabulate import tabulate

    by_key = {(c["dataset"], c["row"], c["noise"]): c for c in comparison}
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


def write_reports(results_dir: str | Path, metric: str = "best_val", include_stale: bool = False) -> dict[str, Any]:
    """Write the report of a results directory and return its JSON document (with "markdown").

    Training cells: report.{md,tex,csv} (Tables 1–3 layout, the paper's numbers beside ours where it
    has them); selection cells: Table 4 in report.md; runtime cells: runtime.{md,json}; always
    report.json and index.md, the page that links everything. "written" lists the files written:
    the report writes these names into the results directory and nothing else. Stale cells (not in the
    directory's current suite) are left out unless `include_stale`; damaged cells are left out; both
    are listed in "stale", "damaged" and the report's notes."""
    from echobench.harness.store import writing
    from echobench.reporting.index_page import collect_cells, read_results

    read = read_results(results_dir, include_stale)
    by_metric = {m: collect(results_dir, m, read=read) for m in METRICS}
    tables, info = by_metric[metric]
    kinds = collect_cells(results_dir, read=read)
    counts = kinds["counts"]
    if not tables and not kinds["cells"]["selection"] and not kinds["cells"]["runtime"]:
        failed = sum(c["failed"] for c in counts.values())
        pending = sum(c["pending"] for c in counts.values())
        left_out = "".join(f", {len(read[k])} {k}" for k in ("stale", "damaged") if read[k])
        hint = "; --include-stale tabulates the stale ones" if read["stale"] and not include_stale else ""
        raise EchobenchError(f"{results_dir} has no finished cells to report ({failed} failed, {pending} pending"
                             f"{left_out}){hint}")
    root = Path(results_dir)
    doc = {"suite": info["suite"], "metric": metric, "metric_title": METRIC_TITLES[metric],
           "cells": {k: sum(c[k] for c in counts.values()) for k in ("finished", "failed", "pending")},
           "cells_per_kind": counts, "results": to_records(tables, metric),
           "environments": list(info["environments"].values()),
           "stale": [{"run_id": c.run_id, "kind": c.kind, "included": include_stale} for c in read["stale"]],
           "damaged": [{"run_id": c.run_id, "problem": c.problem} for c in read["damaged"]],
           "notes": read["notes"]}
    with writing(f"the report into {root}"):
        return _write_report_files(root, doc, tables, kinds, info, metric, counts,
                                   {m: t for m, (t, _) in by_metric.items()}, read)


def _write_report_files(root: Path, doc: dict, tables: list[Table], kinds: dict, info: dict, metric: str,
                        counts: dict, tables_by_metric: dict[str, list[Table]], read: dict) -> dict[str, Any]:
    from echobench.reporting import cell_diagnostics, paper_agreement
    from echobench.reporting.index_page import commands, write_index
    from echobench.reporting.runtime_tables import runtime_document, runtime_markdown
    from echobench.reporting.table4 import table4_document, table4_markdown

    parts, reports, holds = [], [("report.md", "")], []
    if tables:
        parts.append(to_markdown(tables, metric))
        comparison = paper_comparison(tables)
        if comparison:  # a dataset the paper reports (CIFAR-10/100, CIFAR-10N): its numbers beside ours
            doc["paper"] = comparison
            parts.append(paper_markdown(tables, comparison))
        holds.append("accuracy tables (the paper's Tables 1–3 layout)" + (", the paper's numbers beside ours" if comparison else ""))
        agreement = paper_agreement.agreement(tables_by_metric)
        if agreement:  # columns the paper reports (or, for shapes, its CIFAR-10 analog): ranks and beat-CE counts
            doc["agreement"] = {"columns": agreement, "summary": paper_agreement.metric_agreement(agreement)}
            parts.append(paper_agreement.agreement_markdown(agreement, metric, METRIC_TITLES))
            for name in paper_agreement.write_figures(root, agreement, metric, METRIC_TITLES[metric]):
                reports.append((name, "figure: the paper's accuracy against ours in one column, a point per method"))
            holds.append("agreement with the paper (Spearman, baselines beating CE) per column and metric")
        findings = cell_diagnostics.cell_entries(read, METRICS[metric])
        if findings:  # skipped stages and near-chance cells, explained from their own records
            labels = {(t.dataset, json.dumps(row["experiment"], sort_keys=True, default=str), row["stale"]): label
                      for t in tables for label, row in t.rows.items()}
            doc["diagnostics"] = findings
            parts.append(cell_diagnostics.diagnostics_markdown(findings, labels))
            holds.append("diagnostics (skipped stages, near-chance cells)")
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
    if doc["notes"]:
        parts.append("## Notes\n\n" + "\n".join(f"- {n}" for n in doc["notes"]) + "\n")
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
