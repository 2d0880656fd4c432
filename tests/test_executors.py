"""Executors of `echobench run`: local workers and Ray give the in-process runner's results; kills
of a worker or of the driver mid-suite lose nothing and duplicate nothing on the re-run.

CPU results are deterministic for a given number of torch threads, so every run here uses one thread
(the session fixture in conftest.py pins this process; workers and Ray tasks get --threads 1).
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from echobench.harness.context import RunContext
from echobench.harness.executors import make_executor
from echobench.harness.local_workers import default_cpu_workers as REAL_DEFAULT_CPU_WORKERS  # before conftest's patch
from echobench.harness.runner import run_suite
from echobench.harness.suite import load_suite, parse_suite

KILL_SUITE = {  # cells of a few seconds each on one thread, so that a kill lands mid-suite
    "name": "kill",
    "datasets": {"shapes": {"n_train": 600, "n_test": 200}},
    "noise": ["symmetric:0.3"],
    "methods": ["ce"],
    "seeds": [1, 2, 3, 4, 5, 6],
    "protocol": {"name": "smoke", "epochs": 2},
}
ECHOMOD_SUITE = {  # EchoAlign on the procedural engine: two cache shards of pairs (indices 0-1023, 1024-1499)
    "name": "echomod",
    "datasets": {"shapes": {"n_train": 1500, "n_test": 200, "image_size": 16}},
    "noise": ["symmetric:0.3"],
    "methods": ["echoalign", "im-only"],
    "seeds": [1],
    "protocol": {"name": "smoke", "epochs": 1},
}


def run_suite_with(executor: str, suite, out, *, device: str = "auto", workers: int | None = None,
                   threads: int | None = None, cache_dir: str | None = None, address: str | None = None,
                   progress: bool = False):
    """`echobench run`'s path: one context, the named executor, the runner."""
    ctx = RunContext.resolve(device=device, threads=threads, cache_dir=cache_dir, progress=progress)
    return run_suite(suite, out, ctx, make_executor(executor, ctx, workers=workers, address=address))


def results(out: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in Path(out).glob("cells/*/result.json")}


def comparable(result: dict) -> dict:
    """What must not depend on the executor: metrics, noise facts and per-epoch numbers (not seconds)."""
    curves = [{k: v for k, v in epoch.items() if k != "seconds"} for epoch in result["curves"]]
    return {"metrics": result["metrics"], "noise": result["noise"], "sizes": result["sizes"], "curves": curves}


def assert_same_results(a: dict[str, dict], b: dict[str, dict]) -> None:
    assert a.keys() == b.keys() and a
    for rid in a:
        assert comparable(a[rid]) == comparable(b[rid]), rid


@pytest.fixture(scope="module")
def local_smoke(tmp_path_factory):
    """The smoke suite through the default local executor, one worker, in this process."""
    out = tmp_path_factory.mktemp("smoke-local")
    outcome = run_suite_with("local", load_suite("smoke"), out, device="cpu", workers=1, threads=1)
    assert len(outcome.computed) == 4 and not outcome.failed
    return results(out)


def test_two_local_workers_give_the_results_of_one(local_smoke, tmp_path):
    outcome = run_suite_with("local", load_suite("smoke"), tmp_path, device="cpu", workers=2, threads=1)
    assert len(outcome.computed) == 4 and not outcome.failed and not outcome.busy
    assert outcome.device == "2 workers on cpu, 1 thread(s) each"
    assert_same_results(results(tmp_path), local_smoke)
    executors = [json.loads(p.read_text())["executor"] for p in tmp_path.glob("cells/*/config.json")]
    assert {e["worker"] for e in executors} == {0, 1} and all(e["threads"] == 1 for e in executors)
    again = run_suite_with("local", load_suite("smoke"), tmp_path, device="cpu", workers=2, threads=1)
    assert again.computed == [] and len(again.skipped) == 4  # resume: nothing to do, no worker started


