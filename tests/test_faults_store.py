"""Faults of the results store (issue 16 §1, §2, §3 and the store's part of §5): results are never mixed,
never lost or overwritten, damage is detected and repaired, and file-system faults get one line.

The cells here are not trained: `echobench.harness.cells.compute` is replaced by a function that returns
a result at once (its accuracy encodes the cell's settings), so the whole module takes seconds. Permission
cases run in a forked child that drops to uid 65534 after importing (the tests run as root, for whom
permissions do not bind); a full disk is injected as ENOSPC from `os.fsync` in the atomic writer.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml

from echobench.errors import EchobenchError
from echobench.harness import cells as cells_module
from echobench.harness.store import SCHEMA, Store

REPO = Path(__file__).resolve().parents[1]
NOBODY = 65534

SUITE = {"name": "faults", "datasets": {"shapes": {"n_train": 300, "n_test": 100}}, "noise": ["symmetric:0.3"],
         "methods": ["ce"], "seeds": [1, 2], "protocol": {"name": "smoke", "epochs": 2}}


@pytest.fixture
def computed(monkeypatch):
    """Replace training by an instant fake; returns the list of run ids computed (in order)."""
    class Calls(list):
        fake = None

    calls = Calls()

    def fake_compute(spec, ctx, cell_dir, on_epoch=None):
        calls.append(spec.run_id)
        if getattr(fake_compute, "fail", False):
            raise RuntimeError("injected failure")
        alpha = float(spec.method_params.get("alpha", 0.0) or 0.0)
        acc = 0.5 + 0.01 * spec.seed + 0.01 * alpha + 0.001 * spec.protocol["epochs"]
        if getattr(fake_compute, "then", None):
            fake_compute.then()
        return {"metrics": {"test_acc_best_val": acc, "test_acc_last": acc, "test_acc_oracle": acc}}

    monkeypatch.setattr(cells_module, "compute", fake_compute)
    calls.fake = fake_compute
    return calls


def suite_file(folder: Path, **changes) -> Path:
    path = folder / f"suite-{len(list(folder.glob('suite-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump({**SUITE, **changes}))
    return path


def run(cli, suite: Path, out: Path, *extra) -> tuple[int, str, str]:
    return cli("run", "--suite", suite, "--out", out, "--device", "cpu", "--no-progress", *extra)


def cell_dirs(out: Path) -> list[Path]:
    return sorted(p for p in (out / "cells").iterdir() if not p.name.startswith("."))


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (but lock files) and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def one_line(err: str) -> None:
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("echobench: error: "), err


# --- §1 results are never mixed -----------------------------------------------------------------------

def test_two_settings_of_one_method_are_two_rows(cli, tmp_path, computed):
    suite = suite_file(tmp_path, methods=[{"apl": {"alpha": 1.0}}, {"apl": {"alpha": 5.0}}], seeds=[1])
    code, out, err = run(cli, suite, tmp_path / "out", "--json")
    assert code == 0, err
    records = json.loads(out)["report"]["results"]
    assert sorted(r["row"] for r in records) == ["apl (alpha=1.0)", "apl (alpha=5.0)"]
    assert all(r["method"] == "apl" and r["n_seeds"] == 1 and r["seeds"] == [1] for r in records)
    md = (tmp_path / "out" / "report.md").read_text()
    assert "apl (alpha=1.0)" in md and "apl (alpha=5.0)" in md


def test_an_edited_suite_leaves_stale_cells_out_of_the_tables(cli, tmp_path, computed):
    out = tmp_path / "out"
    assert run(cli, suite_file(tmp_path, protocol={"name": "smoke", "epochs": 2}), out)[0] == 0
    edited = suite_file(tmp_path, protocol={"name": "smoke", "epochs": 6})
    code, stdout, err = run(cli, edited, out, "--json")
    assert code == 0, err
    doc = json.loads(stdout)["report"]
    (row,) = doc["results"]  # the 6-epoch cells only, never averaged with the 2-epoch ones
    assert row["row"] == "ce" and row["n_seeds"] == 2 and row["experiment"]["protocol"]["epochs"] == 6
    assert len(doc["stale"]) == 2 and any("stale" in n for n in doc["notes"])
    # --seeds overrides the suite's seeds: the new seed's cell belongs to the suite all the same
    code, stdout, err = run(cli, edited, out, "--json", "--seeds", "3")
    assert code == 0, err
    doc = json.loads(stdout)["report"]
    assert [r["n_seeds"] for r in doc["results"]] == [3] and len(doc["stale"]) == 2
    # on request, the stale cells are rows of their own, labelled with what differs
    code, stdout, err = cli("report", out, "--json", "--include-stale")
    assert code == 0, err
    rows = sorted(json.loads(stdout)["results"], key=lambda r: r["row"])
    assert [r["n_seeds"] for r in rows] == [2, 3] and [r["stale"] for r in rows] == [True, False]
    assert rows[0]["row"].startswith("ce (protocol.epochs=2") and rows[0]["row"].endswith(") [stale]")
    assert rows[1]["row"].startswith("ce (protocol.epochs=6")


def test_cells_that_differ_in_provenance_are_averaged_and_marked(cli, tmp_path, computed):
    out = tmp_path / "out"
    assert run(cli, suite_file(tmp_path), out)[0] == 0
    result_path = cell_dirs(out)[0] / "result.json"
    result = json.loads(result_path.read_text())
    result["config"]["environment"]["git"] = "another-revision"
    result_path.write_text(json.dumps(result))
    code, stdout, err = cli("report", out, "--json")
    assert code == 0, err
    (row,) = json.loads(stdout)["results"]
    assert row["n_seeds"] == 2 and row["provenance_differs"] == ["git"]
    md = (out / "report.md").read_text()
    assert "†" in md and "git differ" in md


def test_cells_and_directories_carry_a_schema_and_a_newer_one_is_refused(cli, tmp_path, computed):
    out = tmp_path / "out"
    assert run(cli, suite_file(tmp_path), out)[0] == 0
    cell = cell_dirs(out)[0]
    for name in ("config.json", "result.json"):
        assert json.loads((cell / name).read_text())["schema"] == SCHEMA
    assert json.loads((out / "suite.json").read_text())["schema"] == SCHEMA
    result = json.loads((cell / "result.json").read_text())
    (cell / "result.json").write_text(json.dumps({**result, "schema": SCHEMA + 1}))
    before = snapshot(out)
    code, _, err = cli("report", out)
    assert code == 2 and "newer echobench" in err
    one_line(err)
    code, _, err = run(cli, suite_file(tmp_path), out)
    assert code == 2 and "newer echobench" in err
    one_line(err)
    assert snapshot(out) == before  # refused, never misread or rewritten


def test_a_directory_of_the_older_schema_is_read_with_a_note(cli, tmp_path):
    old = tmp_path / "runtime-cpu"
    shutil.copytree(REPO / "reports" / "runtime-cpu", old)
    assert "schema" not in json.loads((old / "suite.json").read_text())
    code, stdout, err = cli("report", old, "--json")
    assert code == 0, err
    doc = json.loads(stdout)
    assert doc["cells"]["finished"] == 2 and not doc["damaged"]
    assert any("schema 1" in n for n in doc["notes"])


# --- §2 nothing lost or overwritten -------------------------------------------------------------------

def test_a_failed_force_keeps_the_old_result_and_its_config(cli, tmp_path, computed):
    out = tmp_path / "out"
    suite = suite_file(tmp_path)
    assert run(cli, suite, out)[0] == 0
    cell = cell_dirs(out)[0]
    before = {name: (cell / name).read_bytes() for name in ("config.json", "result.json")}
    seen = []
    computed.fake.then = lambda: seen.append({n: (cell / n).read_bytes() for n in before})
    computed.fake.fail = True
    code, stdout, err = run(cli, suite, out, "--force", "--json")
    assert code == 1 and len(json.loads(stdout)["failed"]) == 2
    assert {name: (cell / name).read_bytes() for name in before} == before
    assert "injected failure" in json.loads((cell / "error.json").read_text())["error"]
    code, stdout, err = cli("report", out, "--json")
    assert code == 0 and json.loads(stdout)["cells"]["finished"] == 2
    # while a --force recompute runs, the old result and its config stand together (what a SIGKILL leaves)
    computed.fake.fail = False
    assert run(cli, suite, out, "--force")[0] == 0
    assert seen and all(s == before for s in seen)


def test_the_config_of_a_result_travels_with_it(cli, tmp_path, computed):
    """A kill between the result's rename and config.json's copy leaves an older config.json: the report
    takes the configuration the result was computed with."""
    out = tmp_path / "out"
    assert run(cli, suite_file(tmp_path), out)[0] == 0
    cell = cell_dirs(out)[0]
    config = json.loads((cell / "config.json").read_text())
    config["spec"] = {**config["spec"], "method": "something-else"}
    (cell / "config.json").write_text(json.dumps(config))
    code, stdout, err = cli("report", out, "--json")
    assert code == 0, err
    (row,) = json.loads(stdout)["results"]
    assert row["method"] == "ce" and row["n_seeds"] == 2


def test_run_refuses_a_folder_that_is_not_a_results_directory(cli, tmp_path, computed):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "index.md").write_text("my own index")
    (out / "notes.txt").write_text("my notes")
    before = snapshot(out)
    code, _, err = run(cli, suite_file(tmp_path), out)
    assert code == 2 and "not an echobench results directory" in err and "notes.txt" in err
    one_line(err)
    assert snapshot(out) == before and sorted(p.name for p in out.iterdir()) == ["index.md", "notes.txt"]
    assert computed == []
    # echobench's own names are the user's too when nothing says the folder is a results directory
    (out / "notes.txt").unlink()
    code, _, err = run(cli, suite_file(tmp_path), out)
    assert code == 2 and "index.md" in err and (out / "index.md").read_text() == "my own index"
    # an empty folder is fine
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run(cli, suite_file(tmp_path), empty)[0] == 0


def test_report_writes_only_its_own_files(cli, tmp_path, computed):
    out = tmp_path / "out"
    assert run(cli, suite_file(tmp_path), out)[0] == 0
    (out / "notes.txt").write_text("mine")
    before = {p.name for p in out.iterdir()}
    code, stdout, err = cli("report", out, "--json")
    assert code == 0, err
    written = set(json.loads(stdout)["written"])
    assert written <= {"index.md", "report.md", "report.tex", "report.csv", "report.json", "runtime.md", "runtime.json"}
    assert {p.name for p in out.iterdir()} == before | written and (out / "notes.txt").read_text() == "mine"


def test_two_suites_racing_for_one_new_folder_exactly_one_wins(tmp_path):
    for trial in range(20):
        out = tmp_path / f"race{trial}"
        read_end, write_end = os.pipe()
        children = []
        for name in ("alpha", "beta"):
            pid = os.fork()
            if pid == 0:  # pragma: no cover - child
                code = 1
                try:
                    os.close(write_end)
                    os.read(read_end, 1)  # wait for the start signal: both start together
                    Store(out).claim(name, ["e1"])
                    code = 0
                except EchobenchError:
                    code = 3
                finally:
                    os._exit(code)
            children.append(pid)
        os.close(read_end)
        os.close(write_end)  # EOF releases both children at once
        codes = sorted(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children)
        assert codes == [0, 3], f"trial {trial}: exit codes {codes}"
        assert json.loads((out / "suite.json").read_text())["suite"] in {"alpha", "beta"}


def test_files_honour_the_umask(cli, tmp_path, computed):
    for umask, mode in ((0o022, 0o644), (0o027, 0o640)):
        old = os.umask(umask)
        try:
            out = tmp_path / f"u{umask:o}"
            assert run(cli, suite_file(tmp_path), out)[0] == 0
        finally:
            os.umask(old)
        files = [p for p in out.rglob("*") if p.is_file()]
        assert {p.name for p in files} >= {"suite.json", "config.json", "result.json", "report.md", "index.md"}
        assert {p.stat().st_mode & 0o777 for p in files} == {mode}, [(p, oct(p.stat().st_mode)) for p in files]


# --- §3 damage is detected and repaired ---------------------------------------------------------------

DAMAGE = {
    "truncated result": lambda c: (c / "result.json").write_text((c / "result.json").read_text()[:40]),
    "empty result": lambda c: (c / "result.json").write_bytes(b""),
    "binary garbage": lambda c: (c / "result.json").write_bytes(bytes(range(256))),
    "result is a list": lambda c: (c / "result.json").write_text("[1, 2]"),
    "result without metrics": lambda c: _edit(c / "result.json", lambda r: r.pop("metrics")),
    "metric not a number": lambda c: _edit(c / "result.json", lambda r: r["metrics"].update(test_acc_best_val="x")),
    "result of another cell": lambda c: _edit(c / "result.json", lambda r: r.update(run_id="0123456789abcdef")),
    "result without its config": lambda c: _edit(c / "result.json", lambda r: r.pop("config")),
    "config in result not an object": lambda c: _edit(c / "result.json", lambda r: r.update(config=[1])),
    "old result, garbage config": lambda c: (_edit(c / "result.json", lambda r: (r.pop("config"), r.pop("schema"))),
                                             (c / "config.json").write_text("{garbage")),
    "old result, config missing": lambda c: (_edit(c / "result.json", lambda r: (r.pop("config"), r.pop("schema"))),
                                             (c / "config.json").unlink()),
    "spec without seed": lambda c: _edit(c / "result.json", lambda r: r["config"]["spec"].pop("seed")),
    "schema not a number": lambda c: _edit(c / "result.json", lambda r: r.update(schema="two")),
}


def _edit(path: Path, change) -> None:
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_cell_is_named_set_aside_and_recomputed(cli, tmp_path, computed, damage):
    out = tmp_path / "out"
    suite = suite_file(tmp_path)
    assert run(cli, suite, out)[0] == 0
    cell = cell_dirs(out)[0]
    DAMAGE[damage](cell)
    damaged_bytes = snapshot(cell)
    # report: names the damaged cell, tabulates the rest, changes nothing in the cell
    code, stdout, err = cli("report", out, "--json")
    assert code == 0, err
    doc = json.loads(stdout)
    assert [d["run_id"] for d in doc["damaged"]] == [cell.name]
    assert [r["n_seeds"] for r in doc["results"]] == [1]
    assert snapshot(cell) == damaged_bytes
    # run: not done; moved aside (kept for inspection) and computed again
    computed.clear()
    code, stdout, err = run(cli, suite, out, "--json")
    assert code == 0, err
    assert computed == [cell.name] and json.loads(stdout)["computed"] == 1
    (aside,) = cell.glob("damaged-*")
    assert (aside / "why.txt").read_text().strip()
    kept = {k.split("/", 1)[1]: v for k, v in snapshot(cell).items() if k.startswith("damaged-") and k.endswith(".json")}
    assert kept == {k: v for k, v in damaged_bytes.items() if k in kept} and kept
    assert Store(out).load_cell(cell.name).finished
    assert [r["n_seeds"] for r in json.loads(stdout)["report"]["results"]] == [2]


def test_a_new_result_without_config_json_is_complete(cli, tmp_path, computed):
    out = tmp_path / "out"
    assert run(cli, suite_file(tmp_path), out)[0] == 0
    (cell_dirs(out)[0] / "config.json").unlink()
    code, stdout, err = cli("report", out, "--json")
    assert code == 0 and json.loads(stdout)["results"][0]["n_seeds"] == 2 and not json.loads(stdout)["damaged"]


@pytest.mark.parametrize("content", ["", "{not json", "[]", '{"suite": 3}', '{"suite": "faults", "schema": 99}'])
def test_a_damaged_suite_json_gets_one_line(cli, tmp_path, computed, content):
    out = tmp_path / "out"
    assert run(cli, suite_file(tmp_path), out)[0] == 0
    (out / "suite.json").write_text(content)
    before = snapshot(out)
    for args in (("report", out), ("run", "--suite", suite_file(tmp_path), "--out", out, "--no-progress")):
        code, _, err = cli(*args)
        assert code == 2 and "suite.json" in err, err
        one_line(err)
    assert snapshot(out) == before


def test_a_garbage_error_json_does_not_break_the_report(cli, tmp_path, computed):
    out = tmp_path / "out"
    computed.fake.fail = True
    assert run(cli, suite_file(tmp_path), out)[0] == 1
    (cell_dirs(out)[0] / "error.json").write_text("\x00\x01")
    computed.fake.fail = False
    code, _, err = cli("report", out)
    assert code == 2 and "no finished cells" in err and "2 failed" in err
    one_line(err)


# --- §5 file-system faults: one line, nothing computed, the store consistent ----------------------------

def in_child_as_nobody(fn) -> tuple[int, str]:
    """Run `fn()` (returning an exit code) in a forked child with uid/gid 65534; (exit code, stderr)."""
    errfile = tempfile.NamedTemporaryFile(delete=False)
    errfile.close()
    os.chmod(errfile.name, 0o666)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 99
        try:
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            with open(errfile.name, "w") as stream, contextlib.redirect_stderr(stream), \
                    contextlib.redirect_stdout(io.StringIO()):
                code = fn()
        except BaseException as exc:  # noqa: BLE001 - report anything to the parent
            with open(errfile.name, "a") as stream:
                import traceback

                stream.write("Traceback (child):\n" + "".join(traceback.format_exception(exc)))
        finally:
            os._exit(code if isinstance(code, int) else 98)
    _, status = os.waitpid(pid, 0)
    err = Path(errfile.name).read_text()
    os.unlink(errfile.name)
    return os.waitstatus_to_exitcode(status), err


@pytest.fixture
def shared_dir():
    """A folder that uid 65534 can enter (pytest's tmp_path lives under a 0700 folder of root's)."""
    if os.geteuid() != 0:
        pytest.skip("dropping to another uid needs root")
    folder = Path(tempfile.mkdtemp(prefix="echobench-faults-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_a_read_only_out_gets_one_line_before_any_work(shared_dir, computed):
    from echobench.cli import main

    suite = suite_file(shared_dir)
    suite.chmod(0o644)
    fresh = shared_dir / "fresh"  # a new --out in a folder nobody may write
    claimed = shared_dir / "claimed"  # a results directory of root's, 0755: readable, not writable
    assert main(["run", "--suite", str(suite), "--out", str(claimed), "--device", "cpu", "--no-progress"]) == 0
    before = snapshot(claimed)
    computed.clear()
    data = ["--data-root", str(shared_dir / "data"), "--cache-dir", str(shared_dir / "cache")]  # not root's home
    for out in (shared_dir / "fresh", claimed):
        code, err = in_child_as_nobody(lambda out=out: main(
            ["run", "--suite", str(suite), "--out", str(out), "--device", "cpu", "--no-progress", "--force", *data]))
        assert code == 2 and "Permission denied" in err, err
        one_line(err)
    assert computed == [] and not fresh.exists() and snapshot(claimed) == before
    # report into a read-only results directory: one line, nothing changed
    code, err = in_child_as_nobody(lambda: main(["report", str(claimed)]))
    assert code == 2 and "Permission denied" in err, err
    one_line(err)
    assert snapshot(claimed) == before


def test_an_unreadable_cell_is_not_damage(shared_dir, computed):
    from echobench.cli import main

    suite = suite_file(shared_dir)
    out = shared_dir / "out"
    assert main(["run", "--suite", str(suite), "--out", str(out), "--device", "cpu", "--no-progress"]) == 0
    for p in out.rglob("*"):
        p.chmod(0o777 if p.is_dir() else 0o666)  # a colleague may write everything ...
    cell = cell_dirs(out)[0]
    (cell / "result.json").chmod(0o600)  # ... but read this result
    before = snapshot(out)
    code, err = in_child_as_nobody(lambda: main(["report", str(out)]))
    assert code == 2 and "cannot read" in err and "Permission denied" in err, err
    one_line(err)
    assert snapshot(out) == before and not list(cell.glob("damaged-*"))


@pytest.fixture
def full_disk(monkeypatch):
    """`full_disk.on()` makes every later atomic write fail with ENOSPC (at fsync, after the data was written)."""
    import echobench.files

    real_fsync = os.fsync
    state = {"full": False}

    def fsync(fd):
        if state["full"]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(echobench.files.os, "fsync", fsync)

    class Disk:
        def on(self):
            state["full"] = True

        def off(self):
            state["full"] = False

    return Disk()


def test_a_full_disk_at_the_start_gets_one_line(cli, tmp_path, computed, full_disk):
    full_disk.on()
    out = tmp_path / "out"
    code, _, err = run(cli, suite_file(tmp_path), out)
    assert code == 2 and "No space left on device" in err
    one_line(err)
    assert computed == [] and not list(out.rglob("*.tmp")) and not (out / "suite.json").exists()


def test_a_disk_that_fills_while_filing_a_result(cli, tmp_path, computed, full_disk):
    out = tmp_path / "out"
    suite = suite_file(tmp_path)
    computed.fake.then = full_disk.on  # the disk fills while the first cell computes
    code, _, err = run(cli, suite, out)
    assert code == 2 and "No space left on device" in err
    one_line(err)
    assert len(computed) == 1 and not list(out.rglob("*.tmp"))
    assert not list(out.glob("cells/*/result.json"))  # nothing half-filed: the cell is simply not done
    full_disk.off()
    computed.fake.then = None
    computed.clear()
    code, stdout, err = run(cli, suite, out, "--json")
    assert code == 0 and json.loads(stdout)["computed"] == 2
    # a --force on a full disk keeps every old result, and the report is refused in one line
    before = snapshot(out / "cells")
    computed.fake.then = full_disk.on
    code, _, err = run(cli, suite, out, "--force")
    assert code == 2 and "No space left on device" in err
    one_line(err)
    assert snapshot(out / "cells") == before and not list(out.rglob("*.tmp"))
    report_before = (out / "report.md").read_bytes()
    code, _, err = cli("report", out)
    assert code == 2 and "No space left on device" in err
    one_line(err)
    assert (out / "report.md").read_bytes() == report_before and not list(out.rglob("*.tmp"))


@pytest.mark.parametrize("where", ["cells", "commands", "cell"])
def test_a_file_where_a_folder_belongs_gets_one_line(cli, tmp_path, computed, where):
    out = tmp_path / "out"
    suite = suite_file(tmp_path)
    assert run(cli, suite, out)[0] == 0
    if where == "cell":
        target = cell_dirs(out)[0]
        shutil.rmtree(target)
    else:
        target = out / where
        shutil.rmtree(target)
    target.write_text("a file of the user's")
    before = snapshot(out)
    computed.clear()
    code, _, err = run(cli, suite, out)
    assert code == 2 and str(target) in err and "file" in err
    one_line(err)
    assert computed == [] and snapshot(out) == before


def test_two_selection_settings_of_one_noise_are_two_table4_entries():
    """Table 4 groups selection cells by experiment (spec without seed), as the accuracy tables do:
    two extractor settings on one dataset and noise are two entries labelled by what differs."""
    from echobench.reporting.table4 import table4_document, table4_markdown

    def cell(seed, tau):
        spec = {"dataset": "shapes", "dataset_options": {}, "noise": "symmetric:0.3", "seed": seed,
                "protocol": {"name": "smoke"}, "params": {"tau": tau}, "peers": {}, "precisions": [0.9],
                "kind": "selection"}
        result = {"echoselect": {"n": 100, "tau": tau, "n_selected": 50, "precision": 0.9, "recall": 0.5,
                                 "auroc": 0.7, "ks_statistic": 0.3, "n_noisy": 30},
                  "table4": {"echoselect": {"90%": 40 + seed}}, "peers": {}, "files": {}}
        return f"{seed}-{tau}", {"spec": spec}, result

    doc = table4_document([cell(1, 0.8), cell(2, 0.8), cell(1, 0.9)])
    assert sorted((st["variant"], st["seeds"]) for st in doc["settings"]) == [("params.tau=0.8", [1, 2]),
                                                                           ("params.tau=0.9", [1])]
    ours = {r["variant"]: r["values"] for r in doc["records"] if r["selector"] == "echoselect"}
    assert ours == {"params.tau=0.8": [41, 42], "params.tau=0.9": [41]}
    assert "symmetric 30% (params.tau=0.9)" in table4_markdown(doc)

