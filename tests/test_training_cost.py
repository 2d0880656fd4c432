"""The dry run's training projection: each method's declared data passes against a hooked run, and the
FLOP and GPU-hour arithmetic of `echobench.reporting.training_cost`."""

import pytest
import torch

from echobench.training.method import METHODS
from echobench.training.protocols import get_protocol
from tests.conftest import TINY_PROTOCOL, run_tiny

SMALL = {"n_train": 300, "n_test": 100}  # 270 train / 30 validation / 100 test
PROTOCOL = {"epochs": 4, "milestones": [3]}


@pytest.fixture
def counted(monkeypatch):
    """Images through every network the run builds, split into passes with gradients (training) and
    without (evaluation, prediction), counted at the network's first convolution."""
    import echobench.training.trainer as trainer

    counts = {"train": 0, "forward": 0}
    build = trainer.build_model

    def counting_build(name, num_classes):
        net = build(name, num_classes)
        first = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))

        def hook(module, inputs, output):
            counts["train" if torch.is_grad_enabled() else "forward"] += len(inputs[0])

        first.register_forward_hook(hook)
        return net

    monkeypatch.setattr(trainer, "build_model", counting_build)
    return counts


@pytest.mark.parametrize("name", sorted(METHODS.names()))
def test_declared_passes_equal_the_images_a_run_pushes_through_its_networks(counted, name):
    result = run_tiny(name, dataset=SMALL, protocol=PROTOCOL)
    n_train, n_val, n_test = result["sizes"]["train"], result["sizes"]["val"], result["sizes"]["test"]
    assert (n_train, n_val, n_test) == (270, 30, 100)
    method = METHODS.get(name)
    protocol = get_protocol("smoke", {k: v for k, v in {**TINY_PROTOCOL, **PROTOCOL}.items() if k != "name"})
    params = method.resolve_params("shapes", {})
    diag = result["diagnostics"]
    kept = diag["n_kept_original"] / diag["n_train"] if "n_kept_original" in diag else 1.0
    p = method.passes(params, protocol, kept_fraction=kept, n_train=n_train)
    assert counted["train"] == pytest.approx(p.train * n_train)
    assert counted["forward"] == pytest.approx(p.train_forward * n_train + p.evaluations * (n_val + n_test)
                                               + p.val_forward * n_val)


def test_flop_and_hours_arithmetic_of_a_paper_cell():
    from echobench.reporting.runtime import GPUS
    from echobench.harness.suite import load_suite
    from echobench.reporting.training_cost import TRAIN_CALIBRATION, cell_gflop, forward_gflop, train_efficiency, training_projection

    f18 = forward_gflop("resnet18", 10, 32)
    assert 1.0 < f18 < 1.2  # CIFAR ResNet-18: ≈ 0.56 G multiply-adds
    assert forward_gflop("resnet34", 100, 32) > 2 * f18 * 0.95
    eff = train_efficiency()
    assert eff == pytest.approx(TRAIN_CALIBRATION["images_per_s"] * 3 * f18 * 1e9 / (GPUS.get("h200").peak_tflops * 1e12))

    cells = load_suite("table1").expand()
    ce = next(c for c in cells if c.method == "ce" and c.dataset == "cifar10")
    trev = next(c for c in cells if c.method == "t-revision" and c.dataset == "cifar10")
    # CE: 200 epochs over 45,000 training images, each epoch evaluated on 5,000 + 10,000 images
    assert cell_gflop(ce) == pytest.approx(f18 * (3 * 200 * 45_000 + 200 * 15_000))
    # T-Revision: 20 + 200 + 200 epochs, one prediction over training, forward validation accuracy in 400
    assert cell_gflop(trev) == pytest.approx(f18 * (3 * 420 * 45_000 + 45_000 + 420 * 15_000 + 400 * 5_000))
    doc = training_projection([ce, trev])
    hours = f18 * (3 * 200 * 45_000 + 200 * 15_000) * 1e9 / (GPUS.get("v100").peak_tflops * 1e12 * eff) / 3600
    assert doc["per_method"]["ce"]["v100"] == pytest.approx(hours, rel=1e-2)
    assert doc["total"]["v100"] == pytest.approx(doc["per_method"]["ce"]["v100"] + doc["per_method"]["t-revision"]["v100"], rel=1e-2)


