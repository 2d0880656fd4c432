"""EchoAlign's methods end to end on the tiny shapes setting, and the modify/select commands."""

import json

import pytest

ALIGNING = ("echoalign", "im-only", "echoselect-only", "echoalign-released")


@pytest.mark.parametrize("method", ALIGNING)
def test_aligning_methods_learn_above_chance(tiny_run, method):
    result = tiny_run(method, "symmetric:0.3")
    facts = result["diagnostics"]
    assert result["metrics"]["test_acc_last"] > 0.2, result["metrics"]  # chance: 0.1
    assert 0 < facts["n_kept_original"] < facts["n_train"] == result["sizes"]["train"]
    assert facts["tau"] == pytest.approx(0.86)  # shapes-hog's default below 37.5% noise
    if method == "echoalign-released":
        n, n_sel = facts["n_train"], facts["n_kept_original"]
        assert facts["weight_original"] == pytest.approx(n / (n + n_sel))
        stages = [c["extra"].get("stage") for c in result["curves"]]
        assert stages.count(1.0) == 2 and stages[0] == 0.0  # 40 of 200 epochs scaled to a 10-epoch protocol


def test_echoalign_is_deterministic_and_reuses_the_cache(tiny_run):
    short = {"epochs": 3, "milestones": [2]}  # determinism and the cache need no more (the test's time)
    first = tiny_run("echoalign", "instance:0.3", protocol=short)
    again = tiny_run("echoalign", "instance:0.3", protocol=short)
    untimed = [[{k: v for k, v in c.items() if k != "seconds"} for c in r["curves"]] for r in (first, again)]
    assert first["metrics"] == again["metrics"] and untimed[0] == untimed[1]
    assert again["diagnostics"]["cache"]["generated"] == 0
    assert again["diagnostics"]["cache"]["cached"] == again["sizes"]["train"]
    # another seed finds in the cache every pair (training image, noisy label) it shares with seed 1
    other = tiny_run("echoalign", "instance:0.3", seed=2, protocol={"epochs": 1, "milestones": []})
    shared = len(set.intersection(*(training_pairs(seed) for seed in (1, 2))))
    assert shared > 0.3 * other["sizes"]["train"]
    assert other["diagnostics"]["cache"]["cached"] >= shared  # more where other tests cached pairs before


def training_pairs(seed: int) -> set[tuple[int, int]]:
    """(dataset index, noisy label) of each training image of the tiny instance-30% setting."""
    from conftest import TINY_DATASET, TINY_PROTOCOL
    from echobench.harness.setting import setting_task

    task, _ = setting_task("shapes", TINY_DATASET, "instance:0.3", seed, protocol=TINY_PROTOCOL["name"])  # same split
    return set(zip(task.train.indices.tolist(), task.train.labels.tolist()))


def test_which_methods_use_echomod_is_declared_once():
    """`uses_echomod` (the dry run, the EchoSelect projection, the executors' generation) is the method
    class's flag: exactly the methods whose hyperparameters are EchoAlign's."""
    from echobench.echoalign.methods import EchoAlignParams
    from echobench.training.method import METHODS, uses_echomod

    assert {m for m in METHODS if uses_echomod(m)} == set(ALIGNING)
    assert all(uses_echomod(m) == issubclass(METHODS.get(m).Params, EchoAlignParams) for m in METHODS)


