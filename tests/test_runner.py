"""The runner end to end on the embedded world: the smoke suite, resume, force, failures, kills."""

import json
import os
import signal
import subprocess
import sys
import time
import pytest

from pathlib import Path


from echobench.harness.context import RunContext
from echobench.harness.runner import run_suite
from echobench.harness.train_cell import run_cell


def cpu(**changes) -> RunContext:
    """A quiet CPU context, resolved from the test session's environment (its EchoMod cache)."""
    return RunContext.resolve(device="cpu", **changes)
from echobench.harness.suite import load_suite, parse_suite

TINY = {
    "name": "tiny",
    "datasets": {"shapes": {"n_train": 400, "n_test": 100}},
    "noise": ["symmetric:0.3"],
    "methods": ["ce"],
    "seeds": [1, 2],
    "protocol": {"name": "smoke", "epochs": 1},
}


def tiny_suite(**changes):
    return parse_suite({**TINY, **changes}, "test")


def results(out: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in (out / "cells").glob("*/result.json")}


def test_smoke_suite_end_to_end_via_cli(cli, tmp_path):
    code, out, err = cli("run", "--suite", "smoke", "--out", tmp_path / "r", "--no-progress")
    assert code == 0, err
    suite = load_suite("smoke")
    cells = suite.expand()
    res = results(tmp_path / "r")
    assert set(res) == {c.run_id for c in cells}
    for r in res.values():
        m = r["metrics"]
        assert 0.0 <= m["test_acc_last"] <= 1.0
        assert m["test_acc_oracle"] >= max(m["test_acc_last"], m["test_acc_best_val"])
        assert len(r["curves"]) == 2 and r["sizes"]["val"] > 0
    assert "method" in out.splitlines()[2] and "symmetric 30%" in out and "instance 30%" in out
    for ext in ("md", "tex", "csv", "json"):
        assert (tmp_path / "r" / f"report.{ext}").exists()
    config = json.loads(next((tmp_path / "r" / "cells").glob("*/config.json")).read_text())
    assert {"packages", "device", "git", "python"} <= set(config["environment"])


def test_cells_are_deterministic_on_cpu():
    spec = tiny_suite().expand()[0]
    a, b = run_cell(spec), run_cell(spec)
    assert a["metrics"] == b["metrics"]
    assert [r["train_loss"] for r in a["curves"]] == [r["train_loss"] for r in b["curves"]]


@pytest.mark.slow  # 21 s; every method's tiny-setting learning test runs by default
def test_ce_learns_above_chance_at_30_percent_symmetric_noise():
    suite = tiny_suite(datasets={"shapes": {"n_train": 3000, "n_test": 500}}, seeds=[1],
                       protocol={"name": "demo", "epochs": 10, "milestones": [8]})
    result = run_cell(suite.expand()[0])
    assert result["metrics"]["test_acc_best_val"] > 0.2  # chance is 0.1
    assert abs(result["noise"]["realized_rate"] - 0.3) < 0.05


def test_rerun_skips_finished_cells_and_force_recomputes(tmp_path):
    suite = tiny_suite()
    first = run_suite(suite, tmp_path, cpu())
    assert len(first.computed) == 2 and not first.failed
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "cells").glob("*/result.json")}
    again = run_suite(suite, tmp_path, cpu())
    assert again.computed == [] and len(again.skipped) == 2
    assert stamps == {p: p.stat().st_mtime_ns for p in (tmp_path / "cells").glob("*/result.json")}
    forced = run_suite(suite, tmp_path, cpu(force=True))
    assert len(forced.computed) == 2


def test_output_directory_of_another_suite_is_refused(cli, tmp_path):
    assert cli("run", "--suite", "smoke", "--out", tmp_path, "--no-progress", "--seeds", "1")[0] == 0
    before = sorted(p.name for p in (tmp_path / "cells").iterdir())
    code, out, err = cli("run", "--suite", "demo", "--out", tmp_path, "--no-progress")
    assert code == 2
    assert "holds results of suite 'smoke'" in err and "Traceback" not in err
    assert sorted(p.name for p in (tmp_path / "cells").iterdir()) == before


