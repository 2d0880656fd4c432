"""EchoSelect: similarity backends, the selection rule, its analysis and the feature extractors."""

import numpy as np
import pytest

from echobench.echoalign.echoselect import (auroc, count_at_precision, default_tau, keep_original, paired_cosine,
                                  separation, table4_view, tau_sweep)
from echobench.errors import EchobenchError


def test_faiss_and_torch_similarities_agree():
    pytest.importorskip("faiss")
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(300, 64)), rng.normal(size=(300, 64))
    b[:100] = a[:100] * 3.0  # parallel rows: cosine 1 whatever the norm
    s_faiss, s_torch = paired_cosine(a, b, "faiss"), paired_cosine(a, b, "torch")
    np.testing.assert_allclose(s_faiss, s_torch, atol=1e-6)
    np.testing.assert_allclose(s_faiss[:100], 1.0, atol=1e-6)
    manual = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    np.testing.assert_allclose(s_torch, manual, atol=1e-6)


def test_similarity_rejects_mismatched_shapes_and_backends():
    with pytest.raises(EchobenchError, match="one shape"):
        paired_cosine(np.zeros((3, 4)), np.zeros((2, 4)))
    with pytest.raises(EchobenchError, match="backend"):
        paired_cosine(np.zeros((3, 4)), np.zeros((3, 4)), "annoy")


def test_selection_rule_and_tau():
    s = np.array([0.1, 0.4, 0.52, 0.9])
    assert keep_original(s, 0.4).tolist() == [False, True, True, True]  # S ≥ τ (paper)
    assert keep_original(s, 0.4, strict=True).tolist() == [False, False, True, True]  # S > τ (released code)
    for bad in (1.5, -1.01, float("nan")):
        with pytest.raises(EchobenchError, match=r"\[-1, 1\]"):
            keep_original(s, bad)
    assert default_tau(0.3) == 0.4 and default_tau(0.45) == 0.52 and default_tau(0.5) == 0.52
    assert default_tau(0.17) == 0.4 and default_tau(0.40) == 0.52
    assert default_tau(0.3, "shapes-hog") == 0.86 and default_tau(0.5, "shapes-hog") == 0.87


def test_auroc_and_precision_counts_by_hand():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    clean = np.array([1, 1, 0, 1, 0, 0], bool)
    # pairs (clean, noisy) ranked correctly: 0.9 and 0.8 beat all 3 noisy; 0.6 beats 2 of them → 8/9
    assert auroc(scores, clean) == pytest.approx(8 / 9)
    assert auroc(np.ones(6), clean) == pytest.approx(0.5)  # ties count one half
    # top-k precisions: 1, 1, 2/3, 3/4, 3/5, 1/2
    assert count_at_precision(scores, clean, 0.99) == 2
    assert count_at_precision(scores, clean, 0.75) == 4
    assert count_at_precision(scores, clean, 0.5) == 6
    # ties move together: with the top three tied, precision 2/3 is all a threshold can give
    tied = np.array([1.0, 1.0, 1.0, 0.5, 0.4, 0.3])
    assert count_at_precision(tied, clean, 0.9) == 0
    assert table4_view(scores, clean, (0.99, 0.75)) == {"99%": 2, "75%": 4}


def test_separation_and_sweep_on_separable_scores():
    rng = np.random.default_rng(1)
    clean = rng.random(2000) < 0.5
    s = np.where(clean, rng.normal(0.8, 0.05, 2000), rng.normal(0.3, 0.05, 2000))
    doc = separation(s, clean, 0.52)
    assert doc["auroc"] > 0.999 and doc["ks_pvalue"] < 1e-10 and doc["precision"] > 0.999 and doc["recall"] > 0.999
    sweep = tau_sweep(s, clean)
    assert [r["tau"] for r in sweep][:3] == [0.0, 0.05, 0.1]
    kept = [r["kept"] for r in sweep]
    assert kept == sorted(kept, reverse=True)  # a higher τ never keeps more


