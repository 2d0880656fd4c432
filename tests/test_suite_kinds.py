"""Suite kinds beyond training: `selection` (the paper's Table 4) and `runtime` (Tables 6 and 7).

Their cells run through `echobench run` (dispatched before the training runner), resume like
training cells, and `echobench report` turns them into Table 4 beside the paper's transcription,
the runtime report, and one index page that links every file.
"""

import json
import shutil
from pathlib import Path

import pytest
import yaml

from echobench.errors import EchobenchError
from echobench.reporting.index_page import links
from echobench.harness.store import Store
from echobench.harness.suite import load_suite, parse_suite

REPO = Path(__file__).resolve().parents[1]


def small_table4_shapes(tmp_path) -> Path:
    """The registered CPU analog `table4-shapes` (same noise settings, peers, precisions), on fewer images
    and the smoke protocol, so that it runs in seconds."""
    raw = yaml.safe_load((REPO / "echobench/suites/table4-shapes.yaml").read_text())
    raw.update(name="table4-shapes-small", datasets={"shapes": {"n_train": 600, "n_test": 100}},
               protocol={"name": "smoke", "epochs": 2})
    path = tmp_path / "table4-shapes-small.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def fake_selection_cell(store, rid, dataset, noise, seed, counts, n=45_000, files=None):
    """A finished selection cell whose Table 4 view is `counts` {selector: {"96%": count, ...}}."""
    spec = {"kind": "selection", "dataset": dataset, "noise": noise, "seed": seed, "precisions": [0.94, 0.96, 0.98, 0.99]}
    store.write(rid, "config.json", {"run_id": rid, "kind": "selection", "spec": spec,
                                     "environment": {"git": "abc", "device": {"type": "cpu", "name": "cpu"}}})
    echoselect = {"n": n, "tau": 0.4, "n_selected": 1, "precision": 0.9, "recall": 0.8, "auroc": 0.9,
                  "ks_statistic": 0.5, "n_noisy": 100}
    peers = {name: {"n_selected": 10, "precision": 0.9, "recall": 0.1} for name in counts if name != "echoselect"}
    store.write(rid, "result.json", {"run_id": rid, "kind": "selection", "echoselect": echoselect, "table4": counts,
                                     "peers": peers, "files": files or {}})


def fake_runtime_cell(store, rid, *, device, resolution, batch, seconds, config="sd15"):
    spec = {"kind": "runtime", "device_type": "cuda", "config": config, "random_init": True, "engines": ["eager"],
            "resolution": resolution, "batch_size": batch, "steps": 20, "repeats": 1, "seed": 0}
    store.write(rid, "config.json", {"run_id": rid, "kind": "runtime", "spec": spec,
                                     "environment": {"git": "abc", "device": {"type": "cuda", "name": device}}})
    rows = [{"device": device, "gpu": None, "resolution": resolution, "batch_size": batch, "steps": 20, "cfg": True,
             "seconds_per_image": s, "engine": engine, "config": config, "random_init": True,
             "reference": engine == "diffusers-pipeline", "images_per_s": 1 / s, "peak_mib": 1000.0}
            for engine, s in (("diffusers-pipeline", seconds * 1.5), ("eager", seconds))]
    store.write(rid, "result.json", {"run_id": rid, "kind": "runtime", "measurements": rows, "unsupported": {}})


# --- suites -------------------------------------------------------------------------------------------

