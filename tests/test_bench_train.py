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


def test_gpu_check_script_parses():
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash not installed")
    result = subprocess.run([bash, "-n", str(REPO / "scripts" / "gpu_check.sh")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