def test_gpu_workers_are_pinned_round_robin_to_the_visible_gpus(monkeypatch):
    import echobench.environment as environment
    import echobench.harness.local_workers as executors

    monkeypatch.setattr(environment, "resolve_device", lambda requested="auto": "cuda")
    monkeypatch.setattr(executors, "visible_gpus", lambda: ["2", "5"])
    auto = RunContext.resolve(device="auto")
    plan = executors.local_plan(auto)
    assert plan.workers == 2 and plan.gpus == ("2", "5") and plan.device == "cuda"
    assert executors.local_plan(auto, workers=3).gpus == ("2", "5", "2")
    assert executors.local_plan(auto, workers=1).workers == 1
    monkeypatch.setattr(environment, "resolve_device", lambda requested="auto": "cpu")
    cpu = executors.local_plan(RunContext.resolve(device="cpu", threads=1), workers=2)
    assert cpu.gpus == (None, None) and cpu.threads == 1


def test_cpu_default_is_one_single_threaded_worker_per_core(monkeypatch):
    import echobench.harness.local_workers as local_workers

    monkeypatch.setattr(local_workers, "default_cpu_workers", REAL_DEFAULT_CPU_WORKERS)  # conftest makes it 1
    monkeypatch.setattr(local_workers.os, "cpu_count", lambda: 6)
    plan = local_workers.local_plan(RunContext.resolve(device="cpu"))
    assert (plan.workers, plan.threads, plan.gpus) == (6, 1, (None,) * 6)
    assert "6 workers on cpu, 1 thread(s) each" in plan.describe()
    threaded = local_workers.local_plan(RunContext.resolve(device="cpu", threads=2))  # --threads alone: one process
    assert (threaded.workers, threaded.threads) == (1, 2)
    assert local_workers.local_plan(RunContext.resolve(device="cpu"), workers=3).threads == 2  # cores / workers


