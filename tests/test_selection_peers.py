"""Sample-selection peers (baselines/selection.py) and the kNN benchmark (echobench/bench/knn.py)."""

import builtins

import numpy as np
import pytest

from echobench.baselines import selection as sel
from echobench.baselines.selection import (
    SELECTORS,
    Selection,
    bltm_distill,
    knn_vote,
    make_selection,
    selection_quality,
    simifeat_clean_rounds,
    small_loss_per_class,
    stratified_folds,
)
from echobench.errors import EchobenchError

# --- pure cores ------------------------------------------------------------------------------------


def test_small_loss_keeps_the_smallest_of_each_class_not_overall():
    losses = [0.1, 0.9, 0.5, 0.2, 1.8, 1.3, 1.7, 1.4]
    labels = [0, 0, 0, 0, 1, 1, 1, 1]
    assert small_loss_per_class(losses, labels, 0.5).tolist() == [0, 3, 5, 7]
    # a global small-loss rule would have kept [0, 1, 2, 3]: class 1 is learnt later, not noisier


def test_small_loss_counts_ties_and_edges():
    labels = np.zeros(10, dtype=int)
    assert len(small_loss_per_class(np.arange(10.0), labels, 1 - 0.3)) == 7  # (1 - 0.3)·10 = 6.99…
    ties = small_loss_per_class([1.0, 1.0, 1.0, 0.0], [0, 0, 0, 0], 0.5)
    assert ties.tolist() == [0, 3]  # the 0.0 and the first of the tied 1.0s
    assert small_loss_per_class([3.0, 1.0, 2.0], [0, 1, 1], 0.3).tolist() == [0, 1]  # at least one per class
    assert small_loss_per_class([1.0, 2.0], [0, 0], 0.0).tolist() == []
    assert small_loss_per_class([1.0, 2.0], [0, 0], 1.0).tolist() == [0, 1]
    with pytest.raises(ValueError):
        small_loss_per_class([1.0], [0], 1.5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bltm_threshold_edge(dtype):
    at = dtype(0.55)
    above = np.nextafter(at, dtype(1.0))
    probs = np.array([[at, 1 - at], [above, 1 - above], [0.1, 0.9], [0.2, 0.8], [0.5, 0.5]], dtype=dtype)
    labels = np.array([0, 0, 0, 1, 0])
    out = bltm_distill(probs, labels)
    assert out["distilled"].tolist() == [False, True, True, True, False]  # strictly above (1 + 0.1) / 2
    assert out["bayes_labels"].tolist() == [0, 0, 1, 1, 0]
    assert out["clean"].tolist() == [False, True, False, True, False]  # Bayes label = noisy label
    assert bltm_distill(probs, labels, rho=0.7)["distilled"].tolist() == [False, False, True, False, False]


def test_knn_vote_weights_by_similarity():
    labels = np.array([0, 1, 1, 0, 2])
    nbr = np.array([[3, 1, 2], [2, 4, 0], [1, 0, 3], [0, 1, 2], [2, 1, 0]])
    sims = np.array([[0.9, 0.3, 0.3], [0.8, 0.5, 0.1], [0.6, 0.2, 0.2], [0.4, 0.4, 0.35], [0.5, 0.4, -0.2]])
    top, votes = knn_vote(nbr, sims, labels, 3)
    expected = np.array([
        [0.9, 0.6, 0.0],   # one vote for 0 outweighs two for 1: weights, not counts
        [0.1, 0.8, 0.5],
        [0.2 + 0.2, 0.6, 0.0],
        [0.4, 0.75, 0.0],
        [-0.2, 0.9, 0.0],
    ])
    np.testing.assert_allclose(votes, expected)
    assert top.tolist() == [0, 1, 1, 1, 1]
    top_self, votes_self = knn_vote(nbr, sims, labels, 3, include_self=True)
    self_weight = 2 * sims[:, 0] - sims[:, 1]  # official: d_self := 2·d1 − d2
    np.testing.assert_allclose(votes_self - votes, np.eye(3)[labels] * self_weight[:, None])
    assert top_self.tolist() == [0, 1, 1, 0, 1]  # row 3: its own label (weight 0.4) wins
    assert knn_vote([[1], [0]], [[1.0], [1.0]], [0, 1], 2)[0].tolist() == [1, 0]
    with pytest.raises(ValueError):
        knn_vote([[1], [0]], [[1.0], [1.0]], [0, 1], 2, include_self=True)


def test_knn_vote_ties_go_to_the_lowest_class():
    top, _ = knn_vote([[1, 2], [0, 2], [0, 1]], [[0.5, 0.5]] * 3, [0, 1, 2], 3)
    assert top.tolist() == [1, 0, 0]


def test_simifeat_majority_over_rounds():
    keep, share = simifeat_clean_rounds([[1, 0, 1], [1, 1, 0]])
    assert keep.tolist() == [True, False, False]  # half of the rounds is not a majority
    np.testing.assert_allclose(share, [1.0, 0.5, 0.5])
    keep, _ = simifeat_clean_rounds([[1, 0, 0], [1, 1, 0], [0, 1, 1]])
    assert keep.tolist() == [True, True, False]


def test_stratified_folds_balance_classes():
    labels = np.repeat(np.arange(3), [10, 7, 5])
    folds = stratified_folds(labels, 5, np.random.default_rng(0))
    sizes = np.bincount(folds, minlength=5)
    assert sizes.max() - sizes.min() <= 1 and sizes.sum() == 22
    for c in range(3):
        per_fold = np.bincount(folds[labels == c], minlength=5)
        assert per_fold.max() - per_fold.min() <= 1


def test_confident_learning_core_flags_confident_disagreement():
    pytest.importorskip("cleanlab")
    labels = np.repeat(np.arange(3), 10)
    probs = np.full((30, 3), 0.05)
    probs[np.arange(30), labels] = 0.9
    probs[0] = [0.03, 0.95, 0.02]
    probs[15] = [0.9, 0.05, 0.05]
    keep = sel.confident_learning_keep(labels, probs)
    assert np.flatnonzero(~keep).tolist() == [0, 15]


def test_selection_quality_by_hand():
    noisy = np.array([0, 1, 2, 3, 4])
    clean = np.array([0, 1, 0, 0, 4])  # samples 0, 1, 4 are correctly labelled
    q = selection_quality([2, 0, 0], noisy, clean, candidates=[0, 1, 2, 3])
    assert q["n_selected"] == 2 and q["precision"] == 0.5 and q["recall"] == 0.5
    assert q["base_rate"] == 0.5 and q["n_candidates"] == 4
    assert selection_quality([0, 1, 4], noisy, clean)["recall"] == 1.0
    assert np.isnan(selection_quality([], noisy, clean)["precision"])
    with pytest.raises(ValueError):
        selection_quality([4], noisy, clean, candidates=[0, 1])


def test_selection_is_sorted_unique_int64():
    s = make_selection("x", np.array([7, 3, 5, 9]), np.array([True, True, False, True]), np.zeros(4))
    assert s.indices.tolist() == [3, 7, 9] and s.indices.dtype == np.int64 and len(s) == 3
    assert s.kept_mask.tolist() == [True, True, False, True]
    with pytest.raises(ValueError):
        Selection("x", np.array([3, 3]), np.array([3]), np.zeros(1))
    with pytest.raises(ValueError):
        Selection("x", np.array([4]), np.array([3]), np.zeros(1))


def test_registry_names():
    assert SELECTORS.names() == ["bltm", "confident-learning", "simifeat", "small-loss"]
    with pytest.raises(EchobenchError, match="did you mean|Did you mean"):
        SELECTORS.get("small_loss")


def test_missing_cleanlab_is_a_clear_error(monkeypatch, tiny_selection_task):
    real_import = builtins.__import__

    def no_cleanlab(name, *args, **kwargs):
        if name == "cleanlab" or name.startswith("cleanlab."):
            raise ImportError("No module named 'cleanlab'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_cleanlab)
    with pytest.raises(EchobenchError, match="pip install cleanlab"):
        sel.confident_learning(tiny_selection_task["task"])  # before any training


# --- selectors on the tiny shapes setting --------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_selection_task():
    """The tiny shapes setting (conftest) at 30% symmetric noise, built as the runner builds a cell."""
    from conftest import TINY_DATASET, TINY_PROTOCOL

    from echobench.harness.context import default_context
    from echobench.harness.suite import parse_suite
    from echobench.harness.train_cell import build_task, get_dataset, make_noisy_labels

    suite = parse_suite({"name": "tiny-selection", "datasets": {"shapes": TINY_DATASET}, "noise": ["symmetric:0.3"],
                         "methods": ["ce"], "seeds": [1], "protocol": TINY_PROTOCOL}, "tests")
    (spec,) = suite.expand()
    dataset = get_dataset(spec.dataset, spec.dataset_options, None)
    noisy = make_noisy_labels(spec, dataset)
    task, (train_idx, val_idx) = build_task(spec, dataset, noisy, default_context(device="cpu"))
    return {"task": task, "noisy": noisy.labels, "clean": dataset.train_labels, "train_idx": train_idx, "val_idx": val_idx}


SELECTOR_PARAMS = {
    "small-loss": {},
    "bltm": {},
    "simifeat": {},
    "confident-learning": {"folds": 3},  # 3 networks instead of 5 keeps the test short
}


def check_valid(s: Selection, setting) -> None:
    idx = s.indices
    assert idx.dtype == np.int64 and idx.ndim == 1
    assert np.all(np.diff(idx) > 0)  # sorted, unique
    assert idx.size == 0 or (idx.min() >= 0 and idx.max() < len(setting["clean"]))
    assert np.isin(idx, setting["train_idx"]).all()  # training samples only, never validation ones
    assert np.array_equal(s.candidates, setting["task"].train.indices.numpy())
    assert s.scores.shape == (len(setting["train_idx"]),) and np.isfinite(s.scores).all()


@pytest.mark.parametrize("name", list(SELECTOR_PARAMS))
def test_selector_beats_the_clean_base_rate(name, tiny_selection_task):
    if name == "confident-learning":
        pytest.importorskip("cleanlab")
    setting = tiny_selection_task
    s = SELECTORS.get(name)(setting["task"], **SELECTOR_PARAMS[name])
    check_valid(s, setting)
    assert s.name == name
    q = selection_quality(s.indices, setting["noisy"], setting["clean"], candidates=setting["train_idx"])
    assert 0.65 < q["base_rate"] < 0.75  # 30% symmetric noise
    assert q["n_selected"] >= 5, q
    assert q["precision"] > max(0.7, q["base_rate"] + 0.02), q
    if name == "small-loss":
        assert q["n_selected"] == pytest.approx(0.7 * len(setting["train_idx"]), abs=10)
    if name == "bltm":
        assert s.info["n_distilled"] >= s.info["n_agree"] == q["n_selected"]
        assert len(s.info["distilled_indices"]) == s.info["n_distilled"] == len(s.info["bayes_labels"])
        assert np.isin(s.indices, s.info["distilled_indices"]).all()
        # BLTM's own "select. acc.": Bayes labels of all distilled examples against the clean labels
        assert sel.distilled_accuracy(s, setting["clean"]) > 0.5  # chance: 0.1
    summary = s.summary()
    assert summary["name"] == name and summary["n_selected"] == q["n_selected"]
    assert not any(isinstance(v, np.ndarray) for v in summary.values())


def test_selectors_take_a_given_model_and_features(tiny_selection_task):
    task = tiny_selection_task["task"]
    model = task.new_model("given")  # untrained: only the plumbing is checked here
    for name in ("small-loss", "bltm", "simifeat"):
        s = SELECTORS.get(name)(task, model=model, **({"rounds": 2} if name == "simifeat" else {}))
        check_valid(s, tiny_selection_task)
        assert "warmup" not in s.info
    pixels = task.normalizer(task.train.images).reshape(len(task.train), -1)
    s = sel.simifeat(task, features=pixels.numpy(), rounds=3)
    check_valid(s, tiny_selection_task)
    assert s.info["rounds"] == 1 and s.info["features"] == "array"
    s = sel.simifeat(task, features=lambda x: x.mean(dim=(2, 3)), rounds=3, count_self=False, backend="torch")
    check_valid(s, tiny_selection_task)
    assert s.info["rounds"] == 3 and s.info["augment"] is True
    with pytest.raises(EchobenchError):
        sel.simifeat(task, features=np.zeros((5, 3)))


# --- the kNN benchmark ---------------------------------------------------------------------------------


def test_bench_knn_smoke():
    pytest.importorskip("faiss")
    from echobench.bench.knn import bench_knn, format_bench_knn, neighbour_recall

    assert neighbour_recall(np.array([[1, 2], [0, 2]]), np.array([[2, 1], [0, 1]])) == 0.75

    doc = bench_knn(n=2000, dim=32, k=10, seed=0)
    assert set(doc["backends"]) == {"faiss", "torch"}
    for r in doc["backends"].values():
        assert "error" not in r, r
        assert r["seconds"] > 0 and r["peak_mib"] >= 0 and r["process_peak_mib"] >= r["baseline_mib"]
    assert doc["agreement"]["recall_at_k"] == 1.0
    assert doc["agreement"]["max_abs_sim_diff"] < 1e-4
    assert doc["ratio_torch_over_faiss"]["seconds"] > 0
    text = format_bench_knn(doc)
    assert "faiss" in text and "torch" in text and "recall@10" in text


def test_bench_rejects_unknown_backend():
    from echobench.bench.knn import bench_knn

    with pytest.raises(EchobenchError, match="unknown kNN backend"):
        bench_knn(n=10, dim=2, backends=("annoy",))
