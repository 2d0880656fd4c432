"""The embedded `shapes` world: determinism, form, argument checks, and that it is a real task."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from echobench.data import shapes
from echobench.data.shapes import (
    AMBIGUITY_KINDS,
    CLASS_NAMES,
    CONFUSABLE,
    CONFUSABLE_ID,
    DEFORM,
    load_shapes,
    object_alpha,
    render_instance,
)
from echobench.errors import EchobenchError

ROOT = Path("unused")
HIDDEN_KEYS = ("cx", "cy", "scale", "rotation", "color", "ambiguity", "strength", "morph_target")


@pytest.fixture(scope="module")
def world():
    """A mid-sized world shared by the slower tests (about half a second to generate)."""
    return load_shapes(ROOT, n_train=2000, n_test=1000, seed=1, ambiguous_fraction=0.3)


def test_same_seed_is_byte_identical_even_without_the_cache():
    a = load_shapes(ROOT, n_train=200, n_test=50, seed=3)
    shapes._generate.cache_clear()
    b = load_shapes(ROOT, n_train=200, n_test=50, seed=3)
    assert a.train_images is not b.train_images  # really regenerated
    for part in ("train", "test"):
        assert getattr(a, f"{part}_images").tobytes() == getattr(b, f"{part}_images").tobytes()
        np.testing.assert_array_equal(getattr(a, f"{part}_labels"), getattr(b, f"{part}_labels"))
        for key, value in a.extras["hidden"][part].items():
            np.testing.assert_array_equal(value, b.extras["hidden"][part][key])


def test_different_seed_differs():
    a = load_shapes(ROOT, n_train=200, n_test=50, seed=3)
    b = load_shapes(ROOT, n_train=200, n_test=50, seed=4)
    assert not np.array_equal(a.train_images, b.train_images)
    assert not np.array_equal(a.train_labels, b.train_labels)
    assert not np.array_equal(a.test_images, b.test_images)


def test_parts_are_independent_of_each_others_size():
    base = load_shapes(ROOT, n_train=200, n_test=50, seed=5)
    more_test = load_shapes(ROOT, n_train=200, n_test=80, seed=5)
    more_train = load_shapes(ROOT, n_train=300, n_test=50, seed=5)
    np.testing.assert_array_equal(base.train_images, more_test.train_images)
    np.testing.assert_array_equal(base.train_labels, more_test.train_labels)
    np.testing.assert_array_equal(base.test_images, more_train.test_images)
    np.testing.assert_array_equal(base.test_labels, more_train.test_labels)
    same_size = load_shapes(ROOT, n_train=50, n_test=50, seed=5)
    assert not np.array_equal(same_size.train_images, same_size.test_images)  # separate streams


def test_form_and_hidden_parameters(world):
    assert world.name == "shapes"
    assert world.class_names == list(CLASS_NAMES) and world.num_classes == 10
    for part, n in (("train", 2000), ("test", 1000)):
        images, labels = getattr(world, f"{part}_images"), getattr(world, f"{part}_labels")
        assert images.dtype == np.uint8 and images.shape == (n, 32, 32, 3)
        assert labels.dtype == np.int64 and labels.shape == (n,)
        assert labels.min() >= 0 and labels.max() < 10
        counts = np.bincount(labels, minlength=10)
        assert counts.min() >= n // 10 and counts.max() <= n // 10 + 1  # balanced
        assert images.std() > 30  # not blank

        hidden = world.extras["hidden"][part]
        for key in HIDDEN_KEYS:
            assert len(hidden[key]) == n, key
        assert hidden["color"].shape == (n, 3)
        np.testing.assert_array_equal(hidden["label"], labels)
        kinds = hidden["ambiguity"]
        assert set(np.unique(kinds)) == set(range(len(AMBIGUITY_KINDS)))
        assert abs((kinds > 0).mean() - 0.3) < 0.02
        deform = kinds == DEFORM
        np.testing.assert_array_equal(hidden["morph_target"][deform], CONFUSABLE_ID[labels[deform]])
        assert (hidden["morph_target"][~deform] == -1).all()
        assert (hidden["strength"][kinds == 0] == 0).all() and (hidden["strength"][kinds > 0] > 0).all()
        assert (hidden["strength"][deform] >= 0.35).all() and (hidden["strength"][deform] <= 0.65).all()
        radius_px = hidden["scale"]
        assert radius_px.min() >= 7 and radius_px.max() <= 13
        # "mostly inside": at most a quarter of the radius may stick out
        for c in ("cx", "cy"):
            assert (hidden[c] >= 0.7 * radius_px).all() and (hidden[c] <= 32 - 0.7 * radius_px).all()
    assert world.extras["world"]["seed"] == 1 and world.extras["world"]["ambiguous_fraction"] == 0.3


def test_ambiguous_fraction_extremes_and_image_size():
    none = load_shapes(ROOT, n_train=100, n_test=20, ambiguous_fraction=0.0)
    assert (none.extras["hidden"]["train"]["ambiguity"] == 0).all()
    every = load_shapes(ROOT, n_train=100, n_test=20, ambiguous_fraction=1)
    assert (every.extras["hidden"]["train"]["ambiguity"] > 0).all()
    big = load_shapes(ROOT, n_train=20, n_test=10, image_size=64)
    assert big.train_images.shape == (20, 64, 64, 3)
    assert big.extras["hidden"]["train"]["scale"].min() >= 14  # pixel quantities scale with size


def test_cached_arrays_are_read_only_and_datasets_are_fresh():
    a = load_shapes(ROOT, n_train=100, n_test=20)
    b = load_shapes(ROOT, n_train=100, n_test=20)
    assert a.train_images is b.train_images  # cached
    with pytest.raises(ValueError):
        a.train_images[0, 0, 0, 0] = 1
    with pytest.raises(ValueError):
        a.train_labels[0] = 1
    with pytest.raises(ValueError):
        a.extras["hidden"]["train"]["cx"][0] = 1.0
    a.train_labels = np.zeros(100, dtype=np.int64)  # e.g. a runner swapping in noisy labels
    a.extras["hidden"]["train"].clear()
    c = load_shapes(ROOT, n_train=100, n_test=20)
    assert c.train_labels is b.train_labels and len(c.extras["hidden"]["train"]) > 0


@pytest.mark.parametrize(
    "options",
    [
        {"n_train": 0},
        {"n_train": -5},
        {"n_train": 10.5},
        {"n_train": True},
        {"n_test": 0},
        {"seed": -1},
        {"seed": "0"},
        {"ambiguous_fraction": -0.1},
        {"ambiguous_fraction": 1.5},
        {"ambiguous_fraction": "0.2"},
        {"image_size": 4},
    ],
)
def test_bad_arguments_raise(options):
    with pytest.raises(EchobenchError, match=next(iter(options))):
        load_shapes(ROOT, **options)


def test_render_instance_reproduces_and_rerenders(world):
    hidden = world.extras["hidden"]["train"]
    for kind in range(len(AMBIGUITY_KINDS)):
        for i in np.flatnonzero(hidden["ambiguity"] == kind)[:5]:
            assert render_instance(hidden, i).tobytes() == world.train_images[i].tobytes()
            other = (int(world.train_labels[i]) + 1) % 10
            assert not np.array_equal(render_instance(hidden, i, class_id=other), world.train_images[i])
    with pytest.raises(EchobenchError):
        render_instance(hidden, 0, class_id=10)


def test_confusable_map_is_a_total_map_onto_other_classes():
    assert set(CONFUSABLE) == set(CLASS_NAMES) and set(CONFUSABLE.values()) <= set(CLASS_NAMES)
    assert all(k != v for k, v in CONFUSABLE.items())


def _shape_features(images: np.ndarray, colors: np.ndarray, bins: int = 32) -> np.ndarray:
    """Rotation-, translation- and scale-invariant silhouette features of each image.

    The object is segmented with its hidden colour (this tests the rendered shapes, not a
    segmenter); its radial signature's Fourier magnitudes capture the symmetry order (corners,
    points), the fill ratio and the inertia ratio capture compactness and elongation.
    """
    dist = np.linalg.norm(images.astype(np.float32) - colors[:, None, None, :].astype(np.float32), axis=-1)
    size = images.shape[1]
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    feats = np.zeros((len(images), 10))
    for n, mask in enumerate(dist < 40):
        x, y = xx[mask], yy[mask]
        if len(x) < 3:
            continue
        dx, dy = x - x.mean(), y - y.mean()
        r = np.hypot(dx, dy)
        b = ((np.arctan2(dy, dx) + np.pi) / (2 * np.pi) * bins).astype(int) % bins
        signature = np.zeros(bins)
        np.maximum.at(signature, b, r)
        spectrum = np.abs(np.fft.rfft(signature))
        inertia = np.linalg.eigvalsh(np.cov(np.stack([dx, dy])))
        fill = len(x) / (np.pi * signature.max() ** 2)
        feats[n] = [*(spectrum[1:9] / spectrum[0]), fill, inertia[0] / max(inertia[1], 1e-9)]
    return feats


@pytest.fixture(scope="module")
def nearest_centroid(world):
    """Nearest-centroid predictions on the test part, fitted on the train part's clean images."""
    hidden = world.extras["hidden"]
    train = _shape_features(world.train_images, hidden["train"]["color"])
    test = _shape_features(world.test_images, hidden["test"]["color"])
    mu, sd = train.mean(0), train.std(0) + 1e-9
    train, test = (train - mu) / sd, (test - mu) / sd
    clean = hidden["train"]["ambiguity"] == 0
    centroids = np.stack([train[clean & (world.train_labels == c)].mean(0) for c in range(10)])
    return np.argmin(((test[:, None] - centroids[None]) ** 2).sum(-1), axis=1)