def test_failing_cell_is_recorded_and_the_suite_goes_on(tmp_path, monkeypatch):
    import echobench.harness.train_cell as runner

    real = runner.run_cell

    def flaky(spec, *args, **kwargs):
        if spec.seed == 1:
            raise RuntimeError("boom")
        return real(spec, *args, **kwargs)

    monkeypatch.setattr(runner, "run_cell", flaky)
    outcome = run_suite(tiny_suite(), tmp_path, cpu())
    assert len(outcome.failed) == 1 and len(outcome.computed) == 1
    (rid,) = outcome.failed
    error = json.loads((tmp_path / "cells" / rid / "error.json").read_text())
    assert "boom" in error["error"] and "Traceback" in error["traceback"]
    monkeypatch.setattr(runner, "run_cell", real)
    retry = run_suite(tiny_suite(), tmp_path, cpu())  # a failed cell is retried on re-run
    assert retry.computed == [rid] and not (tmp_path / "cells" / rid / "error.json").exists()


def test_failed_cells_give_nonzero_exit(cli, tmp_path):
    suite_file = tmp_path / "bad.yaml"
    # An invalid dataset option makes every cell fail: the run says so and exits 1.
    suite_file.write_text(json.dumps({**TINY, "datasets": {"shapes": {"n_train": 400, "n_test": 100, "image_size": 0}}}))
    code, out, err = cli("run", "--suite", suite_file, "--out", tmp_path / "o", "--no-progress")
    assert code == 1
    assert "failed" in err


def test_a_runner_skips_a_cell_locked_by_another(tmp_path):
    from echobench.harness.store import Store

    suite = tiny_suite(seeds=[1])
    (spec,) = suite.expand()
    store = Store(tmp_path)
    store.claim(suite.name)
    with store.lock(spec.run_id) as held:
        assert held
        outcome = run_suite(suite, tmp_path, cpu())
    assert outcome.busy == [spec.run_id] and outcome.computed == []
    assert run_suite(suite, tmp_path, cpu()).computed == [spec.run_id]


def test_sigkill_mid_suite_then_rerun_completes_without_loss_or_duplicates(tmp_path, subprocess_env):
    suite_file = tmp_path / "kill.yaml"
    suite_file.write_text(json.dumps({**TINY, "name": "kill", "seeds": [1, 2, 3, 4, 5, 6]}))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "echobench", "run", "--suite", str(suite_file), "--out", str(out), "--no-progress",
           "--workers", "1"]  # the in-process runner (test_executors.py kills worker processes)
    proc = subprocess.Popen(cmd, env=subprocess_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 300  # generous: a loaded 2-core CI machine starts torch slowly
    while time.time() < deadline and len(list(out.glob("cells/*/result.json"))) < 2:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("cells/*/result.json")}
    assert 2 <= len(done_before) < 6, "the kill should land mid-suite"
    rerun = subprocess.run(cmd + ["--json"], env=subprocess_env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    assert summary["skipped"] == len(done_before) and summary["computed"] == 6 - len(done_before)
    finished = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("cells/*/result.json")}
    assert len(finished) == 6 and len(list((out / "cells").iterdir())) == 6
    assert all(finished[k] == v for k, v in done_before.items())  # nothing computed twice
    assert not list(out.rglob("*.tmp"))  # no half-written files
    for p in out.glob("cells/*/result.json"):
        json.loads(p.read_text())


def test_temporaries_left_by_a_killed_writer_are_cleaned(tmp_path):
    suite = tiny_suite(seeds=[1])
    (spec,) = suite.expand()
    cell = tmp_path / "cells" / spec.run_id
    cell.mkdir(parents=True)
    (tmp_path / "suite.json").write_text(json.dumps({"suite": suite.name}))
    (cell / ".result.json.abc.tmp").write_text('{"half": ')
    assert run_suite(suite, tmp_path, cpu()).computed == [spec.run_id]
    assert not list(cell.glob("*.tmp")) and not list(cell.glob(".*.tmp"))