def test_kind_suites_expand_and_paper_includes_them():
    table4, runtime, paper = load_suite("table4"), load_suite("runtime"), load_suite("paper")
    assert table4.kinds == ["selection"] and runtime.kinds == ["runtime"]
    assert paper.kinds == ["train", "selection", "runtime"]
    assert table4.expand() == [] and runtime.expand() == []  # the training runner never sees them
    cells = table4.expand_selection()
    assert len(cells) == 1 * 2 * 3  # CIFAR-10 × IDN 30/50% × three seeds
    assert {(c.dataset, c.noise) for c in cells} == {("cifar10", "instance:0.3"), ("cifar10", "instance:0.5")}
    assert all(set(c.peers) == {"bltm", "small-loss", "simifeat", "confident-learning"} for c in cells)
    assert {c.params["extractor"] for c in cells} == {"open_clip"} and {c.params["engine"] for c in cells} == {"eager"}
    # paper = table1 ∪ table2 ∪ table3 (training) plus table4's and runtime's cells, the same ids
    assert {c.run_id for c in paper.expand_selection()} == {c.run_id for c in cells}
    for device in ("cuda", "cpu"):
        assert {c.run_id for c in paper.expand_runtime(device)} == {c.run_id for c in runtime.expand_runtime(device)}
    gpu = runtime.expand_runtime("cuda")
    assert {(c.config, c.resolution, c.batch_size) for c in gpu} == {
        ("sd15", r, b) for r in (256, 512, 768) for b in (1, 8, 16)}  # the paper's Table 6 grid
    assert {(c.config, c.resolution) for c in runtime.expand_runtime("cpu")} == {("tiny", 32)}
    # the device's name is part of a runtime cell's id: an H200's results are not an H100's
    h200, h100 = runtime.expand_runtime("cuda", "NVIDIA H200"), runtime.expand_runtime("cuda", "NVIDIA H100 80GB HBM3")
    assert {c.device_name for c in h200} == {"NVIDIA H200"}
    assert not {c.run_id for c in h200} & {c.run_id for c in h100}
    # a selection cell's setting is the echoalign training cell of the paper suite (same pairs, same split)
    settings = {(c.dataset, c.noise, c.seed, c.protocol["val_fraction"]) for c in paper.expand() if c.method == "echoalign"}
    assert {(c.dataset, c.noise, c.seed, c.protocol["val_fraction"]) for c in cells} <= settings


@pytest.mark.parametrize("raw,expected", [
    ({"kind": "selecton"}, "Did you mean 'selection'"),
    ({"kind": "selection", "methods": ["ce"]}, "takes"),
    ({"kind": "selection", "selection": {"peers": ["bltmm"]}}, "Did you mean 'bltm'"),
    ({"kind": "selection", "selection": {"precisions": [96]}}, "fractions in (0, 1]"),
    ({"kind": "selection", "selection": {"tau": 2}}, "outside [-1, 1]"),
    ({"kind": "selection", "selection": {"threshold": 0.4}}, "unknown key(s) ['threshold']"),
    ({"kind": "runtime", "runtime": {"gpu": {}}}, "device type"),
    ({"kind": "runtime", "runtime": {"cpu": {"config": "sd14"}}}, "Did you mean 'sd15'"),
    ({"kind": "runtime", "runtime": {"cpu": {"engines": ["eagr"]}}}, "Did you mean 'eager'"),
    ({"kind": "runtime", "runtime": {"cpu": {"batch_sizes": [0]}}}, "positive integer"),
    ({"kind": "runtime", "runtime": {"cpu": {"steps": [20]}}}, "positive integer"),
])
def test_bad_kind_suites_are_refused_with_a_message(cli, tmp_path, raw, expected):
    base = {"name": "bad", "datasets": {"shapes": {"n_train": 200}}, "noise": ["instance:0.3"], "seeds": [1],
            "protocol": "smoke"}
    if raw.get("kind") == "runtime":
        base = {"name": "bad"}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**base, **raw}))
    code, _, err = cli("run", "--suite", path, "--out", tmp_path / "o")
    assert code == 2 and expected in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()  # nothing written for a bad suite


def test_runtime_variant_missing_for_the_device_is_an_error(cli, tmp_path):
    suite = parse_suite({"name": "gpu-only", "kind": "runtime", "runtime": {"cuda": {"config": "sd15"}}}, "test")
    with pytest.raises(EchobenchError, match="no `cpu` variant"):
        suite.expand_runtime("cpu")
    path = tmp_path / "gpu-only.yaml"
    path.write_text(yaml.safe_dump({"name": "gpu-only", "kind": "runtime", "runtime": {"cuda": {"config": "sd15"}}}))
    code, _, err = cli("run", "--suite", path, "--out", tmp_path / "o", "--device", "cpu")
    assert code == 2 and "no `cpu` variant" in err and "Traceback" not in err