def test_classes_are_distinguishable(world, nearest_centroid):
    clean = world.extras["hidden"]["test"]["ambiguity"] == 0
    correct = nearest_centroid == world.test_labels
    assert correct[clean].mean() > 0.9  # chance is 0.1
    for c in range(10):  # no class is lost in another
        assert correct[clean & (world.test_labels == c)].mean() > 0.7, CLASS_NAMES[c]


def test_ambiguous_instances_are_harder(world, nearest_centroid):
    kinds, y = world.extras["hidden"]["test"]["ambiguity"], world.test_labels
    correct = nearest_centroid == y
    for kind in (1, 2, 3):
        assert correct[kinds == kind].mean() < correct[kinds == 0].mean() - 0.25, AMBIGUITY_KINDS[kind]
    # deformed objects are mistaken for their confusable class, not for just any class
    to_confusable = nearest_centroid == CONFUSABLE_ID[y]
    assert to_confusable[kinds == DEFORM].mean() > 0.2 > 0.05 > to_confusable[kinds == 0].mean()


def test_deformed_silhouettes_lie_between_the_two_classes(world):
    hidden = world.extras["hidden"]["train"]

    def iou(a, b):
        return np.minimum(a, b).sum() / np.maximum(a, b).sum()

    deformed = np.flatnonzero(hidden["ambiguity"] == DEFORM)
    assert len(deformed) > 100
    for i in deformed:
        pose = [hidden[k][i] for k in ("cx", "cy", "scale", "rotation")]
        own, target = int(hidden["label"][i]), int(hidden["morph_target"][i])
        morphed = object_alpha(32, own, *pose, target, hidden["strength"][i])
        pure, other = object_alpha(32, own, *pose), object_alpha(32, target, *pose)
        assert iou(morphed, other) > iou(pure, other)
        assert iou(morphed, pure) > iou(other, pure)