def test_summary_covers_the_final_stage_only():
    from echobench.training.trainer import EpochRecord, History

    h = History()
    for epoch, (stage, test, val) in enumerate([(0, 0.9, 0.9), (0, 0.8, 0.8), (1, 0.5, 0.4), (1, 0.6, 0.3)], start=1):
        h.add(EpochRecord(epoch, 0.1, 1.0, 0.5, val, test, 1.0, {"stage": float(stage)}))
    s = h.summary()
    assert s["test_acc_oracle"] == 0.6 and s["test_acc_best_val"] == 0.5 and s["best_val_epoch"] == 3
    assert s["test_acc_last"] == 0.6 and s["epochs"] == 4


# ------------------------------------------------------------------------------- out of GPU memory


def _oom_suite(method="echoalign", dataset="cifar10"):
    from echobench.harness.suite import parse_suite

    return parse_suite({"name": "oom", "datasets": [dataset], "noise": ["symmetric:0.3"], "methods": [method],
                        "seeds": [1], "protocol": "paper"}, "test")


def test_out_of_memory_retries_with_smaller_batches(tmp_path, monkeypatch):
    """A cell that runs out of GPU memory is retried with halved evaluation, generation and denoising
    batches (never the training batch), keeps its run id, and records what it took."""
    import torch

    from echobench.harness import cells, train_cell as runner
    from echobench.harness.store import Store

    (spec,) = _oom_suite().expand()
    seen = []

    def fake_run_cell(s, *args, **kwargs):
        seen.append(s)
        if s.protocol["eval_batch_size"] > 256:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return {"metrics": {"test_acc_best_val": 0.5}}

    monkeypatch.setattr(runner, "run_cell", fake_run_cell)
    store = Store(tmp_path)
    status, message = cells.compute_cell(store, "oom", spec, {}, cpu())
    assert (status, message) == ("computed", None)
    assert [s.protocol["eval_batch_size"] for s in seen] == [1024, 512, 256]
    assert [s.method_params["generation_batch_size"] for s in seen] == [64, 32, 16]
    assert [s.method_params["engine_options"].get("batch_size") for s in seen] == [None, 4, 2]
    assert {s.protocol["batch_size"] for s in seen} == {spec.protocol["batch_size"]}  # the experiment is unchanged
    result = json.loads((tmp_path / "cells" / spec.run_id / "result.json").read_text())
    assert result["run_id"] == spec.run_id
    assert result["oom_retries"] == [
        {"eval_batch_size": 512, "generation_batch_size": 32, "engine_batch_size": 4},
        {"eval_batch_size": 256, "generation_batch_size": 16, "engine_batch_size": 2},
    ]


def test_out_of_memory_gives_up_with_a_clear_error_and_other_errors_are_not_retried(tmp_path, monkeypatch):
    import torch

    from echobench.harness import cells, train_cell as runner
    from echobench.harness.store import Store

    (spec,) = _oom_suite("ce", "shapes").expand()
    calls = []

    def always_oom(s, *args, **kwargs):
        calls.append(s.protocol["eval_batch_size"])
        raise torch.cuda.OutOfMemoryError("CUDA out of memory.")

    monkeypatch.setattr(runner, "run_cell", always_oom)
    status, message = cells.compute_cell(Store(tmp_path), "oom", spec, {}, cpu())
    assert status == "failed" and "out of GPU memory after 4 tries" in message and "eval_batch_size" in message
    assert calls == [1024, 512, 256, 128]
    assert (tmp_path / "cells" / spec.run_id / "error.json").exists()

    calls.clear()

    def broken(s, *args, **kwargs):
        calls.append(1)
        raise ValueError("a bug, not memory")

    monkeypatch.setattr(runner, "run_cell", broken)
    status, message = cells.compute_cell(Store(tmp_path), "oom", spec, {}, cpu(force=True))
    assert status == "failed" and message == "ValueError: a bug, not memory" and calls == [1]