def test_dry_run_counts_selection_pairs_with_the_training_pairs():
    """A selection cell on an echoalign cell's setting adds no distinct EchoMod pair (one cache), one on
    another seed adds that seed's pairs; the requested count grows by each cell's training split."""
    from echobench.reporting.dry_run import dry_run_summary

    base = {"name": "pairs", "datasets": {"shapes": {"n_train": 300, "n_test": 50}}, "noise": ["instance:0.3"],
            "seeds": [1], "protocol": "smoke"}
    train = parse_suite({**base, "methods": ["echoalign"]}, "t").expand()
    same = parse_suite({**base, "kind": "selection"}, "t").expand_selection()
    other = parse_suite({**base, "kind": "selection", "seeds": [2]}, "t").expand_selection()
    alone = dry_run_summary(train)["echomod"]
    (key, pairs), = alone["pairs"].items()
    with_same = dry_run_summary(train, selection=same)
    assert with_same["echomod"]["pairs"][key] == pairs and with_same["echomod"]["requested"][key] == 2 * alone["requested"][key]
    assert with_same["cells"] == 2 and with_same["cells_per_kind"] == {"train": 1, "selection": 1, "runtime": 0}
    assert dry_run_summary(train, selection=other)["echomod"]["pairs"][key] > pairs
    assert dry_run_summary([], selection=same)["echomod"]["pairs"][key] == pairs  # a selection suite alone


# --- running and reporting ----------------------------------------------------------------------------

def check_index(root: Path) -> tuple[str, list[str]]:
    """index.md exists; every link in it resolves; return (text, link targets)."""
    text = (root / "index.md").read_text()
    targets = links(text)
    assert targets, "the index links nothing"
    missing = [t for t in targets if not (root / t).is_file()]
    assert not missing, f"index.md links files that do not exist: {missing}"
    return text, targets


def test_table4_cpu_analog_runs_resumes_and_reports(cli, tmp_path):
    suite_file = small_table4_shapes(tmp_path)
    out = tmp_path / "t4"
    code, stdout, err = cli("run", "--suite", suite_file, "--out", out, "--no-progress", "--json")
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["cells"] == 2 and summary["computed"] == 2 and not summary["failed"]
    cells = {p.parent.name: json.loads(p.read_text()) for p in (out / "cells").glob("*/result.json")}
    assert len(cells) == 2
    for rid, result in cells.items():
        config = json.loads((out / "cells" / rid / "config.json").read_text())
        assert config["kind"] == "selection" and config["environment"]["device"]["type"] == "cpu"
        for name in ("similarity_hist.png", "tau_sweep.png", "select.md"):
            assert (out / "cells" / rid / name).stat().st_size > 0
        assert set(result["table4"]) == {"echoselect", "bltm", "small-loss"}
        assert not list((out / "cells" / rid).glob(".*.tmp"))  # atomic writes leave no temporaries
    # the report: Table 4 from the cells' own counts, in the paper's row layout (IDN-30%: 96/99%, IDN-50%: 94/98%)
    doc = json.loads((out / "report.json").read_text())
    rows = {(r["noise"], r["precision"], r["selector"]): r for r in doc["table4"]["records"]}
    assert {(n, p) for n, p, _ in rows} == {("instance:0.3", 0.96), ("instance:0.3", 0.99),
                                            ("instance:0.5", 0.94), ("instance:0.5", 0.98)}
    for result in cells.values():
        noise = result["noise"]
        for (n, p, selector), r in rows.items():
            if n == noise:
                assert r["values"] == [result["table4"][selector][f"{round(p * 100)}%"]]
                assert r["paper_selected"] is None  # the paper has no `shapes` numbers
    md = (out / "report.md").read_text()
    assert "## Table 4" in md and "EchoSelect (Ours): ours" in md and "/ 540 (" in md  # 90% of 600 images
    text, targets = check_index(out)
    assert {"report.md", "report.json"} <= set(targets)
    assert sum(t.endswith("similarity_hist.png") for t in targets) >= 2 and sum(t.endswith("tau_sweep.png") for t in targets) >= 2
    assert "table4-shapes-small" in text and "echobench run --suite" in text  # configuration: suite and command
    # resume: a finished cell is skipped, a cell whose result was lost (killed) is computed again
    lost = next(iter(cells))
    (out / "cells" / lost / "result.json").unlink()
    code, stdout, _ = cli("run", "--suite", suite_file, "--out", out, "--no-progress", "--json")
    again = json.loads(stdout)
    assert code == 0 and again["computed"] == 1 and again["skipped"] == 1
    assert len(list((out / "commands").glob("*.json"))) == 2  # both runs recorded
    assert json.loads((out / "cells" / lost / "result.json").read_text())["table4"] == cells[lost]["table4"]


