import json
import math

import pytest

from echobench.errors import EchobenchError
from echobench.reporting.tables import collect, to_csv, to_latex, to_markdown, write_reports
from echobench.harness.store import Store


def fake_results(root, values, dataset="shapes"):
    """values: {(method, noise): [acc per seed]} → a results directory with those test accuracies."""
    store = Store(root)
    store.claim("fake")
    n = 0
    for (method, noise), accs in values.items():
        for seed, acc in enumerate(accs, start=1):
            rid = f"cell{n:04d}"
            n += 1
            spec = {"dataset": dataset, "noise": noise, "method": method, "seed": seed}
            store.write(rid, "config.json", {"spec": spec, "environment": {"git": "abc", "device": {"name": "cpu"}}})
            metrics = {"test_acc_best_val": acc, "test_acc_last": acc - 0.01, "test_acc_oracle": acc + 0.01}
            store.write(rid, "result.json", {"metrics": metrics})
    return root


VALUES = {
    ("ce", "symmetric:0.5"): [0.50, 0.52],
    ("apl", "symmetric:0.5"): [0.60, 0.64],
    ("pce", "symmetric:0.5"): [0.55, 0.55],
    ("joint", "symmetric:0.5"): [0.40, 0.40],
    ("ce", "pairflip:0.45"): [0.70, 0.70],
    ("apl", "pairflip:0.45"): [0.65, 0.65],
    ("pce", "pairflip:0.45"): [0.30, 0.30],
    ("joint", "pairflip:0.45"): [0.66, 0.66],
}


def test_mean_std_and_ranks(tmp_path):
    tables, info = collect(fake_results(tmp_path, VALUES))
    (t,) = tables
    assert info["finished"] == 16
    assert t.noises == ["symmetric:0.5", "pairflip:0.45"]  # the paper's column order
    e = t.entries[("apl", "symmetric:0.5")]
    assert e.mean == pytest.approx(62.0) and e.std == pytest.approx(2.8284271, rel=1e-6)  # sample std, ddof=1
    ranks = t.ranks()
    assert ranks[("apl", "symmetric:0.5")] == 1 and ranks[("joint", "symmetric:0.5")] == 4
    assert ranks[("ce", "pairflip:0.45")] == 1 and ranks[("pce", "pairflip:0.45")] == 4


def test_markdown_underlines_best_and_bolds_top_three(tmp_path):
    tables, _ = collect(fake_results(tmp_path, VALUES))
    md = to_markdown(tables, "best_val")
    row = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("|")}
    assert "<u>**62.00 ± 2.83**</u>" in row["apl"]
    assert "**55.00 ± 0.00**" in row["pce"] and "<u>" not in row["pce"].split("|")[2]
    assert "**" not in row["joint"].split("|")[2]  # fourth in its column: plain
    latex = to_latex(tables, "best_val")
    assert "\\underline{\\textbf{62.00 $\\pm$ 2.83}}" in latex
    assert to_csv(tables, "best_val").splitlines()[0] == "dataset,method,noise,metric,mean,std,n_seeds,rank"


def test_metric_choice_and_written_files(tmp_path):
    fake_results(tmp_path, VALUES)
    doc = write_reports(tmp_path, "oracle")
    apl = next(r for r in doc["results"] if r["method"] == "apl" and r["noise"] == "symmetric:0.5")
    assert apl["mean"] == pytest.approx(63.0)
    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert on_disk["metric"] == "oracle" and len(on_disk["results"]) == 8
    assert (tmp_path / "report.tex").read_text().count("\\begin{tabular}") == 1


def test_report_cli(cli, tmp_path):
    fake_results(tmp_path, VALUES)
    code, out, _ = cli("report", tmp_path, "--json")
    assert code == 0 and json.loads(out)["cells"]["finished"] == 16
    code, _, err = cli("report", tmp_path / "nothing")
    assert code == 2 and "no results" in err


def test_unknown_metric_is_refused(tmp_path):
    with pytest.raises(EchobenchError, match="unknown metric"):
        collect(fake_results(tmp_path, VALUES), "median")