def test_youden_tau_by_hand_and_against_a_brute_force_search():
    from echobench.echoalign.echoselect import keep_original, youden_tau

    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    clean = np.array([1, 1, 0, 1, 0, 0], bool)
    # τ = 0.8 keeps 2/3 of the clean and replaces 3/3 of the noisy: J = 2/3; τ = 0.6 gives 3/3 + 2/3 − 1 = 2/3
    # too, and the larger τ wins a tie
    assert youden_tau(scores, clean) == (0.8, pytest.approx(2 / 3))
    rng = np.random.default_rng(3)
    clean = rng.random(500) < 0.6
    s = np.round(np.where(clean, rng.normal(0.7, 0.1, 500), rng.normal(0.5, 0.1, 500)), 2)  # many ties
    tau, j = youden_tau(s, clean)

    def youden(t):
        kept = keep_original(s, t)
        return kept[clean].mean() + (~kept[~clean]).mean() - 1

    assert youden(tau) == pytest.approx(j) and j == pytest.approx(max(youden(t) for t in np.unique(s)))
    assert np.isnan(youden_tau(s, np.ones(500, bool))[0])


def test_shapes_hog_extractor_is_batch_independent_and_normalised():
    from echobench.data import load_dataset
    from echobench.echoalign.features import make_extractor

    data = load_dataset("shapes", n_train=40, n_test=10)
    fx = make_extractor("shapes-hog")
    feats = fx.extract(data.train_images)
    assert feats.shape[0] == 40 and feats.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(fx.extract(data.train_images[5:6]), feats[5:6])
    with pytest.raises(EchobenchError, match="uint8"):
        fx.extract(data.train_images.astype(np.float32))
    with pytest.raises(EchobenchError, match="no option"):
        make_extractor("shapes-hog", {"cells": 4})


def test_unknown_extractor_suggests_a_name():
    from echobench.echoalign.features import make_extractor

    with pytest.raises(EchobenchError, match="open_clip"):
        make_extractor("open-clip")


def test_open_clip_extractor_with_random_weights():
    pytest.importorskip("open_clip")
    from echobench.echoalign.features import make_extractor

    fx = make_extractor("open_clip", {"pretrained": "none", "batch_size": 3})
    images = np.random.default_rng(0).integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
    feats = fx.extract(images)
    assert feats.shape == (4, 512)
    np.testing.assert_allclose(fx.extract(images[2:3]), feats[2:3], atol=1e-4)
    x = fx.preprocess(__import__("torch").from_numpy(images))
    assert tuple(x.shape) == (4, 3, 224, 224)


def test_open_clip_weights_missing_offline_names_the_fix(monkeypatch, tmp_path):
    pytest.importorskip("open_clip")
    from echobench.echoalign.features import make_extractor

    import huggingface_hub.constants as hf_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)  # read at import: set both, no network retries
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(EchobenchError, match="Hugging Face cache .* pretrained=/path"):
        make_extractor("open_clip", {"pretrained": "laion2b_s34b_b79k"})
    with pytest.raises(EchobenchError, match="could not build 'ViT-B-99'"):
        make_extractor("open_clip", {"model": "ViT-B-99", "pretrained": "none"})


def test_bench_echoselect_compares_both_paths_on_the_same_model():
    pytest.importorskip("open_clip")
    from echobench.bench.echoselect import bench_echoselect, format_bench_echoselect

    doc = bench_echoselect(n=3, batch_size=2)
    assert doc["released_loop"]["seconds"] > 0 and doc["echobench"]["seconds"] > 0
    assert doc["speedup"] == pytest.approx(doc["released_loop"]["seconds"] / doc["echobench"]["seconds"], rel=0.02)
    # same weights, same pairs: the two paths differ only by PIL vs tensor resizing
    assert doc["max_abs_similarity_difference"] < 5e-3
    assert "released loop" in format_bench_echoselect(doc)


def test_ls_lists_engines_and_extractors(cli):
    code, out, _ = cli("ls", "engines")
    assert code == 0 and "procedural" in out and "eager" in out
    code, out, _ = cli("ls", "extractors")
    assert code == 0 and "open_clip" in out and "shapes-hog" in out


# ------------------------------------------------- the released preprocessing (issue 19, item 6)

TINY_CLIP = "echobench-test-tiny-clip"