def test_the_world_version_is_part_of_every_cell_id_and_echomod_cache_key(monkeypatch):
    """A changed generator (a new WORLD_VERSION) gives new run ids and EchoMod cache keys, so a results
    directory or cache never mixes images of two versions; a loader refuses a version it cannot render."""
    import echobench.data.shapes as shapes
    from echobench.data.base import dataset_identity
    from echobench.echoalign.cache import dataset_key
    from echobench.harness.suite import parse_suite

    suite = {"name": "w", "datasets": {"shapes": {"n_train": 50, "n_test": 10}}, "noise": ["symmetric:0.3"],
             "methods": ["ce"], "seeds": [1], "protocol": "smoke"}
    (spec,) = parse_suite(suite, "test").expand()
    assert spec.dataset_options == {"n_test": 10, "n_train": 50, "world": shapes.WORLD_VERSION}
    assert dataset_identity("shapes", {"n_train": 50})["world"] == shapes.WORLD_VERSION
    key = dataset_key("shapes", {"n_train": 50, "n_test": 10})
    assert key == dataset_key("shapes", spec.dataset_options)  # with or without `world` written out
    monkeypatch.setattr(shapes.load_shapes, "identity", {"world": shapes.WORLD_VERSION + 1})
    (changed,) = parse_suite(suite, "test").expand()
    assert changed.run_id != spec.run_id
    assert dataset_key("shapes", {"n_train": 50, "n_test": 10}) != key
    with pytest.raises(EchobenchError, match=f"renders world version {shapes.WORLD_VERSION}, not 99"):
        load_shapes(ROOT, n_train=5, n_test=5, world=99)
