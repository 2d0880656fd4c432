"""The runtime report: the paper's appendix D transcription, the compute model, floors, projections,
GPU-hours, and `echobench report --runtime` with good and bad measurement files."""

import json
import re
from pathlib import Path

import pytest

from echobench.reporting import runtime as rr

REPO = Path(__file__).resolve().parents[1]
PAPER_TEXT = REPO.parent / "shared" / "paper" / "echoalign-paper.txt"  # the paper's text beside the checkout, when present
REFERENCE = REPO / "reports" / "reference"

H100_MEASUREMENT = {"device": "NVIDIA H100 80GB HBM3", "gpu": "h100", "resolution": 512, "batch_size": 8,
                    "steps": 20, "seconds_per_image": 0.2, "engine": "eager"}


def _number(cell: str) -> float | None:
    return None if cell == "/" else float(cell)


def test_transcription_matches_the_paper_text():
    if not PAPER_TEXT.exists():
        pytest.skip("the paper's text is not beside the checkout")
    text = PAPER_TEXT.read_text(encoding="utf-8")
    appendix = text[text.index("D Runtime Analysis"):text.index("E Challenges of Instance Modification")]
    table6 = {}
    for res, cells in re.findall(r"^(\d+)×\1\t(.+)$", appendix, flags=re.M):
        b1, b8, b16, clothing = (_number(c.strip()) for c in cells.split("\t"))
        table6.update({("cifar10", int(res), 1): b1, ("cifar10", int(res), 8): b8, ("cifar10", int(res), 16): b16,
                       ("clothing1m", int(res), 16): clothing})
    assert table6 == {(d, r, b): h for d, r, b, h in rr.PAPER_TABLE6}
    table7 = {}
    for gpu, key in (("V100-SXM2", "v100"), ("RTX 4090", "rtx4090")):
        cifar, clothing = re.search(rf"^{gpu}\t([\d.]+)\t([\d.]+)$", appendix, flags=re.M).groups()
        table7.update({(key, "cifar10"): float(cifar), (key, "clothing1m"): float(clothing)})
    assert table7 == {(g, d): h for g, d, h in rr.PAPER_TABLE7}
    assert "125 Tensor TFLOPS" in appendix and "165.2 Tensor TFLOPS" in appendix
    assert rr.GPUS.get("v100").peak_tflops == 125.0 and rr.GPUS.get("rtx4090").peak_tflops == 165.2


def test_reference_files_are_the_transcription():
    assert json.loads((REFERENCE / "paper_runtime.json").read_text(encoding="utf-8")) == rr.paper_runtime()
    assert json.loads((REFERENCE / "gpus.json").read_text(encoding="utf-8")) == rr.gpus_document()
    doc = rr.paper_runtime()
    missing = [row for row in doc["table6"]["rows"] if row["gpu_hours"] is None]
    assert [(r["dataset"], r["resolution"], r["batch_size"]) for r in missing] == [("cifar10", 768, 16), ("clothing1m", 768, 16)]
    assert all(r["derived"]["seconds_per_image"] is None for r in missing)
    clothing = next(r for r in doc["table7"]["rows"] if r["gpu"] == "rtx4090" and r["dataset"] == "clothing1m")
    assert clothing["derived"]["seconds_per_image"] == pytest.approx(338.2 * 3600 / 1_000_000, abs=1e-4)


def test_compute_model_is_46_tflop_at_512_20_steps_cfg():
    assert rr.per_image_gflop() == pytest.approx(20 * 2 * (803 + 283) + 2515)  # 45,955 GFLOP
    assert rr.per_image_gflop() / 1000 == pytest.approx(46, abs=0.05)
    assert rr.per_image_gflop(cfg=False) == pytest.approx(20 * (803 + 283) + 2515)
    # Self-attention makes growth faster than the pixel count; linear scaling is exact only at 512².
    assert rr.per_image_gflop(768) > 2.25 * rr.per_image_gflop() > rr.per_image_gflop(768) * 0.8
    assert rr.per_image_breakdown(768, linear=True)["total"] == pytest.approx(2.25 * rr.per_image_gflop())
    assert rr.per_image_gflop(256) < rr.per_image_gflop() / 4


def test_floors_at_peak():
    assert rr.floor_seconds("h100") == pytest.approx(0.0465, abs=5e-4)
    assert rr.floor_seconds("h200") == rr.floor_seconds("h100")
    assert rr.floor_seconds("v100") == pytest.approx(0.368, abs=5e-4)
    assert rr.floor_seconds("a100") == pytest.approx(0.147, abs=5e-4)
    assert rr.floor_seconds("rtx4090") == pytest.approx(0.278, abs=5e-4)


def test_paper_implied_seconds_and_efficiency():
    assert rr.seconds_per_image(17.2, 50_000) == pytest.approx(1.2384)
    eff = rr.paper_efficiencies()
    assert eff["v100"]["seconds_per_image"] == pytest.approx(1.24, abs=0.005)
    assert eff["v100"]["efficiency"] == pytest.approx(0.30, abs=0.005)
    assert eff["rtx4090"]["seconds_per_image"] == pytest.approx(0.612)
    assert eff["rtx4090"]["efficiency"] == pytest.approx(0.46, abs=0.01)


def test_gpu_hours_arithmetic():
    assert rr.gpu_hours(1.0, 3600) == 1.0
    assert rr.gpu_hours(0.612, 50_000) == pytest.approx(8.5)
    assert rr.gpu_hours(rr.seconds_per_image(504.5, 1_000_000), 1_000_000) == pytest.approx(504.5)