@pytest.mark.slow
def test_registered_table4_shapes_suite(cli, tmp_path):
    """The registered CPU analog as it is (about a minute of CPU time)."""
    code, _, err = cli("run", "--suite", "table4-shapes", "--out", tmp_path / "t4", "--no-progress")
    assert code == 0, err
    doc = json.loads((tmp_path / "t4" / "report.json").read_text())
    echoselect = [r for r in doc["table4"]["records"] if r["selector"] == "echoselect"]
    assert len(echoselect) == 4 and all(r["mean"] > 0 for r in echoselect)
    check_index(tmp_path / "t4")


def test_runtime_suite_cpu_cells(cli, tmp_path):
    """The runtime suite on CPU: the tiny configuration, eager against the stock pipeline, in seconds."""
    out = tmp_path / "rt"
    code, stdout, err = cli("run", "--suite", "runtime", "--out", out, "--no-progress", "--device", "cpu", "--json")
    assert code == 0, err
    assert json.loads(stdout)["computed"] == 2
    results = [json.loads(p.read_text()) for p in (out / "cells").glob("*/result.json")]
    assert len(results) == 2 and all(r["kind"] == "runtime" and not r["unsupported"] for r in results)
    measured = [m for r in results for m in r["measurements"]]
    assert {(m["config"], m["resolution"], m["batch_size"], m["engine"]) for m in measured} == {
        ("tiny", 32, b, e) for b in (1, 4) for e in ("diffusers-pipeline", "eager")}
    for m in measured:
        assert m["seconds_per_image"] > 0 and m["steps"] == 20 and m["cfg"] is True
        if m["engine"] == "eager":
            assert m["parity_max_abs"] <= 1e-5  # EchoMod reproduces the stock pipeline's pixels
    runtime = json.loads((out / "runtime.json").read_text())
    assert len(runtime["rows"]) == 4 and runtime["table6_beside_paper"] == []  # tiny is not on SD 1.5's scale
    assert runtime["report"]["measurement_given"] is False
    md = (out / "runtime.md").read_text()
    assert "Runtime cells of this results directory" in md and "No SD 1.5 measurement" in md
    assert "| tiny" in md and "The paper's Table 6" in md
    _, targets = check_index(out)
    assert {"runtime.md", "runtime.json", "report.md", "report.json"} <= set(targets)


