"""The paper's suites: cell counts, and cells shared between tables computed once."""

from echobench.suite import load_suite


def ids(name):
    return {c.run_id: c for c in load_suite(name).expand()}


def test_paper_suite_cell_counts_and_sharing():
    t1, t2, t3, paper = ids("table1"), ids("table2"), ids("table3"), ids("paper")
    assert len(t1) == 2 * 5 * 12 * 3 == 360  # datasets × noise settings × methods × seeds
    assert len(t2) == 4 * 12 * 3 == 144
    assert len(t3) == 2 * 2 * 4 * 3 == 48
    shared = set(t3) & set(t1)  # CE and EchoAlign at pairflip 45% / IDN 50% are Table 1's cells
    assert len(shared) == 2 * 2 * 2 * 3 and {t1[i].method for i in shared} == {"ce", "echoalign"}
    assert set(paper) == set(t1) | set(t2) | set(t3) and len(paper) == 528
    assert {c.protocol["name"] for c in paper.values()} == {"paper"}
    assert {c.protocol["model"] for c in paper.values()} == {"auto"}  # ResNet-18 / ResNet-34 by class count


def test_dry_run_counts_distinct_echomod_pairs(cli):
    import json

    import numpy as np

    from echobench.noise import split_train_val
    from echobench.runner import get_dataset, make_noisy_labels
    from echobench.seeding import numpy_rng
    from echobench.suite import parse_suite

    raw = {"name": "pairs", "datasets": {"shapes": {"n_train": 500, "n_test": 50}},
           "noise": ["symmetric:0.3", "symmetric:0.5"], "methods": ["ce", "echoalign", "im-only"], "seeds": [1],
           "protocol": "smoke"}
    cells = parse_suite(raw, "test").expand()
    from echobench.dry_run import dry_run_summary

    summary = dry_run_summary(cells)
    (key, pairs), = summary["echomod"]["pairs"].items()
    # independent count: the training split is the same for both settings (same seed), so the union
    # is every training index once plus the indices whose two noisy labels differ
    a, b = (c for c in cells if c.method == "echoalign")
    data = get_dataset("shapes", a.dataset_options, None)
    train, _ = split_train_val(500, numpy_rng(1, "split"), 0.1)
    la, lb = (make_noisy_labels(c, data).labels[train] for c in (a, b))
    assert pairs == len(train) + int(np.sum(la != lb))
    assert summary["echomod"]["requested"][key] == 4 * len(train)  # 2 aligning methods × 2 settings
    assert summary["cells_per_method"] == {"ce": 2, "echoalign": 2, "im-only": 2}
    # the CLI prints the same in JSON; a dataset that is not on disk is reported, never downloaded
    code, out, _ = cli("run", "--suite", "table3", "--dry-run", "--json", "--data-root", "/nonexistent-data-root")
    doc = json.loads(out)
    assert code == 0 and doc["cells_per_method"]["im-only"] == 12 and set(doc["echomod"]["unavailable"]) == {"cifar10", "cifar100"}


def test_paper_dry_run_lists_the_selection_and_runtime_cells(cli):
    """`paper` is Tables 1-3's 528 training cells plus Table 4's selection cells (CIFAR-10 × IDN 30/50% ×
    three seeds: 6) and the runtime suite's cells (Tables 6/7: the device's variant; on CPU `tiny` at batch
    1 and 4, on a GPU SD 1.5 at 256/512/768 px × batch 1/8/16). The training part is unchanged."""
    import json

    code, out, _ = cli("run", "--suite", "paper", "--dry-run", "--json", "--device", "cpu",
                       "--data-root", "/nonexistent-data-root")
    doc = json.loads(out)
    assert code == 0 and doc["cells_per_kind"] == {"train": 528, "selection": 6, "runtime": 2} and doc["cells"] and len(doc["cells"]) == 536
    assert sum(doc["cells_per_method"].values()) == 528
    assert {r["run_id"] for r in doc["cells"] if r["kind"] == "train"} == set(ids("paper"))
    selection = [r for r in doc["cells"] if r["kind"] == "selection"]
    assert {(r["dataset"], r["noise"]) for r in selection} == {("cifar10", "instance:0.3"), ("cifar10", "instance:0.5")}
    # the selection cells' pairs are counted with the training cells' (reported unavailable here, never downloaded)
    assert set(doc["echomod"]["unavailable"]) == {"cifar10", "cifar100", "cifar10n"}
    code, out, _ = cli("run", "--suite", "paper", "--dry-run", "--json", "--device", "cuda",
                       "--data-root", "/nonexistent-data-root")
    doc = json.loads(out)
    assert doc["cells_per_kind"] == {"train": 528, "selection": 6, "runtime": 9}
    assert {(r["config"], r["resolution"], r["batch_size"]) for r in doc["cells"] if r["kind"] == "runtime"} == {
        ("sd15", r, b) for r in (256, 512, 768) for b in (1, 8, 16)}