def test_visible_gpus_honour_cuda_visible_devices(monkeypatch):
    import torch

    from echobench.harness.local_workers import visible_gpus

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")
    assert visible_gpus() == ["3", "1"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert visible_gpus() == ["0", "1"]


# --- the command line ---------------------------------------------------------------------------------

def test_run_help_documents_the_executors(capsys):
    from echobench.cli import main

    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = capsys.readouterr().out
    for needle in ("--executor {local,ray}", "--workers", "--address", "--executor ray --address auto", "--workers 4"):
        assert needle in text


@pytest.mark.parametrize("args,expected", [
    (["--executor", "slurm"], "invalid choice: 'slurm'"),
    (["--workers", "0"], "--workers must be at least 1"),
    (["--address", "auto"], "--address auto goes with --executor ray"),
    (["--workers", "-3"], "--workers must be at least 1"),
])
def test_bad_executor_options_get_a_message_not_a_traceback(args, expected, tmp_path, capsys):
    from echobench.cli import main

    try:
        code = main(["run", "--suite", "smoke", "--out", str(tmp_path / "o"), "--no-progress", *args])
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and expected in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_ray_executor_without_ray_names_the_extra(cli, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if ray were not installed
    code, _, err = cli("run", "--suite", "smoke", "--out", tmp_path / "o", "--executor", "ray", "--no-progress")
    assert code == 2 and "pip install 'echobench[ray]'" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


# --- Ray ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ray_local():
    """A local Ray instance for this module: two CPUs, no dashboard."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False)
    yield ray
    ray.shutdown()


@pytest.mark.ray
def test_ray_executor_gives_the_local_results(ray_local, local_smoke, tmp_path):
    outcome = run_suite_with("ray", load_suite("smoke"), tmp_path, threads=1)
    assert len(outcome.computed) == 4 and not outcome.failed
    assert outcome.device == "ray (2 CPU task(s) at once)"
    assert_same_results(results(tmp_path), local_smoke)
    config = json.loads(next(tmp_path.glob("cells/*/config.json")).read_text())
    assert config["executor"]["name"] == "ray" and config["executor"]["task_resources"] == {"num_cpus": 1}
    assert config["environment"]["device"]["threads"] == 1  # the task's environment, not the driver's
    assert run_suite_with("ray", load_suite("smoke"), tmp_path, threads=1).computed == []


@pytest.mark.ray
def test_ray_generates_echomod_pairs_in_shard_tasks_and_training_only_reads_them(ray_local, tmp_path):
    suite = parse_suite(ECHOMOD_SUITE, "test")
    local = run_suite_with("local", suite, tmp_path / "local", device="cpu", workers=1, threads=1,
                           cache_dir=str(tmp_path / "cache-local"))
    remote = run_suite_with("ray", suite, tmp_path / "ray", threads=1,
                            cache_dir=str(tmp_path / "cache-ray"))
    assert len(local.computed) == len(remote.computed) == 2 and not local.failed and not remote.failed
    ray_results, local_results = results(tmp_path / "ray"), results(tmp_path / "local")
    assert_same_results(ray_results, local_results)
    for r in ray_results.values():  # the shard tasks made every pair before training started
        cache = r["diagnostics"]["cache"]
        assert cache["generated"] == 0 and cache["cached"] == cache["requested"] == r["sizes"]["train"]
    assert sum(r["diagnostics"]["cache"]["generated"] for r in local_results.values()) > 0  # in-process: made in the cell
    shards = sorted(p.name for p in (tmp_path / "cache-ray").rglob("shard-*.npz"))
    assert shards == ["shard-000000.npz", "shard-000001.npz"]  # one per generation shard task (0/2 and 1/2)


def test_local_workers_generate_echomod_pairs_in_shards_first(tmp_path, capsys):
    """With two workers the pairs are made by two generation shards before any cell starts: each cell
    only reads the cache, and the results are the one-by-one runner's."""
    suite = parse_suite(ECHOMOD_SUITE, "test")
    one = run_suite_with("local", suite, tmp_path / "one", device="cpu", workers=1, threads=1,
                         cache_dir=str(tmp_path / "cache-one"))
    capsys.readouterr()
    two = run_suite_with("local", suite, tmp_path / "two", device="cpu", workers=2, threads=1,
                         cache_dir=str(tmp_path / "cache-two"), progress=True)
    assert len(one.computed) == len(two.computed) == 2 and not one.failed and not two.failed
    assert_same_results(results(tmp_path / "two"), results(tmp_path / "one"))
    for r in results(tmp_path / "two").values():
        cache = r["diagnostics"]["cache"]
        assert cache["generated"] == 0 and cache["cached"] == cache["requested"] == r["sizes"]["train"]
    err = capsys.readouterr().err
    assert "shard 1/2" in err and "shard 2/2" in err and "generated" in err
    shards = sorted(p.name for p in (tmp_path / "cache-two").rglob("shard-*.npz"))
    assert shards == ["shard-000000.npz", "shard-000001.npz"]


def test_a_failed_generation_shard_is_one_line_and_the_run_goes_on(tmp_path, capsys):
    """A worker's shard job that raises answers `failed` with the error (the driver prints one line and
    hands out the cells, which generate their missing pairs themselves)."""
    import echobench.harness.local_workers as local_workers

    jobs = local_workers._shard_jobs(parse_suite(ECHOMOD_SUITE, "test").expand(), 2)
    assert [j.shard for j in jobs] == [(0, 2), (1, 2)] and local_workers._shard_jobs([], 2) == []
    assert local_workers._shard_jobs(parse_suite(ECHOMOD_SUITE, "test").expand(), 1) == []  # one worker: no phase
    message = jobs[0].message()
    message["group"]["dataset_options"] = {"n_train": -5}  # the worker cannot load this dataset
    answer = local_workers._generate(json.loads(json.dumps(message)), RunContext.resolve(device="cpu"))
    assert answer["status"] == "failed" and "n_train" in answer["error"]
    local_workers._report_shard(jobs[0], answer, progress=False)
    assert "shard 1/2 failed" in capsys.readouterr().err


MIXED_SUITE = {  # a selection cell (Table 4's kind) beside training cells, on the procedural engine
    "name": "mixed",
    "datasets": {"shapes": {"n_train": 800, "n_test": 200, "image_size": 16}},
    "seeds": [1],
    "protocol": {"name": "smoke", "epochs": 2},
    "blocks": [
        {"noise": ["instance:0.3"], "methods": ["ce", "echoalign"]},
        {"kind": "selection", "noise": ["instance:0.3"],
         "selection": {"peers": ["small-loss"], "precisions": [0.9, 0.96]}},
    ],
}
SELECTION_FILES = ("similarity_hist.png", "tau_sweep.png", "select.md")


def run_mixed(executor: str, out: Path, **options):
    """The mixed suite's selection cells go to the executor with its training cells, as `echobench run` does."""
    from echobench.harness.runner import plan_cells

    suite = parse_suite(MIXED_SUITE, "test")
    selection, _, runtime = plan_cells(suite, None, "cpu")
    assert len(selection) == 1 and not runtime
    outcome = run_suite_with(executor, suite, out, threads=1, cache_dir=str(out) + "-cache", **options)
    assert len(outcome.computed) == 3 and not outcome.failed, outcome.failed
    done = results(out)
    (sel,) = [rid for rid, r in done.items() if r.get("kind") == "selection"]
    for name in SELECTION_FILES:
        assert (out / "cells" / sel / name).stat().st_size > 0
    config = json.loads((out / "cells" / sel / "config.json").read_text())
    assert config["kind"] == "selection"
    return done, sel, config


def selection_facts(result: dict) -> dict:
    """What must not depend on the executor: EchoSelect's and the peers' selections (not their seconds)."""
    peers = {name: {k: v for k, v in facts.items() if k != "seconds"} for name, facts in result["peers"].items()}
    return {"table4": result["table4"], "echoselect": result["echoselect"], "peers": peers,
            "tau_sweep": result["tau_sweep"]}


@pytest.fixture(scope="module")
def mixed_in_process(tmp_path_factory):
    return run_mixed("local", tmp_path_factory.mktemp("mixed") / "one", device="cpu", workers=1)


@pytest.mark.slow  # workers and selection cells are each covered by a faster default test
def test_local_workers_compute_selection_cells_too(mixed_in_process, tmp_path):
    one, sel, _ = mixed_in_process
    two, sel2, config = run_mixed("local", tmp_path / "two", device="cpu", workers=2)
    assert sel2 == sel and config["executor"]["name"] == "local" and config["executor"]["pid"] != os.getpid()
    assert selection_facts(two[sel]) == selection_facts(one[sel])
    assert_same_results({k: v for k, v in two.items() if k != sel}, {k: v for k, v in one.items() if k != sel})


@pytest.mark.ray
def test_ray_runs_selection_cells_as_tasks_after_their_echomod_shards(ray_local, mixed_in_process, tmp_path):
    one, sel, _ = mixed_in_process
    remote, sel2, config = run_mixed("ray", tmp_path / "ray")
    assert sel2 == sel and config["executor"]["name"] == "ray" and config["executor"]["pid"] != os.getpid()
    assert selection_facts(remote[sel]) == selection_facts(one[sel])
    cache = remote[sel]["cache"]  # the shard tasks made the setting's pairs before the selection task ran
    assert cache["generated"] == 0 and cache["cached"] == cache["requested"] > 0


# --- kill and resume ----------------------------------------------------------------------------------

def children(pid: int) -> list[int]:
    """Processes whose parent is `pid` (Linux /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def start_run(tmp_path: Path, env: dict, *extra: str) -> tuple[subprocess.Popen, list[str], Path]:
    suite_file = tmp_path / "kill.yaml"
    suite_file.write_text(json.dumps(KILL_SUITE))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "echobench", "run", "--suite", str(suite_file), "--out", str(out), "--device", "cpu",
           "--threads", "1", "--no-progress", *extra]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    return proc, cmd, out


def busy_worker(out: Path, workers: list[int], timeout: float = 120) -> int:
    """The pid of a worker that is computing a cell: its config.json names the worker, it has no result."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for config in out.glob("cells/*/config.json"):
            if (config.parent / "result.json").exists():
                continue
            try:
                pid = json.loads(config.read_text())["executor"]["pid"]
            except (OSError, ValueError, KeyError):
                continue
            if pid in workers:
                return pid
        time.sleep(0.01)
    raise AssertionError("no worker was computing a cell")


def wait_for_results(out: Path, proc: subprocess.Popen, n: int = 1, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while len(list(out.glob("cells/*/result.json"))) < n:
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.time() < deadline, "no result in time"
        time.sleep(0.05)


def rerun_and_check(cmd: list[str], env: dict, out: Path, done_before: dict[str, int]) -> dict:
    """Re-run: exactly the missing cells computed, finished ones untouched, one result per cell, no temporaries."""
    rerun = subprocess.run(cmd + ["--json"], env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    cells = len(KILL_SUITE["seeds"])
    assert summary["skipped"] == len(done_before) and summary["computed"] == cells - len(done_before)
    finished = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("cells/*/result.json")}
    assert len(finished) == cells and len(list((out / "cells").iterdir())) == cells
    assert all(finished[k] == v for k, v in done_before.items())  # nothing computed twice
    assert not list(out.rglob("*.tmp")) and not list(out.glob("cells/*/error.json"))
    for p in out.glob("cells/*/result.json"):
        json.loads(p.read_text())
    return summary


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds worker processes through /proc")
def test_sigkill_of_a_worker_mid_suite_then_rerun_completes(tmp_path, subprocess_env):
    proc, cmd, out = start_run(tmp_path, subprocess_env, "--workers", "2")
    try:
        wait_for_results(out, proc)
        workers = children(proc.pid)
        assert len(workers) == 2
        victim = busy_worker(out, workers)  # one that is computing a cell, not between two
        os.kill(victim, signal.SIGKILL)
        _, err = proc.communicate(timeout=300)  # the driver goes on with the other worker
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 1, err.decode()
    errors = {p.parent.name: json.loads(p.read_text())["error"] for p in out.glob("cells/*/error.json")}
    assert len(errors) == 1, errors  # only the cell the killed worker was on
    (lost, message), = errors.items()
    assert f"pid {victim}" in message and "SIGKILL" in message and "re-run" in message
    assert (out / "cells" / lost / ".lock").exists()  # its lock file stays; the kernel dropped the lock itself
    done_before = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("cells/*/result.json")}
    assert len(done_before) == len(KILL_SUITE["seeds"]) - 1
    summary = rerun_and_check(cmd, subprocess_env, out, done_before)
    assert summary["computed"] == 1


@pytest.mark.slow  # 14 s; a killed worker (the default set) is the commoner fault
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds worker processes through /proc")
def test_sigkill_of_the_driver_mid_suite_takes_its_workers_and_rerun_completes(tmp_path, subprocess_env):
    proc, cmd, out = start_run(tmp_path, subprocess_env, "--workers", "2")
    try:
        wait_for_results(out, proc)
        workers = children(proc.pid)
        assert len(workers) == 2
        os.kill(proc.pid, signal.SIGKILL)  # the driver only: its workers must not outlive it
        proc.wait()
        deadline = time.time() + 10
        while any(alive(w) for w in workers) and time.time() < deadline:
            time.sleep(0.05)
        assert not any(alive(w) for w in workers), "a worker outlived its driver"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    done_before = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("cells/*/result.json")}
    assert 1 <= len(done_before) < len(KILL_SUITE["seeds"]), "the kill should land mid-suite"
    unfinished = [d for d in (out / "cells").iterdir() if not (d / "result.json").exists()]
    assert any((d / ".lock").exists() for d in unfinished)  # the killed workers' lock files are left behind
    rerun_and_check(cmd, subprocess_env, out, done_before)


@pytest.mark.slow  # 31 s; the Ray executor's results are checked in the default set
@pytest.mark.ray
def test_sigkill_of_the_ray_driver_mid_suite_then_rerun_completes(tmp_path, subprocess_env):
    pytest.importorskip("ray")
    proc, cmd, out = start_run(tmp_path, subprocess_env, "--executor", "ray", "--address", "local")
    try:
        wait_for_results(out, proc)
        os.kill(proc.pid, signal.SIGKILL)  # the driver: it held the locks and wrote the results
        proc.wait()
    finally:
        with contextlib.suppress(ProcessLookupError):  # what is left of the Ray instance it started
            os.killpg(proc.pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.wait()
    done_before = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("cells/*/result.json")}
    assert 1 <= len(done_before) < len(KILL_SUITE["seeds"]), "the kill should land mid-suite"
    rerun_and_check(cmd, subprocess_env, out, done_before)