def test_table4_reference_columns_match_the_transcription(tmp_path):
    from echobench.reporting.paper_reference import TABLE4, TABLE4_TOTAL, paper_selected
    from echobench.reporting.tables import write_reports

    store = Store(tmp_path)
    store.claim("table4")
    counts = {1: {"echoselect": 20_000, "bltm": 10_000, "small-loss": 5_000},
              2: {"echoselect": 22_000, "bltm": 12_000, "small-loss": 6_000}}
    for noise in ("instance:0.3", "instance:0.5"):
        for seed, per in counts.items():
            table4 = {s: {k: c + i for i, k in enumerate(("94%", "96%", "98%", "99%"))} for s, c in per.items()}
            fake_selection_cell(store, f"{noise[-1]}{seed}", "cifar10", noise, seed, table4)
    doc = write_reports(tmp_path)
    records = doc["table4"]["records"]
    paper_rows = [r for r in records if r["paper_selected"] is not None]
    # every cell of the paper's Table 4 is there, with the transcribed number
    assert {(r["noise"], r["precision"], r["selector"]): r["paper_selected"] for r in paper_rows} == {
        (n, p, s): c for n, p, sel in TABLE4 for s, c in sel.items()}
    for r in paper_rows:
        assert r["paper_selected"] == paper_selected(r["noise"], r["precision"], r["selector"])
        assert r["paper_total"] == TABLE4_TOTAL
        # ours: mean over the two seeds, as a share of the measured split; Δ in percentage points of the set
        k = {0.94: 0, 0.96: 1, 0.98: 2, 0.99: 3}[r["precision"]]
        mean = (counts[1][r["selector"]] + counts[2][r["selector"]]) / 2 + k
        assert r["mean"] == pytest.approx(mean) and r["values"] == [counts[1][r["selector"]] + k, counts[2][r["selector"]] + k]
        assert r["difference_share_pp"] == pytest.approx(100 * (mean / 45_000 - r["paper_selected"] / TABLE4_TOTAL), abs=0.01)
    assert not any(r["paper_selected"] is not None for r in records if r["selector"] == "small-loss")
    md = (tmp_path / "report.md").read_text()
    assert "17,673 / 50,000 (35.3%)" in md and "26,524 / 50,000 (53.0%)" in md  # IDN-30%, 96%: BLTM, Ours
    assert "1.78×" in md  # the paper's "almost twice" at IDN-30%, 99%: 19010 / 10673
    # a dataset other than CIFAR-10 has no paper numbers
    other = tmp_path / "other"
    store = Store(other)
    store.claim("x")
    fake_selection_cell(store, "a", "cifar100", "instance:0.3", 1, {"echoselect": {"96%": 5, "99%": 3}})
    doc = write_reports(other)
    assert all(r["paper_selected"] is None for r in doc["table4"]["records"])


def test_runtime_report_puts_sd15_cells_beside_tables_6_and_7(tmp_path):
    from echobench.reporting.tables import write_reports
    from echobench.reporting.runtime import gpu_hours, project

    store = Store(tmp_path)
    store.claim("runtime")
    device = "NVIDIA H100 80GB HBM3"
    fake_runtime_cell(store, "r1", device=device, resolution=512, batch=8, seconds=0.2)
    fake_runtime_cell(store, "r2", device=device, resolution=256, batch=16, seconds=0.05)
    write_reports(tmp_path)
    runtime = json.loads((tmp_path / "runtime.json").read_text())
    t6 = {(r["resolution"], r["batch_size"], r["row"]): r for r in runtime["table6_beside_paper"]}
    assert t6[(512, 8, "eager")]["paper_v100_gpu_hours"] == 18.5 and t6[(256, 16, "eager")]["paper_v100_gpu_hours"] == 4.5
    v100 = gpu_hours(project(0.2, "h100", "v100", resolution=512), 50_000)
    assert t6[(512, 8, "eager")]["ours_projected_v100_gpu_hours"] == pytest.approx(v100, abs=1e-3)
    assert t6[(512, 8, "eager")]["ours_gpu_hours"] == pytest.approx(0.2 * 50_000 / 3600, abs=1e-3)
    t7 = {(r["gpu"], r["row"]): r for r in runtime["table7_beside_paper"]}
    assert t7[("v100", "eager")]["paper_gpu_hours"] == 18.5 and t7[("rtx4090", "eager")]["paper_gpu_hours"] == 8.5
    assert t7[("v100", "eager")]["kind"] == "projection"
    # the full runtime report carries the EchoMod engine rows, not the stock pipeline's
    assert [m["engine"] for m in runtime["report"]["measurements"]] == ["eager", "eager"]
    assert {m["gpu"] for m in runtime["report"]["measurements"]} == {"h100"}
    md = (tmp_path / "runtime.md").read_text()
    assert "Table 6 beside ours" in md and "Table 7 beside ours" in md and "Measured on NVIDIA H100" in md
    check_index(tmp_path)