def test_paper_dry_run_projects_every_stage_without_data(cli, tmp_path):
    import json

    code, out, _ = cli("run", "--suite", "paper", "--dry-run", "--json", "--data-root", tmp_path)
    assert code == 0
    doc = json.loads(out)
    assert set(doc["training"]["per_method"]) == set(doc["cells_per_method"])
    assert doc["training"]["unavailable"] == {}
    assert doc["training"]["per_method"]["t-revision"]["v100"] > doc["training"]["per_method"]["ce"]["v100"] * 2
    # CLIP features of originals and modified images: 66 aligning cells and 6 selection cells × 45,000
    assert doc["echoselect"]["images"] == 2 * 45_000 * (42 + 12 + 12 + 6)
    assert doc["echoselect"]["v100"] > 0
    code, out, _ = cli("run", "--suite", "paper", "--dry-run", "--data-root", tmp_path)
    assert "Projected GPU-hours per stage" in out and "training: t-revision" in out and "EchoSelect" in out


def _packed_doc(device_name="NVIDIA H100 80GB HBM3"):
    return {"benchmark": "train-concurrent", "device": "cuda", "device_name": device_name, "rows": [
        {"cells": 1, "compile": False, "aggregate_images_per_s": 10_000.0, "speedup_vs_solo": 1.0},
        {"cells": 4, "compile": False, "aggregate_images_per_s": 30_000.0, "speedup_vs_solo": 3.0},
        {"cells": 8, "compile": False, "error": "CUDA out of memory"},
        {"cells": 8, "compile": True, "aggregate_images_per_s": 45_000.0, "speedup_vs_solo": 4.5},
    ]}


def test_packed_projection_from_a_committed_measurement(tmp_path):
    import json

    from echobench.reporting.dry_run import _packed_lines
    from echobench.reporting.training_cost import forward_gflop, packed_projection

    path = tmp_path / "bench_train_concurrent.json"
    path.write_text(json.dumps(_packed_doc()))
    total = 1e9  # GFLOP
    doc = packed_projection(total, path)
    per_image = 3 * forward_gflop("resnet18", 10, 32)
    assert doc["measured"] and doc["gpu"] == "h100"
    assert doc["one_cell"]["hours"] == pytest.approx(total / (10_000 * per_image) / 3600, rel=1e-2)
    assert (doc["packed"]["cells_per_gpu"], doc["packed"]["compile"]) == (4, False)  # the failed row is ignored
    assert doc["packed"]["hours"] == pytest.approx(doc["one_cell"]["hours"] / 3, rel=1e-2)
    assert doc["packed_compiled"]["cells_per_gpu"] == 8 and "paper-compiled" in doc["packed_compiled"]["protocol"]
    text = "\n".join(_packed_lines(doc))
    assert "Training on one H100" in text and "4 cell(s) per GPU" in text and "3.0× one cell" in text


def test_packed_projection_without_a_gpu_measurement_says_how_to_measure(tmp_path):
    import json

    from echobench.reporting.training_cost import packed_projection

    missing = packed_projection(1e6, tmp_path / "absent.json")
    assert not missing["measured"] and "bench train --device cuda --concurrent" in missing["note"]
    cpu = tmp_path / "cpu.json"
    cpu.write_text(json.dumps({**_packed_doc("AMD EPYC"), "device": "cpu"}))
    assert not packed_projection(1e6, cpu)["measured"]


def test_paper_dry_run_shows_the_packed_projection_or_what_it_needs(cli, tmp_path, monkeypatch):
    import json

    import echobench.reporting.training_cost as training_cost

    monkeypatch.setattr(training_cost, "PACKED_MEASUREMENT", tmp_path / "absent.json")
    code, out, _ = cli("run", "--suite", "paper", "--dry-run", "--data-root", tmp_path)
    assert code == 0 and "several cells per GPU (--cells-per-gpu): not projected" in out
    measured = tmp_path / "m.json"
    measured.write_text(json.dumps(_packed_doc()))
    monkeypatch.setattr(training_cost, "PACKED_MEASUREMENT", measured)
    code, out, _ = cli("run", "--suite", "paper", "--dry-run", "--json", "--data-root", tmp_path)
    packed = json.loads(out)["training"]["packed"]
    assert packed["packed"]["hours"] < packed["one_cell"]["hours"]