def test_a_shard_of_the_pairs_is_the_pairs_of_its_cache_shards():
    from echobench.echoalign.cache import SHARD_SIZE
    from echobench.echoalign.methods import EchoAlignParams, modify_task_pairs
    from echobench.harness.setting import setting_task

    task, _ = setting_task("shapes", {"n_train": 2200, "n_test": 20, "image_size": 16}, "symmetric:0.5", 3)
    whole = modify_task_pairs(task, EchoAlignParams())
    assert len(whole.indices) == len(task.train) == whole.stats.requested and whole.modified.shape == whole.originals.shape
    parts = [modify_task_pairs(task, EchoAlignParams(), shard=(i, 2)) for i in range(2)]
    for i, part in enumerate(parts):
        assert len(part.indices) and ((part.indices // SHARD_SIZE) % 2 == i).all()
        assert part.stats.generated == 0  # all cached above
    mine = (whole.indices // SHARD_SIZE) % 2 == 0
    assert (parts[0].modified == whole.modified[mine]).all() and (parts[0].labels == whole.labels[mine]).all()
    assert sum(len(p.indices) for p in parts) == len(whole.indices)


def test_selection_separates_clean_from_noisy_on_shapes():
    from echobench.echoalign.methods import EchoAlignParams
    from echobench.harness.setting import select_report, setting_task

    task, clean = setting_task("shapes", {"n_train": 1500, "n_test": 100}, "instance:0.5", 1)
    doc = select_report(task, clean, EchoAlignParams(), progress=False)
    e = doc["echoselect"]
    assert e["auroc"] > 0.85 and e["ks_pvalue"] < 1e-20
    assert e["precision"] > 0.8 > (e["n_clean"] / e["n"])  # far above the base rate of clean labels
    view = doc["table4"]["echoselect"]
    assert view["94%"] >= view["96%"] >= view["98%"] >= view["99%"]


def test_modify_command_reports_new_and_cached_pairs(cli, tmp_path):
    args = ["modify", "shapes", "--noise", "symmetric:0.5", "--seed", "3", "--dataset-option", "n_train=600",
            "--dataset-option", "n_test=50", "--cache-dir", tmp_path, "--json", "--no-progress"]
    code, out, _ = cli(*args)
    assert code == 0
    first = json.loads(out)
    assert first["pairs"] == 540 and first["new"] == 540 and first["from_cache"] == 0
    code, out, _ = cli(*args)
    assert json.loads(out)["new"] == 0 and json.loads(out)["from_cache"] == 540
    # shards split the work: 0/2 and 1/2 together cover the pairs of another noise setting
    other = [a if a != "symmetric:0.5" else "pairflip:0.45" for a in args]
    done = [json.loads(cli(*other, "--shard", s)[1])["pairs"] for s in ("0/2", "1/2")]
    assert sum(done) == 540


def test_select_command_writes_report_and_figures(cli, tmp_path):
    code, out, err = cli("select", "shapes", "--noise", "instance:0.5", "--dataset-option", "n_train=600",
                         "--dataset-option", "n_test=50", "--out", tmp_path / "sel", "--json", "--no-progress")
    assert code == 0, err
    doc = json.loads(out)
    assert set(doc["echoselect"]) >= {"n_selected", "precision", "recall", "auroc", "ks_statistic", "ks_pvalue"}
    assert (tmp_path / "sel" / "similarity_hist.png").stat().st_size > 1000
    assert (tmp_path / "sel" / "tau_sweep.png").exists() and (tmp_path / "sel" / "select.json").exists()


@pytest.mark.parametrize("args, message", [
    (["--tau", "1.5"], "outside [-1, 1]"),
    (["--engine", "procedual"], "did you mean 'procedural'"),
    (["--extractor", "clip"], "unknown extractor"),
    (["--peers", "small_loss"], "small-loss"),
    (["--shard", "3/2"], "0 ≤ i < n"),
])
def test_select_and_modify_bad_input(cli, tmp_path, args, message):
    cmd = "modify" if args[0] == "--shard" else "select"
    code, out, err = cli(cmd, "shapes", "--noise", "instance:0.5", "--dataset-option", "n_train=200",
                         "--out" if cmd == "select" else "--json", *([tmp_path] if cmd == "select" else []),
                         "--no-progress", *args)
    assert code == 2 and message.lower() in err.lower() and "Traceback" not in err
    assert not (tmp_path / "select.json").exists()


def test_dataset_without_class_names_is_refused():
    from echobench.echoalign.echomod import make_modifier
    from echobench.errors import EchobenchError

    with pytest.raises(EchobenchError, match="no class names"):
        make_modifier("procedural", "shapes", [], 32)