def test_cifar_results_are_reported_beside_the_paper(tmp_path):
    from echobench.reporting.paper_reference import paper_value

    values = {("ce", "symmetric:0.5"): [0.70, 0.72], ("im-only", "instance:0.5"): [0.60, 0.62],
              ("echoalign-released", "symmetric:0.5"): [0.80, 0.80]}
    doc = write_reports(fake_results(tmp_path, values, dataset="cifar10"))
    by_method = {c["method"]: c for c in doc["paper"]}
    assert set(by_method) == {"ce", "im-only"}  # the released recipe is not a row of the paper
    ce_paper = paper_value(1, "cifar10", "symmetric:0.5", "ce")
    assert by_method["ce"]["paper_table"] == "table1" and by_method["ce"]["paper_mean"] == ce_paper[0]
    assert by_method["ce"]["difference"] == pytest.approx(71.0 - ce_paper[0], abs=0.01)
    assert by_method["im-only"]["paper_table"] == "table3" and by_method["im-only"]["paper_std"] is None
    md = (tmp_path / "report.md").read_text()
    assert "## Beside the paper" in md and f"/ {ce_paper[0]:.2f}" in md
    # shapes results have no paper counterpart: no such section
    doc = write_reports(fake_results(tmp_path / "s", VALUES))
    assert "paper" not in doc and "Beside the paper" not in (tmp_path / "s" / "report.md").read_text()


# --- agreement with the paper (Spearman, baselines beating CE, one figure per column) ----------------


def test_spearman_matches_scipy_with_ties():
    from scipy.stats import spearmanr

    from echobench.reporting.paper_agreement import spearman

    x, y = [1.0, 2.0, 2.0, 5.0, 3.0], [10.0, 30.0, 20.0, 40.0, 40.0]
    assert spearman(x, y) == pytest.approx(spearmanr(x, y).statistic)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(spearman([1, 2], [1, 2])) and math.isnan(spearman([1, 1, 1], [1, 2, 3]))


def test_agreement_ranks_against_the_cifar10_analog_and_counts_baselines_beating_ce(tmp_path):
    """shapes is compared with the paper's CIFAR-10 Table 1: at symmetric 50% the paper has CE 52.59 <
    PCE 74.03 < APL 78.36 < Joint 83.77; a table ordered the same way has ρ = 1 and two of the three
    baselines above CE. The report shows it for all three metrics and draws one figure per column."""
    from echobench.reporting.paper_reference import paper_value

    order = sorted(["ce", "pce", "apl", "joint"], key=lambda m: paper_value(1, "cifar10", "symmetric:0.5", m)[0])
    values = {("ce", "symmetric:0.5"): [0.60, 0.60], ("pce", "symmetric:0.5"): [0.50, 0.52],
              ("apl", "symmetric:0.5"): [0.70, 0.70], ("joint", "symmetric:0.5"): [0.80, 0.80]}
    assert order == ["ce", "pce", "apl", "joint"]
    root = fake_results(tmp_path, values)
    doc = write_reports(root)
    columns = doc["agreement"]["columns"]
    assert {c["metric"] for c in columns} == {"best_val", "last", "oracle"}
    best = next(c for c in columns if c["metric"] == "best_val")
    assert (best["paper_dataset"], best["paper_table"]) == ("cifar10", "table1")
    assert best["spearman"] == pytest.approx(0.8)  # pce and ce swap places: ranks (2,1,3,4) vs (1,2,3,4)
    assert (best["beat_ce"], best["beat_ce_of"], best["paper_beat_ce"]) == (2, 3, 3)
    figure = "agreement/shapes-symmetric-0.5.png"
    assert figure in doc["written"] and (root / figure).read_bytes().startswith(b"\x89PNG")
    md = (root / "report.md").read_text()
    assert "## Agreement with the paper" in md and f"]({figure})" in md
    assert figure in (root / "index.md").read_text()


def test_agreement_leaves_out_a_method_with_several_rows(tmp_path):
    store_root = fake_results(tmp_path, {("ce", "symmetric:0.5"): [0.6], ("pce", "symmetric:0.5"): [0.5],
                                         ("apl", "symmetric:0.5"): [0.7], ("joint", "symmetric:0.5"): [0.8]})
    # a second echoalign and a second apl row (other settings) next to the first
    store = Store(store_root)
    for rid, method, params, acc in (("x1", "apl", {"beta": 0.0}, 0.2), ("x2", "apl", {"beta": 1.0}, 0.7)):
        store.write(rid, "config.json", {"spec": {"dataset": "shapes", "noise": "symmetric:0.5", "method": method,
                                                  "method_params": params, "seed": 1},
                                         "environment": {"git": "abc", "device": {"name": "cpu"}}})
        store.write(rid, "result.json", {"metrics": {"test_acc_best_val": acc, "test_acc_last": acc,
                                                     "test_acc_oracle": acc}})
    doc = write_reports(store_root)
    best = next(c for c in doc["agreement"]["columns"] if c["metric"] == "best_val")
    assert "apl" not in best["methods"] and len(best["left_out"]) == 3 and best["beat_ce_of"] == 2
    # each apl row in turn stands for apl, ρ over ce, pce, joint and that row; the paper's order is
    # ce < pce < apl < joint. apl at 0.7: pce < ce < apl < joint, ρ = 0.8; at 0.2: apl < pce < ce < joint, ρ = 0.2
    assert set(best["spearman_with"]) == set(best["left_out"])
    assert sorted(best["spearman_with"].values()) == [pytest.approx(0.2), pytest.approx(0.8), pytest.approx(0.8)]
    assert "Spearman with each" in (store_root / "report.md").read_text()