@pytest.fixture
def tiny_clip(monkeypatch):
    """A tiny open_clip architecture registered locally (random weights, nothing downloaded): a 2-layer
    ViT at 224 px with 32 px patches, so the preprocessing is the real one (resize to 224, crop)."""
    pytest.importorskip("open_clip")
    from open_clip import factory

    config = {"embed_dim": 32,
              "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "patch_size": 32, "head_width": 32},
              "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    monkeypatch.setitem(factory._MODEL_CONFIGS, TINY_CLIP, config)
    return {"model": TINY_CLIP, "pretrained": "none"}


def test_exact_released_uses_pil_preprocessing_in_float32(tiny_clip):
    import torch
    from PIL import Image

    from echobench.echoalign.features import make_extractor

    exact = make_extractor("open_clip", {**tiny_clip, "exact_released": "true", "batch_size": 3})
    assert exact.options.exact_released is True and not exact.half
    assert exact.config()["exact_released"] is True
    assert "exact_released" not in make_extractor("open_clip", tiny_clip).config()  # older configs unchanged
    images = np.random.default_rng(0).integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
    x = exact.preprocess_released(images)
    assert torch.equal(x[1], exact.pil_preprocess(Image.fromarray(images[1])))
    assert x.dtype == torch.float32 and tuple(x.shape) == (4, 3, 224, 224)
    assert exact.extract(images).shape == (4, 32)
    with pytest.raises(EchobenchError, match="exact_released: expected true or false"):
        make_extractor("open_clip", {**tiny_clip, "exact_released": "maybe"})


def test_exact_released_differences_count_decisions_at_tau(tiny_clip):
    from echobench.echoalign.echoselect import exact_released_differences

    rng = np.random.default_rng(1)
    originals = rng.integers(0, 255, (12, 32, 32, 3), dtype=np.uint8)
    modified = np.clip(originals.astype(int) + rng.integers(-60, 60, originals.shape), 0, 255).astype(np.uint8)
    assert exact_released_differences(originals, modified, 0.4, strict=False, extractor="open_clip",
                                      options=tiny_clip, device="cpu") is None  # only when asked for
    options = {**tiny_clip, "exact_released": True}
    low = exact_released_differences(originals, modified, -1.0, strict=False, extractor="open_clip",
                                      options=options, device="cpu")
    assert low["decisions_differ"] == 0 and low["kept_exact"] == low["kept_fast"] == 12  # all kept at τ = -1
    assert 0 < low["max_abs_delta_s"] < 0.05 and "float32 on cpu" in low["fast_path"]
    # τ between the two paths' S for one pair: exactly the pairs that straddle τ differ.
    import torch

    from echobench.echoalign.echoselect import keep_original
    from echobench.echoalign.features import ClipOptions, OpenClip, create_clip

    torch.manual_seed(0)
    built = create_clip(ClipOptions(**options))
    sims = {}
    for exact in (True, False):
        fx = OpenClip(ClipOptions(**{**options, "exact_released": exact}), "cpu", built=built)
        a, b = fx.extract(originals), fx.extract(modified)
        sims[exact] = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    tau = float((sims[True][0] + sims[False][0]) / 2)
    got = exact_released_differences(originals, modified, tau, strict=False, extractor="open_clip", options=options,
                                     device="cpu", built=built)
    expected = int((keep_original(sims[True], tau) != keep_original(sims[False], tau)).sum())
    assert got["decisions_differ"] == expected >= 1 and got["n"] == 12


def test_select_reports_the_decisions_the_fast_path_changes(cli, tiny_clip, tmp_path):
    code, out, err = cli("select", "shapes", "--noise", "instance:0.3", "--dataset-option", "n_train=120",
                         "--dataset-option", "n_test=40", "--extractor", "open_clip", "--extractor-option",
                         f"model={TINY_CLIP}", "--extractor-option", "pretrained=none", "--extractor-option",
                         "exact_released=true", "--tau", "0.9", "--out", tmp_path / "select", "--no-progress")
    assert code == 0, err
    assert "Released preprocessing (PIL, float32) vs the fast path" in out and "keep/replace decisions differ" in out
    import json

    doc = json.loads((tmp_path / "select" / "select.json").read_text())
    assert doc["exact_released"]["n"] == doc["echoselect"]["n"] and doc["exact_released"]["tau"] == 0.9