def test_index_links_every_file_of_a_mixed_directory(cli, tmp_path):
    """Training, selection and runtime cells in one directory: one index page links every file the report
    wrote and every figure, and every link resolves."""
    from test_report import fake_results

    out = tmp_path / "mixed"
    code, _, err = cli("run", "--suite", small_table4_shapes(tmp_path), "--out", out, "--no-progress")
    assert code == 0, err
    training = fake_results(tmp_path / "training", {("ce", "symmetric:0.5"): [0.70, 0.72],
                                                    ("echoalign", "instance:0.5"): [0.75, 0.77]}, dataset="cifar10")
    for cell in (training / "cells").iterdir():  # training cells beside the selection cells
        shutil.copytree(cell, out / "cells" / cell.name)
    fake_runtime_cell(Store(out), "rt512x8", device="NVIDIA A100-SXM4-80GB", resolution=512, batch=8, seconds=0.3)
    # the copied training and runtime cells are not in the directory's suite (stale): included on request
    code, stdout, err = cli("report", out, "--json", "--include-stale")
    assert code == 0, err
    doc = json.loads(stdout)
    assert set(doc["written"]) == {"report.md", "report.tex", "report.csv", "report.json", "runtime.md",
                                   "runtime.json", "index.md"}
    text, targets = check_index(out)
    for name in doc["written"]:
        assert (out / name).is_file()
        assert name == "index.md" or name in targets, f"{name} is not linked from index.md"
    for figure in doc["figures"]:
        assert figure in targets
    assert sum(f.endswith(".png") for f in doc["figures"]) == 4  # two settings × (histogram, τ sweep)
    top_level = {p.name for p in out.iterdir() if p.is_file() and not p.name.startswith(".")}
    assert top_level - {"suite.json"} <= set(doc["written"])  # nothing produced that the index misses
    for kind in ("train", "selection", "runtime"):
        assert doc["cells_per_kind"][kind]["finished"] > 0
    assert "NVIDIA A100-SXM4-80GB" in text and "## Environment" in text  # environments from config.json
    md = (out / "report.md").read_text()
    assert "Beside the paper" in md and "## Table 4" in md and "[runtime.md](runtime.md)" in md


def test_report_of_a_directory_with_only_failed_kind_cells_is_refused(cli, tmp_path):
    store = Store(tmp_path)
    store.claim("x")
    store.write("a", "config.json", {"run_id": "a", "kind": "selection", "spec": {}, "environment": {}})
    store.write("a", "error.json", {"run_id": "a", "error": "boom"})
    code, _, err = cli("report", tmp_path)
    assert code == 2 and "no finished cells" in err and "1 failed" in err and "Traceback" not in err


def test_runtime_cells_run_last_with_the_device_to_themselves(cli, tmp_path):
    """Training cells first (through the executor), then the runtime cells in the run process."""
    raw = {"name": "train-then-time", "seeds": [1], "protocol": {"name": "smoke", "epochs": 1},
           "datasets": {"shapes": {"n_train": 300, "n_test": 100, "image_size": 16}},
           "blocks": [{"noise": ["symmetric:0.3"], "methods": ["ce"]},
                      {"kind": "runtime", "runtime": {"cpu": {"config": "tiny", "engines": ["eager"], "resolutions": [32],
                                                              "batch_sizes": [1], "steps": 2}}}]}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(raw))
    out = tmp_path / "out"
    code, stdout, err = cli("run", "--suite", path, "--out", out, "--no-progress", "--json", "--device", "cpu")
    assert code == 0, err
    assert json.loads(stdout)["computed"] == 2
    finished = {json.loads((p.parent / "config.json").read_text()).get("kind", "train"): p.stat().st_mtime_ns
                for p in out.glob("cells/*/result.json")}
    assert set(finished) == {"train", "runtime"} and finished["runtime"] > finished["train"]