def test_row_labels_name_only_the_settings_a_row_sets():
    from echobench.reporting.tables import row_labels

    def row(params, method="echoalign"):
        return {"method": method, "stale": False,
                "experiment": {"method": method, "method_params": params, "protocol": {"epochs": 30}}}

    procedural = row({"engine": "", "engine_options": {}, "tau": None})
    learned = row({"engine": "eager", "engine_options": {"model": "shapes", "steps": 10}, "tau": None})
    assert row_labels({"p": procedural, "l": learned}) == {
        "p": "echoalign (engine=default)", "l": "echoalign (engine=eager, model=shapes, steps=10)"}
    # rows told apart only by an unset setting keep every differing setting, so their labels differ
    labels = row_labels({"a": row({"x": {}, "y": 1}, "m"), "b": row({"y": 1}, "m")})
    assert labels == {"a": "m (x={})", "b": "m (x=—)"}


def test_paper_column_of_each_reported_dataset_and_none_elsewhere():
    from echobench.reporting.paper_agreement import paper_column

    table, dataset, values = paper_column("cifar10n", "human:worst")
    assert (table, dataset, len(values)) == ("table2", "cifar10n", 12)
    assert paper_column("cifar100", "instance:0.5")[:2] == ("table1", "cifar100")
    assert paper_column("shapes", "pairflip:0.45")[:2] == ("table1", "cifar10")  # the stated analog
    assert paper_column("cifar10", "symmetric:0.2") is None  # a column the paper does not have


def test_diagnostics_explain_near_chance_cells_and_skipped_stages(tmp_path):
    """A cell below 25% is called stuck when it never fitted its training labels and 'learnt the noise'
    when it did; a skipped stage is listed with its reason."""
    store = Store(tmp_path)
    store.claim("fake")
    cells = {"stuck": ("apl", 0.12, [0.10, 0.13], {}),
             "noise": ("ce", 0.15, [0.30, 0.90], {}),
             "slow": ("pce", 0.18, [0.15, 0.30], {}),
             "fine": ("t-revision", 0.70, [0.5, 0.6], {"skipped_stages": {"revision": "it cannot revise T"}})}
    for rid, (method, acc, train, diagnostics) in cells.items():
        store.write(rid, "config.json", {"spec": {"dataset": "shapes", "noise": "symmetric:0.5", "method": method,
                                                  "seed": 1}, "environment": {"git": "abc", "device": {"name": "cpu"}}})
        store.write(rid, "result.json", {"metrics": {"test_acc_best_val": acc, "test_acc_last": acc, "test_acc_oracle": acc},
                                         "curves": [{"train_acc": a} for a in train], "diagnostics": diagnostics,
                                         "noise": {"realized_rate_train": 0.5}})
    doc = write_reports(tmp_path)
    found = {(d["method"], d["kind"]): d["text"] for d in doc["diagnostics"]}
    assert set(found) == {("apl", "near chance"), ("ce", "near chance"), ("pce", "near chance"),
                          ("t-revision", "skipped stage")}
    assert "still learning" in found[("pce", "near chance")] and "(50.0%)" in found[("pce", "near chance")]
    assert "stuck" in found[("apl", "near chance")] and "13.0%" in found[("apl", "near chance")]
    assert "learnt the noise" in found[("ce", "near chance")] and "90.0%" in found[("ce", "near chance")]
    assert found[("t-revision", "skipped stage")] == "revision skipped: it cannot revise T"
    assert "## Diagnostics" in (tmp_path / "report.md").read_text()


def test_agreement_figure_labels_of_close_points_do_not_overlap():
    from echobench.reporting.paper_agreement import label_heights

    x = [88.0, 88.5, 89.0, 60.0, 88.2]
    y = [80.0, 80.2, 80.1, 80.0, 50.0]
    heights = label_heights(x, y, gap=2.0, near=5.0)
    close = sorted(heights[i] for i in (0, 1, 2))
    assert all(b - a >= 2.0 - 1e-9 for a, b in zip(close, close[1:]))  # the cluster's labels stack
    assert heights[3] == 80.0 and heights[4] == 50.0  # a point far along x, or far below, keeps its own height
    assert min(close) == 80.0  # the lowest of the cluster keeps its own height