def test_projection_round_trip_and_scaling():
    measured = rr.seconds_per_image(17.2, 50_000)
    assert rr.project(measured, "v100", "v100") == measured
    to_h100 = rr.project(measured, "v100", "h100")
    assert to_h100 == pytest.approx(measured * 125 / 989)
    assert rr.project(to_h100, "h100", "v100") == pytest.approx(measured)
    # Same efficiency on the target: the projected time keeps the measured fraction of peak.
    assert rr.efficiency(to_h100, "h100") == pytest.approx(rr.efficiency(measured, "v100"))
    assert rr.project(measured, "v100", "v100", target_steps=40) == pytest.approx(
        measured * rr.per_image_gflop(steps=40) / rr.per_image_gflop())


def test_report_without_measurement_has_paper_floors_and_says_so():
    doc = rr.runtime_report(None)
    assert doc["measurement_given"] is False and doc["measurements"] == []
    assert len(doc["paper"]["table6"]) == 12 and len(doc["paper"]["table7"]) == 4
    assert {f["gpu"]: f["kind"] for f in doc["floors"]} == dict.fromkeys(rr.GPU_KEYS, "floor")
    json.dumps(doc)  # JSON-able
    md = rr.format_runtime_report(doc)
    assert "No measurement was given" in md and "17.2" in md and "338.2" in md and "projection" in md


def test_report_with_measurement_labels_projections():
    doc = rr.runtime_report(H100_MEASUREMENT)
    (m,) = doc["measurements"]
    kinds = {e["gpu"]: e["kind"] for e in m["estimates"]}
    assert kinds == {"v100": "projection", "rtx4090": "projection", "a100": "projection", "h100": "measured",
                     "h200": "projection"}
    v100 = next(e for e in m["estimates"] if e["gpu"] == "v100")
    assert v100["seconds_per_image"] == pytest.approx(0.2 * 989 / 125, abs=1e-4)
    assert v100["paper_cifar10_gpu_hours"] == 18.5  # the paper's cell at 512², batch 8
    assert m["gpu_hours"] == {"cifar10": pytest.approx(2.78, abs=0.01), "clothing1m": pytest.approx(55.56, abs=0.01)}
    assert m["efficiency"] == pytest.approx(rr.floor_seconds("h100") / 0.2, abs=1e-4)
    md = rr.format_runtime_report(doc)
    assert "No measurement was given" not in md and "Measured on NVIDIA H100 80GB HBM3 (h100)" in md


def test_measurement_gpu_guessed_from_device_or_left_out():
    (m,) = rr.normalize_measurements({"device": "NVIDIA H100 80GB HBM3", "seconds_per_image": 0.3})
    assert (m["gpu"], m["gpu_guessed"], m["resolution"], m["steps"]) == ("h100", True, 512, 20)
    assert rr.infer_gpu("Tesla V100-SXM2-32GB") == "v100" and rr.infer_gpu("NVIDIA H100 PCIe") is None
    doc = rr.runtime_report([{"device": "Some Future GPU", "seconds_per_image": 0.1}])
    (row,) = doc["measurements"]
    assert row["gpu"] is None and "estimates" not in row and "give 'gpu'" in row["note"]


def test_cli_runtime_report_with_a_measurement_file(cli, tmp_path):
    measurement = tmp_path / "measured.json"
    measurement.write_text(json.dumps({"measurements": [H100_MEASUREMENT]}))
    out = tmp_path / "runtime"
    code, stdout, err = cli("report", "--runtime", measurement, "--out", out)
    assert code == 0, err
    assert "Table 6" in stdout and "projection" in stdout and "measured" in stdout
    assert (out / "runtime.md").read_text(encoding="utf-8") in stdout
    written = json.loads((out / "runtime.json").read_text(encoding="utf-8"))
    assert written["measurement_given"] is True and written["measurements"][0]["engine"] == "eager"
    code, stdout, _ = cli("report", "--runtime", "--json", "--out", out)
    assert code == 0 and json.loads(stdout)["measurement_given"] is False


@pytest.mark.parametrize(
    "content,expected",
    [
        (None, "cannot read measurement file"),
        ("{not json", "is not valid JSON"),
        ("[]", "holds no measurement"),
        ('{"device": "x"}', "'seconds_per_image' is missing"),
        ('{"device": "x", "seconds_per_image": -1}', "positive number"),
        ('{"gpu": "h10", "seconds_per_image": 0.2}', "Did you mean 'h100'"),
        ('{"gpu": "h100", "seconds_per_image": 0.2, "resolution": "512"}', "'resolution' must be a positive integer"),
        ('{"seconds_per_image": 0.2}', "give 'device'"),
        ('[{"gpu": "v100", "seconds_per_image": 1}, 3]', "measurement 2: a measurement must be a JSON object"),
    ],
)
def test_cli_runtime_bad_measurements(cli, tmp_path, content, expected):
    path = tmp_path / "m.json"
    if content is not None:
        path.write_text(content)
    code, _, err = cli("report", "--runtime", path, "--out", tmp_path / "out")
    assert code == 2 and expected in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # nothing written for bad input


def test_cli_report_needs_dir_or_runtime(cli, tmp_path):
    code, _, err = cli("report")
    assert code == 2 and "report needs DIR" in err
    code, _, err = cli("report", tmp_path, "--runtime")
    assert code == 2 and "--runtime takes measurement files" in err
    code, out, _ = cli("ls", "gpus")
    assert code == 0 and "h100" in out and "989" in out
