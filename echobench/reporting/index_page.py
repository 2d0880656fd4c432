"""Reading a results directory's cells and commands, and its index page.

`index.md`: one Markdown page linking every file the report wrote and every figure, with the
configuration (suite, cells per kind, the recorded commands) and the environments of the cells.
Every file is written atomically (`echobench.files`).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from echobench.data.noise import NoiseSpec
from echobench.files import atomic_write_text, read_json
from echobench.errors import EchobenchError
from echobench.harness.store import COMMANDS_DIR, Store, experiment_key

from echobench.reporting.table4 import FIGURE_TITLES

KIND_ORDER = ("train", "selection", "runtime")


# --- reading a results directory ----------------------------------------------------------------------

def read_results(results_dir: str | Path, include_stale: bool = False) -> dict[str, Any]:
    """The cells of a results directory, validated once for every report: {"suite", "cells": [(Cell,
    stale)], "stale": [Cell], "damaged": [Cell], "notes": [str]}.

    Stale: a sound cell whose experiment (`store.experiment_key`, the spec without the seed) the
    directory's current suite (suite.json) does not contain; in "cells" only with `include_stale`.
    Damaged: a cell whose files fail validation; never in "cells" (the next `run` recomputes it)."""
    store = Store(results_dir)
    record = store.suite_record()
    if store.cells.exists() and not store.cells.is_dir():
        raise EchobenchError(f"{store.cells} is a file, not a folder: echobench keeps the cells there; move it away")
    if not store.cells.is_dir():
        raise EchobenchError(f"{results_dir} holds no results (no cells/ folder); run `echobench run --out {results_dir}` first")
    if record is None:
        raise EchobenchError(f"{results_dir} is not an echobench results directory (no suite.json); "
                             f"`echobench run --out {results_dir}` writes one")
    current = set(record["experiments"]) if record.get("experiments") is not None else None
    out: dict[str, Any] = {"suite": record["suite"], "cells": [], "stale": [], "damaged": [], "notes": []}
    for cell in store.scan():
        if cell.problem is not None:
            out["damaged"].append(cell)
            continue
        if cell.config is None:
            continue
        stale = current is not None and experiment_key(cell.kind, cell.config["spec"]) not in current
        if stale:
            out["stale"].append(cell)
        if include_stale or not stale:
            out["cells"].append((cell, stale))
    if current is None:
        schema = "results schema 1, " if record.get("schema", 1) == 1 else ""
        out["notes"].append(f"suite.json records no experiments ({schema}written before `run` recorded them): cells "
                            "of an edited suite cannot be told from current ones until the next `echobench run` here.")
    if out["stale"]:
        finished = sum(c.finished for c in out["stale"])
        out["notes"].append(f"{len(out['stale'])} stale cell(s) ({finished} finished): the directory's current suite "
                            f"no longer contains their experiments; " + (
                                "tabulated as rows of their own, marked [stale]." if include_stale else
                                "left out of the tables (`--include-stale` adds them as rows of their own)."))
    for cell in out["damaged"]:
        out["notes"].append(f"damaged cell {cell.run_id}: {cell.problem}; left out (the next `echobench run` "
                            f"moves its files to cells/{cell.run_id}/damaged-<time>/ and computes it again).")
    return out


def collect_cells(results_dir: str | Path, read: dict | None = None) -> dict[str, Any]:
    """Every cell's (run id, config, result) by kind, counts of finished/failed/pending per kind, and the
    distinct environments that ran them (of the cells `read_results` keeps)."""
    read = read or read_results(results_dir)
    by_kind: dict[str, list] = {k: [] for k in KIND_ORDER}
    counts = {k: {"finished": 0, "failed": 0, "pending": 0} for k in KIND_ORDER}
    environments: dict[str, dict] = {}
    for cell, _ in read["cells"]:
        rid, config, result, error = cell.run_id, cell.config, cell.result, cell.error
        kind = cell.kind
        if kind not in counts:
            continue  # a kind this version does not know: left out, never misread
        if result is None:
            counts[kind]["failed" if error else "pending"] += 1
            continue
        counts[kind]["finished"] += 1
        by_kind[kind].append((rid, config, result))
        env = config.get("environment") if isinstance(config.get("environment"), dict) else {}
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
