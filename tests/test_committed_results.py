"""The committed results directories under reports/ still mean what they meant.

Run ids are the sha256 of a cell's canonical spec: after any refactoring, every committed cell must
sit in the directory its spec hashes to, and `echobench report` must rebuild the same numbers from
it (compared in the report's JSON, not its Markdown, whose layout may change)."""

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import pytest

from echobench.harness.suite import RunSpec, RuntimeSpec, SelectionSpec

REPORTS = Path(__file__).resolve().parents[1] / "reports"
RESULTS_DIRS = sorted(p.parent for p in REPORTS.glob("*/suite.json"))
SPECS = {"train": RunSpec, "selection": SelectionSpec, "runtime": RuntimeSpec}


def numbers(doc: dict) -> dict:
    """What a report computed from the cells: accuracy rows, Table 4 records, runtime rows."""
    out = {"results": sorted(((r["dataset"], r["method"], r["noise"]), r["mean"], r["std"], r["values"])
                             for r in doc["results"])}
    if "table4" in doc:
        out["table4"] = doc["table4"]["records"]
    if "runtime" in doc:
        out["runtime"] = doc["runtime"]["rows"]
    return out


def test_there_are_committed_results_directories():
    assert {p.name for p in RESULTS_DIRS} >= {"shapes", "table4-shapes", "runtime-cpu"}


@pytest.mark.parametrize("results_dir", RESULTS_DIRS, ids=lambda p: p.name)
def test_every_committed_cell_sits_under_its_run_id(results_dir):
    cells = sorted((results_dir / "cells").iterdir())
    assert cells
    for cell in cells:
        config = json.loads((cell / "config.json").read_text())
        stored = config["spec"]
        canonical = json.dumps(stored, sort_keys=True, separators=(",", ":"))
        assert hashlib.sha256(canonical.encode()).hexdigest()[:16] == cell.name == config["run_id"]
        cls = SPECS[config.get("kind", "train")]
        if set(stored) == {f.name for f in dataclasses.fields(cls)}:  # written by today's spec (runtime-cpu predates
            assert cls.from_dict(stored).run_id == cell.name          # RuntimeSpec.device_name)


@pytest.mark.parametrize("results_dir", RESULTS_DIRS, ids=lambda p: p.name)
def test_the_report_rebuilds_the_committed_numbers(results_dir, tmp_path):
    from echobench.reporting.tables import write_reports

    copy = tmp_path / results_dir.name
    shutil.copytree(results_dir, copy)
    rebuilt = numbers(write_reports(copy, "best_val"))
    committed = numbers(json.loads((results_dir / "report.json").read_text()))
    if "table4" in committed:  # later reports add fields (e.g. `variant`): compare those the commit has
        assert len(rebuilt["table4"]) == len(committed["table4"])
        rebuilt["table4"] = [{k: r.get(k) for k in c} for r, c in zip(rebuilt["table4"], committed["table4"])]
    assert rebuilt == committed
