import numpy as np
import pytest

from echobench.errors import EchobenchError
from echobench.data.noise import NoiseSpec, empirical_transition, instance, pairflip, split_train_val, symmetric

C = 10
LABELS = np.repeat(np.arange(C), 2000)  # 20,000 labels, balanced


def rng(seed=0):
    return np.random.default_rng(seed)


@pytest.mark.parametrize("fn,rate", [(symmetric, 0.3), (symmetric, 0.5), (pairflip, 0.45), (pairflip, 0.2)])
def test_class_conditional_rates_and_matrix(fn, rate):
    out = fn(LABELS, rate, C, rng(1))
    assert abs(out.realized_rate - rate) < 0.015  # binomial sd at n=20k is ~0.0035
    assert np.allclose(out.transition.sum(1), 1.0)
    assert np.allclose(np.diag(out.transition), 1 - rate)
    emp = empirical_transition(LABELS, out.labels, C)
    assert np.abs(emp - out.transition).max() < 0.04
    assert out.labels.dtype == np.int64


def test_symmetric_never_flips_to_true_class_and_spreads_over_others():
    out = symmetric(LABELS, 0.5, C, rng(2))
    emp = empirical_transition(LABELS, out.labels, C)
    off = emp[~np.eye(C, dtype=bool)]
    assert np.all(off > 0.03) and np.all(off < 0.09)  # each ≈ 0.5/9 = 0.056


def test_pairflip_goes_to_next_class_only():
    out = pairflip(LABELS, 0.45, C, rng(3))
    changed = out.labels != LABELS
    assert np.all(out.labels[changed] == (LABELS[changed] + 1) % C)


def test_same_seed_same_labels_different_seed_differs():
    a = symmetric(LABELS, 0.3, C, rng(7)).labels
    b = symmetric(LABELS, 0.3, C, rng(7)).labels
    c = symmetric(LABELS, 0.3, C, rng(8)).labels
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def _images(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, 8, 8, 3), dtype=np.uint8)


def test_instance_noise_rate_matrix_and_determinism():
    labels = np.repeat(np.arange(C), 400)
    images = _images(len(labels))
    out = instance(labels, 0.3, C, rng(4), images=images)
    assert abs(out.realized_rate - 0.3) < 0.03
    assert np.allclose(out.transition.sum(1), 1.0)
    again = instance(labels, 0.3, C, rng(4), images=images)
    assert np.array_equal(out.labels, again.labels)
    # Instance-dependent: the flip targets depend on the image, so they are not uniform over classes.
    emp = empirical_transition(labels, out.labels, C)
    off = emp[~np.eye(C, dtype=bool)].reshape(C, C - 1)
    assert off.max() > 2 * off.mean()


def test_instance_noise_depends_on_pixels():
    labels = np.repeat(np.arange(C), 300)
    a = instance(labels, 0.4, C, rng(5), images=_images(len(labels), 0)).labels
    b = instance(labels, 0.4, C, rng(5), images=_images(len(labels), 1)).labels
    assert not np.array_equal(a, b)


def test_instance_noise_needs_images():
    with pytest.raises(EchobenchError, match="images"):
        instance(LABELS, 0.3, C, rng())


@pytest.mark.parametrize("text", ["symmetric:1.0", "symmetric:-0.1", "instance:1.5", "pairflip:0.5", "pairflip:0.7"])
def test_bad_rates_are_refused_with_a_message(text):
    with pytest.raises(EchobenchError, match="outside"):
        NoiseSpec.parse(text)


def test_symmetric_rate_without_information_is_refused():
    with pytest.raises(EchobenchError, match="no information"):
        symmetric(LABELS, 0.95, C, rng())


def test_noise_spec_parsing_and_names():
    assert str(NoiseSpec.parse("pairflip:0.45")) == "pairflip:0.45"
    assert NoiseSpec.parse("human:worst").label_set == "worst"
    with pytest.raises(EchobenchError, match="Did you mean 'symmetric'"):
        NoiseSpec.parse("symetric:0.2")
    with pytest.raises(EchobenchError, match="needs a rate"):
        NoiseSpec.parse("symmetric")
    with pytest.raises(EchobenchError, match="not a number"):
        NoiseSpec.parse("symmetric:abc")


def test_human_noise_uses_the_given_set():
    clean = np.array([0, 1, 2, 3] * 5)
    worst = clean.copy()
    worst[:5] = (worst[:5] + 1) % 4
    out = NoiseSpec.parse("human:worst").apply(clean, 4, rng(), human_labels={"worst": worst})
    assert np.array_equal(out.labels, worst)
    assert out.realized_rate == pytest.approx(0.25)
    with pytest.raises(EchobenchError, match="Did you mean 'worst'"):
        NoiseSpec.parse("human:wrst").apply(clean, 4, rng(), human_labels={"worst": worst})
    with pytest.raises(EchobenchError, match="cifar10n"):
        NoiseSpec.parse("human:worst").apply(clean, 4, rng())


def test_split_is_the_papers_45k_5k_and_seeded():
    train, val = split_train_val(50_000, rng(1))
    assert len(train) == 45_000 and len(val) == 5_000
    assert len(np.intersect1d(train, val)) == 0
    train2, _ = split_train_val(50_000, rng(1))
    train3, _ = split_train_val(50_000, rng(2))
    assert np.array_equal(train, train2) and not np.array_equal(train, train3)
    small_train, small_val = split_train_val(4_000, rng(1))
    assert (len(small_train), len(small_val)) == (3_600, 400)
