"""`echobench compare`: matching by experiment identity, one-sided rows, the accuracy rule over seeds,
runtime ratios of runtime cells and `bench … --json` documents, exit codes, Markdown and JSON, bad input.

Results directories are written through the store's API (`compute_in_store`, the path every executor
files a cell through) with chosen accuracies, and once by `echobench run --suite smoke --seeds 1`. The
`bench`-marker test at the end compares a fresh `bench engines` run with reports/bench/engines-tiny-baseline.json.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

import pytest

from echobench.reporting.compare import Rule, accuracy_test, runtime_verdict

REPO = Path(__file__).resolve().parents[1]
BENCH_BASELINE = REPO / "reports" / "bench" / "engines-tiny-baseline.json"
ENV = {"git": "0123456789ab", "python": "3.11", "packages": {"torch": "2.x"},
       "device": {"type": "cpu", "name": "Test CPU", "threads": 1, "cores": 2}, "host": "test"}


# --- writing results directories through the store ------------------------------------------------------


def write_results(root: Path, rows: dict, *, suite: str = "t", params: dict | None = None, failed: tuple = ()) -> Path:
    """A results directory whose training cells have the given accuracies: rows maps (method, noise) to
    {seed: accuracy in %} (or {seed: (best_val %, last %)}); `failed` names (method, noise, seed) cells
    that raise instead. Cells are filed by `compute_in_store`, as an executor files them."""
    from echobench.harness.cells import compute_in_store
    from echobench.harness.store import Store, experiment_key
    from echobench.harness.suite import parse_suite

    specs, values = [], {}
    for (method, noise), per_seed in rows.items():
        parsed = parse_suite({"name": suite, "datasets": {"shapes": {"n_train": 100, "n_test": 50}}, "noise": [noise],
                              "methods": {method: (params or {}).get(method, {})}, "seeds": sorted(per_seed),
                              "protocol": "smoke"}, "tests")
        for spec in parsed.expand():
            specs.append(spec)
            values[spec.run_id] = per_seed[spec.seed]
    store = Store(root)
    store.claim(suite, [experiment_key(s.kind, s.to_dict()) for s in specs])
    store.check_layout()
    for spec in specs:
        v = values[spec.run_id]
        best, last = v if isinstance(v, tuple) else (v, v)

        def result(best=best, last=last, spec=spec):
            if (spec.method, spec.noise, spec.seed) in failed:
                raise RuntimeError("cell exploded")
            return {"metrics": {"test_acc_best_val": best / 100, "test_acc_last": last / 100,
                                "test_acc_oracle": max(best, last) / 100}}

        compute_in_store(store, suite, spec, ENV, result)
    return root


def write_runtime(root: Path, seconds: dict[str, float], *, unsupported: dict | None = None, batch: int = 4) -> Path:
    """A results directory with one runtime cell: engine → seconds per image."""
    from echobench.harness.store import Store, experiment_key

    spec = {"kind": "runtime", "device_type": "cpu", "config": "tiny", "random_init": True, "engines": ["eager"],
            "resolution": 32, "batch_size": batch, "steps": 20, "repeats": 1, "seed": 0, "device_name": "Test CPU"}
    store = Store(root)
    store.claim("rt", [experiment_key("runtime", spec)])
    store.check_layout()
    measurements = [{"engine": name, "seconds_per_image": s, "images_per_s": 1 / s, "device": "Test CPU"}
                    for name, s in seconds.items()]
    config = {"schema": 2, "run_id": "rt0001", "suite": "rt", "kind": "runtime", "spec": spec, "environment": ENV}
    store.commit_result("rt0001", config, {"kind": "runtime", "measurements": measurements,
                                           "unsupported": unsupported or {}})
    return root


BASE_ROWS = {
    ("ce", "symmetric:0.3"): {1: 70.0, 2: 71.0, 3: 72.0},
    ("ce", "pairflip:0.45"): {1: 50.0, 2: 51.0, 3: 52.0},
    ("apl", "symmetric:0.3"): {1: 60.0, 2: 61.0, 3: 62.0},
    ("ce", "instance:0.3"): {1: 40.0, 2: 41.0, 3: 42.0},  # baseline only
}
CAND_ROWS = {
    ("ce", "symmetric:0.3"): {1: 60.0, 2: 61.0, 3: 62.0},  # -10 points: a regression
    ("ce", "pairflip:0.45"): {1: 57.0, 2: 58.0, 3: 59.0},  # +7 points: an improvement
    ("apl", "symmetric:0.3"): {1: 60.5, 2: 61.0, 3: 61.5},  # same mean: within noise
    ("ce", "symmetric:0.5"): {1: 30.0, 2: 31.0, 3: 32.0},  # candidate only
}


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    return write_results(root / "base", BASE_ROWS), write_results(root / "cand", CAND_ROWS)


# --- the rules ---------------------------------------------------------------------------------------------


def test_help_states_the_rules_with_examples(capsys):
    from echobench.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["compare", "--help"])
    out = capsys.readouterr().out
    assert exited.value.code == 0 and "examples:" in out
    for part in ("Welch's t-test", "prediction test", "--min-effect", "--single-seed-effect", "--tolerance",
                 "Exit status: 1 when anything", "gh pr comment"):
        assert part in out, part


def test_welch_rule_over_seeds():
    rule = Rule()
    base = [80.0, 81.0, 82.0]
    low = accuracy_test(base, [70.0, 71.0, 72.0], rule)
    assert low["test"] == "welch" and low["verdict"] == "regression" and low["difference"] == pytest.approx(-10)
    assert low["p_value"] < 0.001
    assert accuracy_test(base, [85.0, 86.0, 87.0], rule)["verdict"] == "improvement"
    assert accuracy_test(base, [80.5, 81.5, 81.0], rule)["verdict"] == "within noise"
    # overlapping spreads: a 3-point drop that the seeds cannot tell from noise
    noisy = accuracy_test([70.0, 78.0, 86.0], [67.0, 75.0, 83.0], rule)
    assert noisy["verdict"] == "within noise" and noisy["p_value"] > 0.5
    # statistically clear (no spread at all) but below the minimum effect: within noise
    tiny = accuracy_test([80.0, 80.0, 80.0], [80.5, 80.5, 80.5], rule)
    assert tiny["p_value"] == 0.0 and tiny["verdict"] == "within noise"
    assert accuracy_test([80.0, 80.0], [79.0, 79.0], rule)["verdict"] == "regression"  # exactly min_effect
    assert accuracy_test([80.0, 80.0], [79.0, 79.0], Rule(min_effect=1.5))["verdict"] == "within noise"
    assert accuracy_test([80.0, 80.0], [80.0, 80.0], rule)["verdict"] == "within noise"


def test_prediction_rule_for_one_seed_against_several():
    """One re-run seed against a committed three-seed row (echoalign, symmetric 50% on `shapes`)."""
    rule = Rule()
    recorded = [83.1, 83.6, 82.6]  # s = 0.5: a narrow row
    drop = accuracy_test(recorded, [80.0], rule)
    assert drop["test"] == "prediction" and drop["verdict"] == "regression" and drop["p_value"] < 0.05
    assert accuracy_test(recorded, [82.0], rule)["verdict"] == "within noise"  # t ≈ -1.9, p ≈ 0.2
    assert accuracy_test([80.0], recorded, rule)["verdict"] == "improvement"  # either side may have the one seed
    # CE at 50% spreads over 17 points: one seed 18 points below the mean is not evidence of a change
    wide = accuracy_test([46.6, 36.8, 29.9], [20.0], rule)
    assert wide["verdict"] == "within noise" and wide["p_value"] > 0.1
    assert accuracy_test(recorded, [80.0], Rule(alpha=0.01))["verdict"] == "within noise"
    assert accuracy_test([83.5, 83.5], [82.5], rule)["verdict"] == "regression"  # no spread: the effect decides


def test_single_seed_rule_uses_the_minimum_effect():
    rule = Rule()
    one = accuracy_test([80.0], [78.1], rule)
    assert one["test"] == "single seed" and one["p_value"] is None and one["verdict"] == "within noise"
    assert accuracy_test([80.0], [78.0], rule)["verdict"] == "regression"  # exactly 2 points
    assert accuracy_test([80.0], [83.0], rule)["verdict"] == "improvement"
    assert accuracy_test([80.0], [78.0], Rule(single_seed_effect=5))["verdict"] == "within noise"


def test_runtime_ratio_is_direction_aware():
    assert runtime_verdict(1.0, 1.2, True, 0.10)[2] == "regression"  # time up 20%
    assert runtime_verdict(1.0, 1.05, True, 0.10)[2] == "within tolerance"
    assert runtime_verdict(1.0, 0.8, True, 0.10)[2] == "improvement"
    ratio, worse, verdict = runtime_verdict(10.0, 8.5, False, 0.10)  # images/s down 15%
    assert verdict == "regression" and ratio == pytest.approx(0.85) and worse == pytest.approx(1 / 0.85)
    assert runtime_verdict(10.0, 9.5, False, 0.10)[2] == "within tolerance"
    assert runtime_verdict(10.0, 12.0, False, 0.10)[2] == "improvement"
    assert runtime_verdict(10.0, 8.5, False, 0.25)[2] == "within tolerance"
    assert runtime_verdict(1.0, 1.1, True, 0.10)[2] == "within tolerance"  # on the edge: not beyond it


# --- results directories -------------------------------------------------------------------------------------


def test_directories_are_matched_by_experiment_with_one_sided_rows(cli, dirs):
    base, cand = dirs
    code, out, err = cli("compare", base, cand, "--json")
    assert code == 1, err
    doc = json.loads(out)
    rows = {(r["method"], r["noise"]): r for r in doc["accuracy"]}
    assert set(rows) == {("ce", "symmetric:0.3"), ("ce", "pairflip:0.45"), ("apl", "symmetric:0.3")}
    reg = rows[("ce", "symmetric:0.3")]
    assert reg["verdict"] == "regression" and reg["difference"] == pytest.approx(-10) and reg["test"] == "welch"
    assert reg["baseline"]["mean"] == pytest.approx(71) and reg["baseline"]["n"] == 3
    assert sorted(reg["baseline"]["seeds"]) == [1, 2, 3] and reg["candidate"]["mean"] == pytest.approx(61)
    assert rows[("ce", "pairflip:0.45")]["verdict"] == "improvement"
    assert rows[("apl", "symmetric:0.3")]["verdict"] == "within noise"
    assert [(r["method"], r["noise"]) for r in doc["only_baseline"]] == [("ce", "instance:0.3")]
    assert [(r["method"], r["noise"]) for r in doc["only_candidate"]] == [("ce", "symmetric:0.5")]
    assert "noise: instance:0.3 vs" in doc["only_baseline"][0]["why"]  # the nearest candidate row differs in its noise
    s = doc["summary"]
    assert s["accuracy"] == {"regression": 1, "improvement": 1, "within noise": 1}
    assert s["regressions"] == 1 and s["only_baseline"] == 1 and s["only_candidate"] == 1
    assert doc["regressed"] is True and doc["exit_code"] == 1 and doc["metric"] == "best_val"
    assert doc["baseline"]["suite"] == "t" and "Test CPU" in doc["baseline"]["environments"][0]
    assert "Welch" in doc["rule"]["accuracy"] and doc["rule"]["alpha"] == 0.05


def test_markdown_for_a_pull_request(cli, dirs):
    base, cand = dirs
    code, out, _ = cli("compare", base, cand)
    assert code == 1
    assert out.startswith("## echobench compare: ❌ 1 regression(s)")
    assert "Regressed:\n\n- shapes symmetric:0.3 ce: -10.00 points" in out
    assert "| dataset " in out and "| verdict " in out
    table = [line for line in out.splitlines() if line.startswith("| shapes")]
    assert len(table) == 3
    (ce_sym,) = [line for line in table if "symmetric:0.3" in line and "| ce " in line]
    assert "71.00 ± 1.00 (3)" in ce_sym and "61.00 ± 1.00 (3)" in ce_sym and "-10.00" in ce_sym
    assert "**regression**" in ce_sym
    assert "### Only in the baseline (1)" in out and "### Only in the candidate (1)" in out
    assert "Rule: per row, over seeds: Welch's t-test" in out


def test_no_regression_exits_0_and_only_common_hides_one_sided_rows(cli, dirs, tmp_path):
    base, _ = dirs
    same = write_results(tmp_path / "same", {k: v for k, v in BASE_ROWS.items() if k[1] != "instance:0.3"})
    code, out, err = cli("compare", base, same)
    assert code == 0, err
    assert out.startswith("## echobench compare: ✅ no regression") and "### Only in the baseline (1)" in out
    code, out, _ = cli("compare", base, same, "--only-common")
    assert code == 0 and "Only in the baseline" not in out and "(left out: --only-common)" in out
    code, out, _ = cli("compare", base, same, "--fail-on-missing")
    assert code == 1 and "rows missing from the candidate" in out
    code, _, err = cli("compare", base, same, "--fail-on-missing", "--only-common")
    assert code == 2 and "contradict" in err


def test_thresholds_are_options(cli, dirs):
    base, cand = dirs
    # a 10-point drop over three seeds each needs p < alpha: with alpha tiny nothing regresses
    code, out, _ = cli("compare", base, cand, "--alpha", "1e-9", "--json")
    assert code == 0 and json.loads(out)["summary"]["accuracy"]["regression"] == 0
    code, out, _ = cli("compare", base, cand, "--min-effect", "12", "--json")
    assert code == 0 and json.loads(out)["rule"]["min_effect"] == 12
    for bad in (["--alpha", "1.5"], ["--min-effect", "-1"], ["--tolerance", "nan"]):
        code, _, err = cli("compare", base, cand, *bad)
        assert code == 2 and bad[0] in err, bad
    with pytest.raises(SystemExit) as exited:  # argparse's own refusal: exit 2 too
        cli("compare", base, cand, "--alpha", "x")
    assert exited.value.code == 2


def test_metric_option_and_single_seed_suites(cli, tmp_path):
    base = write_results(tmp_path / "b", {("ce", "symmetric:0.3"): {1: (70.0, 60.0)}})
    cand = write_results(tmp_path / "c", {("ce", "symmetric:0.3"): {1: (70.0, 55.0)}})
    code, out, _ = cli("compare", base, cand, "--json")
    assert code == 0 and json.loads(out)["accuracy"][0]["test"] == "single seed"
    code, out, _ = cli("compare", base, cand, "--metric", "last", "--json")
    doc = json.loads(out)
    assert code == 1 and doc["metric"] == "last" and doc["accuracy"][0]["difference"] == pytest.approx(-5)
    code, out, _ = cli("compare", base, cand, "--metric", "last")
    assert "test accuracy at the last epoch" in out and "—" in out  # no p-value with one seed a side


def test_a_changed_setting_is_a_different_experiment(cli, tmp_path):
    """Identity is the whole configuration but the seed: APL with another alpha matches nothing, and
    the one-sided rows name the setting; with no row in common the comparison is bad input (exit 2)."""
    base = write_results(tmp_path / "b", {("apl", "symmetric:0.3"): {1: 60.0, 2: 61.0}})
    cand = write_results(tmp_path / "c", {("apl", "symmetric:0.3"): {1: 60.0, 2: 61.0}}, params={"apl": {"alpha": 5.0}})
    code, _, err = cli("compare", base, cand)
    assert code == 2 and "share no row" in err and "method_params.alpha: 1.0 vs 5.0" in err
    rows = {("apl", "symmetric:0.3"): {1: 60.0, 2: 61.0}, ("ce", "symmetric:0.3"): {1: 70.0, 2: 71.0}}
    base = write_results(tmp_path / "b2", rows)
    cand = write_results(tmp_path / "c2", rows, params={"apl": {"alpha": 5.0}})
    code, out, _ = cli("compare", base, cand, "--json")
    doc = json.loads(out)
    assert code == 0 and [r["method"] for r in doc["accuracy"]] == ["ce"]
    (apl,) = doc["only_baseline"]
    assert apl["method"] == "apl" and "method_params.alpha: 1.0 vs 5.0" in apl["why"]
    assert doc["only_candidate"][0]["row"] == "apl (alpha=5.0)"  # labelled by the setting that tells it apart


def test_provenance_is_not_identity(cli, tmp_path):
    """Cells that ran in another environment (git, machine, threads) match: that is what is compared."""
    base = write_results(tmp_path / "b", {("ce", "symmetric:0.3"): {1: 70.0, 2: 71.0}})
    cand = write_results(tmp_path / "c", {("ce", "symmetric:0.3"): {1: 70.0, 2: 71.0}})
    for result in (cand / "cells").glob("*/result.json"):
        doc = json.loads(result.read_text())
        doc["config"]["environment"] = {**ENV, "git": "fedcba987654", "host": "elsewhere",
                                        "device": {**ENV["device"], "name": "Other CPU", "threads": 4}}
        result.write_text(json.dumps(doc))
    code, out, _ = cli("compare", base, cand, "--json")
    doc = json.loads(out)
    assert code == 0 and len(doc["accuracy"]) == 1 and doc["accuracy"][0]["difference"] == 0
    assert "git fedcba987654, Other CPU, 4 torch thread(s)" in doc["candidate"]["environments"][0]


def test_a_failed_cell_is_one_sided_and_fails_with_fail_on_missing(cli, tmp_path):
    rows = {("ce", "symmetric:0.3"): {1: 70.0}, ("ce", "pairflip:0.45"): {1: 50.0}}
    base = write_results(tmp_path / "b", rows)
    cand = write_results(tmp_path / "c", rows, failed=(("ce", "pairflip:0.45", 1),))
    code, out, _ = cli("compare", base, cand, "--json")
    doc = json.loads(out)
    assert code == 0 and len(doc["accuracy"]) == 1
    (missing,) = doc["only_baseline"]
    assert missing["noise"] == "pairflip:0.45" and "failed in the candidate: RuntimeError: cell exploded" in missing["why"]
    code, _, _ = cli("compare", base, cand, "--fail-on-missing")
    assert code == 1


def test_runtime_cells_of_a_results_directory(cli, tmp_path):
    base = write_runtime(tmp_path / "b", {"diffusers-pipeline": 0.50, "eager": 0.40})
    ok = write_runtime(tmp_path / "ok", {"diffusers-pipeline": 0.52, "eager": 0.41})
    slow = write_runtime(tmp_path / "slow", {"diffusers-pipeline": 0.50, "eager": 0.60},
                         unsupported={"compile": "out of memory"})
    code, out, _ = cli("compare", base, ok, "--json")
    doc = json.loads(out)
    assert code == 0 and [r["verdict"] for r in doc["runtime"]] == ["within tolerance"] * 2
    assert doc["runtime"][0]["measure"] == "seconds_per_image" and doc["runtime"][0]["better"] == "lower"
    assert doc["runtime"][1]["ratio"] == pytest.approx(0.41 / 0.40, abs=1e-4)
    code, out, _ = cli("compare", base, slow)
    assert code == 1 and "- eager: tiny 32² batch 4 20 steps on cpu (seconds_per_image): 1.50× worse" in out
    assert "compile: tiny 32² batch 4 20 steps on cpu: not measured on either side (candidate: out of memory)" in out
    (line,) = [line for line in out.splitlines() if line.startswith("| eager: tiny 32² batch 4 20 steps on cpu ")]
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[1:] == ["seconds_per_image (lower is better)", "0.4", "0.6", "1.500", "**regression**"]
    code, _, _ = cli("compare", base, slow, "--tolerance", "0.6")
    assert code == 0
    other_batch = write_runtime(tmp_path / "b8", {"eager": 0.40}, batch=8)
    code, _, err = cli("compare", base, other_batch)
    assert code == 2 and "batch_size: 4 vs 8" in err


# --- benchmark documents ------------------------------------------------------------------------------------


def engines_doc() -> dict:
    return json.loads(BENCH_BASELINE.read_text())


def dump(tmp_path: Path, name: str, doc) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return path


def test_bench_engines_ratio_per_engine_and_batch(cli, tmp_path):
    base = engines_doc()
    batch = next(iter(base["rows"]["eager"]))
    slower, faster, failing, slightly = (copy.deepcopy(base) for _ in range(4))
    slower["rows"]["eager"][batch]["images_per_s"] *= 0.7
    faster["rows"]["eager"][batch]["images_per_s"] *= 1.3
    slightly["rows"]["eager"][batch]["images_per_s"] *= 0.95
    failing["rows"]["eager"][batch] = {"error": "RuntimeError: kernel exploded"}
    b = dump(tmp_path, "base.json", base)
    code, out, _ = cli("compare", b, dump(tmp_path, "slower.json", slower), "--json")
    doc = json.loads(out)
    assert code == 1 and doc["kind"] == "bench engines"
    rows = {r["row"]: r for r in doc["runtime"]}
    assert set(rows) == {f"{name} batch {bs}" for name in base["rows"] for bs in base["rows"][name]}
    r = rows[f"eager batch {batch}"]
    assert r["verdict"] == "regression" and r["ratio"] == pytest.approx(0.7, abs=1e-3) and r["better"] == "higher"
    assert rows[f"diffusers-pipeline batch {batch}"]["verdict"] == "within tolerance"
    code, out, _ = cli("compare", b, dump(tmp_path, "faster.json", faster), "--json")
    assert code == 0 and {r["row"]: r for r in json.loads(out)["runtime"]}[f"eager batch {batch}"]["verdict"] == "improvement"
    assert cli("compare", b, dump(tmp_path, "slightly.json", slightly))[0] == 0
    assert cli("compare", b, dump(tmp_path, "slower.json", slower), "--tolerance", "0.5")[0] == 0
    code, out, _ = cli("compare", b, dump(tmp_path, "failing.json", failing))
    assert code == 1 and f"eager batch {batch} (images_per_s): failed in the candidate: RuntimeError: kernel exploded" in out
    # an engine this machine does not have is not a regression
    unavailable = copy.deepcopy(base)
    unavailable["rows"]["eager"] = {"unavailable": "no such engine here"}
    code, out, _ = cli("compare", b, dump(tmp_path, "unavailable.json", unavailable), "--json")
    doc = json.loads(out)
    assert code == 0 and all("not measured in the candidate" in r["why"] for r in doc["only_baseline"])


def test_bench_engines_with_other_settings_share_no_row(cli, tmp_path):
    base = engines_doc()
    other = copy.deepcopy(base)
    other["steps"] = base["steps"] * 2
    code, _, err = cli("compare", dump(tmp_path, "a.json", base), dump(tmp_path, "b.json", other))
    assert code == 2 and f"steps: {base['steps']} vs {base['steps'] * 2}" in err


def test_bench_knn_train_and_echoselect(cli, tmp_path):
    knn = json.loads((REPO / "reports" / "bench" / "knn.json").read_text())
    slow_knn = copy.deepcopy(knn)
    slow_knn["backends"]["torch"]["seconds"] *= 1.5  # seconds: lower is better
    code, out, _ = cli("compare", dump(tmp_path, "k1.json", knn), dump(tmp_path, "k2.json", slow_knn), "--json")
    doc = json.loads(out)
    rows = {r["row"]: r for r in doc["runtime"]}
    assert code == 1 and rows["torch"]["verdict"] == "regression" and rows["torch"]["better"] == "lower"
    assert rows["torch"]["ratio"] == pytest.approx(1.5) and rows["faiss"]["verdict"] == "within tolerance"

    train = {"benchmark": "train", "protocol": "paper", "model": "resnet18", "optimizer": "sgd", "n": 512,
             "image_shape": [32, 32, 3], "num_classes": 10, "batch_size": 128, "precision": "fp32", "device": "cpu",
             "images_per_s": 100.0, "environment": ENV}
    code, out, _ = cli("compare", dump(tmp_path, "t1.json", train),
                       dump(tmp_path, "t2.json", {**train, "images_per_s": 80.0}), "--json")
    doc = json.loads(out)
    assert code == 1 and doc["kind"] == "bench train" and doc["runtime"][0]["ratio"] == pytest.approx(0.8)
    assert cli("compare", dump(tmp_path, "t1.json", train), dump(tmp_path, "t3.json", {**train, "images_per_s": 95.0}))[0] == 0
    # cuda:0 and cuda are one device type; the device's name is provenance
    assert cli("compare", dump(tmp_path, "g1.json", {**train, "device": "cuda"}),
               dump(tmp_path, "g2.json", {**train, "device": "cuda:1"}))[0] == 0

    echo = json.loads((REPO / "reports" / "bench" / "echoselect.json").read_text())
    slower = copy.deepcopy(echo)
    slower["echobench"]["pairs_per_s"] = echo["echobench"]["pairs_per_s"] / 2
    code, out, _ = cli("compare", dump(tmp_path, "e1.json", echo), dump(tmp_path, "e2.json", slower))
    assert code == 1 and "| echobench " in out and "pairs_per_s (higher is better)" in out


# --- bad input ------------------------------------------------------------------------------------------------


def test_bad_input_exits_2_with_one_line(cli, dirs, tmp_path):
    base, _ = dirs
    engines = dump(tmp_path, "engines.json", engines_doc())
    knn = dump(tmp_path, "knn.json", json.loads((REPO / "reports" / "bench" / "knn.json").read_text()))
    cases = [
        ((base, engines), "cannot compare a results directory"),
        ((engines, base), "with a results directory"),
        ((engines, knn), "`bench engines --json` document"),
        ((base, tmp_path / "nope"), "does not exist"),
        ((engines, dump(tmp_path, "garbage.json", "{not json")), "is not JSON"),
        ((engines, dump(tmp_path, "list.json", [1, 2])), "neither a results directory nor"),
        ((engines, dump(tmp_path, "report.json", {"suite": "x", "results": []})), "neither a results directory nor"),
        ((engines, dump(tmp_path, "approx.json", {"paired": {}, "samples": {}, "rows": []})), "bench approx"),
        ((base, tmp_path), "no cells/ folder"),  # an empty folder is not a results directory
    ]
    for (a, b), message in cases:
        code, out, err = cli("compare", a, b)
        assert code == 2, (a, b, out)
        assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    with pytest.raises(SystemExit) as exited:
        cli("compare", base)
    assert exited.value.code == 2


# --- a real results directory ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smoke_dir(tmp_path_factory):
    from echobench.cli import main

    out = tmp_path_factory.mktemp("smoke") / "run"
    assert main(["run", "--suite", "smoke", "--seeds", "1", "--out", str(out), "--device", "cpu", "--threads", "1",
                 "--no-progress", "--json"]) == 0
    return out


def test_a_smoke_run_against_itself_and_a_damaged_copy(cli, smoke_dir, tmp_path):
    code, out, err = cli("compare", smoke_dir, smoke_dir, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert len(doc["accuracy"]) == 2 and all(r["difference"] == 0 and r["test"] == "single seed" for r in doc["accuracy"])
    assert {r["noise"] for r in doc["accuracy"]} == {"symmetric:0.3", "instance:0.3"}
    # a candidate whose one cell lost 10 points: a single-seed regression
    worse = tmp_path / "worse"
    shutil.copytree(smoke_dir, worse)
    result = sorted((worse / "cells").glob("*/result.json"))[0]
    cell = json.loads(result.read_text())
    cell["metrics"]["test_acc_best_val"] -= 0.10
    result.write_text(json.dumps(cell))
    code, out, _ = cli("compare", smoke_dir, worse)
    assert code == 1 and "-10.00 points" in out and out.count("**regression**") == 1


# --- runtime regression check (marker `bench`) --------------------------------------------------------------------


@pytest.mark.bench
def test_engines_tiny_against_the_committed_baseline(cli, tmp_path):
    """A fresh `bench engines --config tiny` run with the baseline's own options (reports/bench/README.md)
    against reports/bench/engines-tiny-baseline.json, by ratio per engine and batch size.

    The baseline was measured on one thread of a 2-core AMD EPYC shared with other jobs, where the same
    command's throughput moved by up to ~2× between runs: the tolerance is 1.5 (a row fails when 2.5×
    slower), which still catches an engine that fell back to a slow path. On another CPU the absolute
    numbers mean nothing: the test skips unless ECHOBENCH_BENCH_BASELINE names a baseline recorded on
    this machine with the same command. ECHOBENCH_BENCH_TOLERANCE overrides the tolerance."""
    pytest.importorskip("diffusers")
    from echobench.environment import device_description

    baseline = Path(os.environ.get("ECHOBENCH_BENCH_BASELINE", BENCH_BASELINE))
    doc = json.loads(baseline.read_text())
    here = device_description("cpu")["name"]
    recorded = doc["environment"]["device"]["name"]
    if baseline == BENCH_BASELINE and here != recorded:
        pytest.skip(f"the committed baseline was measured on {recorded}, this is {here}: record one here with the "
                    f"command in reports/bench/README.md and point ECHOBENCH_BENCH_BASELINE at it")
    batches = sorted({int(b) for per_batch in doc["rows"].values() for b in per_batch if str(b).isdigit()})
    engines = [name for name in doc["rows"] if name != "diffusers-pipeline"]
    fresh = tmp_path / "engines.json"
    code, out, err = cli("bench", "engines", "--config", "tiny", "--engines", *engines,
                         "--batch-sizes", *batches, "--steps", doc["steps"], "--repeats", doc["repeats"],
                         "--threads", doc["environment"]["device"]["threads"], "--json")
    assert code == 0, err
    fresh.write_text(out)
    tolerance = os.environ.get("ECHOBENCH_BENCH_TOLERANCE", "1.5")
    code, out, err = cli("compare", baseline, fresh, "--tolerance", tolerance)
    print(out)
    assert code == 0, f"EchoMod's tiny engines slowed down beyond {tolerance} against {baseline}:\n{out}{err}"
