"""`echobench bench train` on CPU through the CLI, its input checks, and the GPU check script's syntax."""

import json
import math
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_bench_train_json_on_cpu(cli):
    # One warm-up step and batches of 32 keep the test short: on one CPU core a ResNet-18 step of
    # the protocol's 128 images takes seconds.
    code, out, err = cli("bench", "train", "--n", 64, "--batch-size", 32, "--device", "cpu", "--warmup-steps", 1,
                         "--json")
    assert code == 0, err
    doc = json.loads(out)
    for key in ("images_per_s", "seconds_per_epoch", "seconds_per_step", "peak_memory_mib", "peak_rss_mib"):
        assert isinstance(doc[key], float) and doc[key] > 0 and math.isfinite(doc[key]), key
    assert doc["n"] == 64 and doc["batch_size"] == 32 and doc["steps_per_epoch"] == 2
    assert doc["seconds_per_step"] == pytest.approx(doc["seconds_per_epoch"] / 2)
    assert doc["images_per_s"] == pytest.approx(64 / doc["seconds_per_epoch"])
    assert (doc["protocol"], doc["model"]) == ("paper", "resnet18")
    assert (doc["device"], doc["precision"], doc["channels_last"]) == ("cpu", "fp32", False)
    assert doc["warmup_steps"] == 1 and doc["warmup_images"] == 32
    assert doc["torch"] and doc["peak_memory_kind"].startswith("process peak RSS")
    assert "gpu_peak_mib" not in doc
    assert math.isfinite(doc["train_loss"]) and doc["train_loss"] > 0


@pytest.mark.parametrize("args, fragment", [
    (["--n", "0"], "--n must be at least 1"),
    (["--n", "8", "--batch-size", "0"], "--batch-size must be at least 1"),
    (["--n", "8", "--warmup-steps", "-1"], "--warmup-steps must be 0 or more"),
    (["--n", "8", "--device", "tpu"], "not one of auto, cpu, cuda"),
])
def test_bench_train_bad_input_exits_2_with_a_message(cli, args, fragment):
    code, out, err = cli("bench", "train", *args)
    assert code == 2 and out == ""
    assert fragment in err and "Traceback" not in err


@pytest.mark.slow  # 20 s: three processes each importing torch; the single-cell bench and tests/test_packing.py run by default
def test_bench_train_concurrent_json_on_cpu(cli):
    """One cell alone, then two at once (a process each), in one run; tiny sizes."""
    code, out, err = cli("bench", "train", "--n", 64, "--batch-size", 32, "--device", "cpu", "--warmup-steps", 1,
                         "--threads", 1, "--concurrent", 2, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["benchmark"] == "train-concurrent" and doc["concurrent"] == [2] and doc["compile"] is False
    solo, pair = doc["rows"]
    assert (solo["cells"], solo["compile"], pair["cells"], pair["compile"]) == (1, False, 2, False)
    assert solo["speedup_vs_solo"] == pytest.approx(1.0)
    assert pair["images"] == 128 and len(pair["per_cell_images_per_s"]) == 2
    assert pair["aggregate_images_per_s"] == pytest.approx(128 / pair["wall_s"])
    assert pair["speedup_vs_solo"] == pytest.approx(pair["aggregate_images_per_s"] / solo["aggregate_images_per_s"])
    for row in (solo, pair):
        assert row["peak_memory_mib_per_cell"] > 0 and row["torch_threads_per_cell"] == 1
        assert all(math.isfinite(c["train_loss"]) for c in row["cell_results"])
    assert {c["seed"] for c in pair["cell_results"]} == {0, 1}  # each cell its own seed


@pytest.mark.parametrize("args, fragment", [
    (["--concurrent", "0"], "--concurrent takes cell counts from 1 to 16"),
    (["--concurrent", "17"], "--concurrent takes cell counts from 1 to 16"),
])
def test_bench_train_concurrent_bad_input_exits_2(cli, args, fragment):
    code, out, err = cli("bench", "train", "--n", 8, "--device", "cpu", *args)
    assert code == 2 and out == "" and fragment in err and "Traceback" not in err


def test_bench_train_compile_times_the_compiled_protocol_and_drops_the_last_batch(cli, monkeypatch):
    """--compile selects paper-compiled (last partial batch dropped); torch.compile itself is stubbed
    out here (tests/test_trainer.py compiles for real, marked slow)."""
    import torch

    monkeypatch.setattr(torch, "compile", lambda fn=None, **kw: fn if fn is not None else (lambda f: f))
    code, out, err = cli("bench", "train", "--n", 80, "--batch-size", 32, "--device", "cpu", "--warmup-steps", 1,
                         "--compile", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert (doc["protocol"], doc["compile"], doc["last_batch"]) == ("paper-compiled", True, "drop")
    assert doc["steps_per_epoch"] == 2 and doc["images"] == 64 and doc["warmup_images"] == 32


def test_gpu_check_runs_the_packed_training_rows():
    text = (REPO / "scripts" / "gpu_check.sh").read_text()
    assert "--concurrent 2 4 8 --json" in text and "--concurrent 2 4 8 --compile --json" in text
    assert "bench_train_concurrent.json" in text


def test_gpu_check_script_parses():
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash not installed")
    result = subprocess.run([bash, "-n", str(REPO / "scripts" / "gpu_check.sh")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
