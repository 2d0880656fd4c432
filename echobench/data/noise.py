"""Label-noise generators: pure functions of (labels, rate, num_classes, rng).

Every generator takes an explicit `np.random.Generator` (never global seeding) and returns a
`NoisyLabels`: the noisy labels, the row-stochastic transition matrix T with
T[i, j] = P(noisy = j | clean = i), and the realized noise rate (share of labels that changed).

Sources:
- symmetric: Co-teaching `data/utils.py` (`noisify_multiclass_symmetric`): off-diagonal n/(C-1),
  diagonal 1-n, so a flip never lands on the true class and the expected rate is n. (DivideMix and
  Joint Optimization draw from all C classes instead, an actual rate of n(C-1)/C; echobench does not.)
- pairflip: Co-teaching `noisify_pairflip`: T[i, i] = 1-n, T[i, (i+1) mod C] = n.
- instance: Xia et al. 2020, xiaoboxia/Part-dependent-label-noise `tools.py`
  `get_instance_noisy_label` (same in PES `common/NoisyUtil.py`), see `instance`.
- human: the CIFAR-N label sets; T is the empirical confusion of the set against the clean labels.

The paper's split (`split_train_val`): noise goes on all training labels first, then a seeded 90/10
train/validation split; the validation labels stay noisy, the test set stays clean.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from echobench.errors import EchobenchError
from echobench.registry import Registry, unknown_name_error, callable_check


@dataclass(frozen=True)
class NoisyLabels:
    labels: np.ndarray  # (N,) int64
    transition: np.ndarray  # (C, C) float64, row-stochastic
    realized_rate: float


# A noise generator: fn(labels, rate, num_classes, rng, **context) -> NoisyLabels.
NOISES: Registry[Callable[..., NoisyLabels]] = Registry("noise", check=callable_check("noise kind"))


def register_noise(name: str):
    """Decorator: register a noise kind `fn(labels, rate, num_classes, rng, **context) -> NoisyLabels`
    under `name` (suites write it NAME:RATE); a plugin's too."""
    return NOISES.register(name)


PAIRFLIP_WHY = " (at 0.5 or more the flipped label would outnumber the clean one in every class)"


def _check_rate(kind: str, rate: float, upper: float = 1.0, why: str = "") -> None:
    if not (0.0 <= rate < upper):
        interval = f"[0, {upper:g})"
        raise EchobenchError(
            f"{kind} noise rate {rate!r} is outside {interval}{why}; pass a rate such as 0.2 or 0.45"
        )


def _check_labels(labels: np.ndarray, num_classes: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0:
        raise EchobenchError(f"labels must be a non-empty 1-d array, got shape {labels.shape}")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise EchobenchError(f"labels must lie in [0, {num_classes}), got [{labels.min()}, {labels.max()}]")
    return labels.astype(np.int64, copy=False)


def realized_rate(clean: np.ndarray, noisy: np.ndarray) -> float:
    return float(np.mean(np.asarray(clean) != np.asarray(noisy)))


def empirical_transition(clean: np.ndarray, noisy: np.ndarray, num_classes: int) -> np.ndarray:
    """Row-normalised confusion counts; a class absent from `clean` keeps an identity row."""
    counts = np.zeros((num_classes, num_classes), dtype=np.float64)
    np.add.at(counts, (clean, noisy), 1.0)
    totals = counts.sum(axis=1, keepdims=True)
    eye = np.eye(num_classes)
    return np.where(totals > 0, counts / np.maximum(totals, 1.0), eye)


def sample_rows(probabilities: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One categorical draw per row of an (N, C) row-stochastic matrix, vectorised."""
    cumulative = np.cumsum(probabilities, axis=1)
    cumulative[:, -1] = 1.0  # guard the last bin against rounding
    u = rng.random(probabilities.shape[0])[:, None]
    return (u >= cumulative).sum(axis=1).astype(np.int64)


def _from_matrix(labels: np.ndarray, transition: np.ndarray, rng: np.random.Generator) -> NoisyLabels:
    noisy = sample_rows(transition[labels], rng)
    return NoisyLabels(noisy, transition, realized_rate(labels, noisy))


@NOISES.register("symmetric")
def symmetric(labels, rate: float, num_classes: int, rng: np.random.Generator, **_) -> NoisyLabels:
    """Flip with probability `rate` to one of the other C-1 classes, uniformly."""
    labels = _check_labels(labels, num_classes)
    # At rate (C-1)/C a noisy label is independent of the clean one: nothing left to learn.
    limit = (num_classes - 1) / num_classes
    _check_rate("symmetric", rate, limit, f" (at {limit:.3g} the labels carry no information for {num_classes} classes)")
    transition = np.full((num_classes, num_classes), rate / (num_classes - 1))
    np.fill_diagonal(transition, 1.0 - rate)
    return _from_matrix(labels, transition, rng)


@NOISES.register("pairflip")
def pairflip(labels, rate: float, num_classes: int, rng: np.random.Generator, **_) -> NoisyLabels:
    """Flip class i to (i+1) mod C with probability `rate`."""
    labels = _check_labels(labels, num_classes)
    _check_rate("pairflip", rate, 0.5, PAIRFLIP_WHY)
    transition = (1.0 - rate) * np.eye(num_classes) + rate * np.roll(np.eye(num_classes), 1, axis=1)
    return _from_matrix(labels, transition, rng)


def truncated_normal(mean: float, std: float, low: float, high: float, size: int, rng: np.random.Generator) -> np.ndarray:
    """Rejection sampling of N(mean, std²) restricted to [low, high] (scipy.stats.truncnorm's law)."""
    out = rng.normal(mean, std, size)
    bad = (out < low) | (out > high)
    while bad.any():
        out[bad] = rng.normal(mean, std, int(bad.sum()))
        bad = (out < low) | (out > high)
    return out


INSTANCE_INPUT_SCALE = 1.0 / 255.0


@NOISES.register("instance")
def instance(
    labels,
    rate: float,
    num_classes: int,
    rng: np.random.Generator,
    *,
    images: np.ndarray | None = None,
    std: float = 0.1,
    max_flip: float = 1.0,
    **_,
) -> NoisyLabels:
    """Part-dependent instance noise (Xia et al. 2020, `get_instance_noisy_label`).

    1. per-sample flip rate q_i ~ N(rate, std²) truncated to [0, max_flip] (BLTM's variant uses 0.6);
    2. W ~ N(0, 1) of shape (C, D, C), D = flattened image size;
    3. for sample i with clean label y: A = x_i · W[y]; A[y] = -inf; p = q_i softmax(A); p[y] += 1 - q_i;
    4. the noisy label is drawn from p.

    Input scaling, fixed here because implementations differ and it sets how peaked softmax(A) is:
    x_i is the uint8 image flattened in HWC order and scaled to [0, 1] (×1/255). The official code
    feeds raw 0–255 values, which makes softmax(A) 255× "colder" (effectively one-hot); with [0, 1]
    inputs the flip target still depends strongly on the instance but is not forced to a single class.
    The returned T is the exact expected transition: the mean of p over the samples of each class.
    """
    labels = _check_labels(labels, num_classes)
    _check_rate("instance", rate)
    if images is None or len(images) != len(labels):
        raise EchobenchError("instance noise needs the training images, one per label")
    q = truncated_normal(rate, std, 0.0, max_flip, len(labels), rng)
    images = np.asarray(images).reshape(len(labels), -1)
    w = rng.standard_normal((num_classes, images.shape[1], num_classes), dtype=np.float32)
    probabilities = np.zeros((len(labels), num_classes), dtype=np.float64)
    for c in range(num_classes):  # group by class: one (n_c, D) @ (D, C) product each
        rows = np.flatnonzero(labels == c)
        if rows.size == 0:
            continue
        x = images[rows].astype(np.float32) * INSTANCE_INPUT_SCALE  # one class at a time: bounded memory
        logits = (x @ w[c]).astype(np.float64)
        logits[:, c] = -np.inf
        logits -= logits.max(axis=1, keepdims=True)
        soft = np.exp(logits)
        soft /= soft.sum(axis=1, keepdims=True)
        p = q[rows, None] * soft
        p[:, c] += 1.0 - q[rows]
        probabilities[rows] = p
    noisy = sample_rows(probabilities, rng)
    transition = np.eye(num_classes)
    for c in range(num_classes):
        rows = labels == c
        if rows.any():
            transition[c] = probabilities[rows].mean(axis=0)
    return NoisyLabels(noisy, transition, realized_rate(labels, noisy))


@NOISES.register("human")
def human(labels, rate, num_classes: int, rng, *, human_labels: dict | None = None, label_set: str = "", **_) -> NoisyLabels:
    """A human-annotated label set (CIFAR-N); `rng` and `rate` are unused: the labels are given."""
    labels = _check_labels(labels, num_classes)
    if not human_labels:
        raise EchobenchError("human noise needs a dataset with human label sets: use cifar10n or cifar100n")
    if label_set not in human_labels:
        raise unknown_name_error("label set", label_set, list(human_labels))
    noisy = _check_labels(human_labels[label_set], num_classes)
    if noisy.shape != labels.shape:
        raise EchobenchError(f"label set {label_set!r} has {len(noisy)} labels for {len(labels)} images")
    return NoisyLabels(noisy.copy(), empirical_transition(labels, noisy, num_classes), realized_rate(labels, noisy))


@dataclass(frozen=True)
class NoiseSpec:
    """`KIND:RATE` (symmetric:0.5, pairflip:0.45, instance:0.3) or `human:SET` (human:worst)."""

    kind: str
    rate: float = 0.0
    label_set: str = ""

    @classmethod
    def parse(cls, text: str) -> "NoiseSpec":
        kind, sep, value = str(text).partition(":")
        kind = kind.strip()
        if kind not in NOISES:
            raise unknown_name_error("noise", kind, NOISES.names())
        if kind == "human":
            if not value:
                raise EchobenchError("human noise needs a label set, e.g. human:worst or human:aggre")
            return cls(kind, 0.0, value.strip())
        if not sep:
            raise EchobenchError(f"noise {text!r} needs a rate: write {kind}:0.3")
        try:
            rate = float(value)
        except ValueError:
            raise EchobenchError(f"noise rate {value!r} in {text!r} is not a number; write e.g. {kind}:0.3") from None
        if kind == "pairflip":
            _check_rate(kind, rate, 0.5, PAIRFLIP_WHY)
        else:
            _check_rate(kind, rate)
        return cls(kind, rate)

    def __str__(self) -> str:
        return f"{self.kind}:{self.label_set}" if self.kind == "human" else f"{self.kind}:{self.rate:g}"

    def sort_key(self) -> tuple:
        """Tables order noise settings by kind (symmetric, pairflip, instance, human), then rate."""
        order = {"symmetric": 0, "pairflip": 1, "instance": 2, "human": 3}
        return (order.get(self.kind, 9), self.rate, self.label_set)

    def label(self) -> str:
        """Column heading for tables: 'symmetric 50%', 'human worst'."""
        return f"human {self.label_set}" if self.kind == "human" else f"{self.kind} {self.rate * 100:g}%"

    def apply(self, labels, num_classes: int, rng: np.random.Generator, **context) -> NoisyLabels:
        fn = NOISES.get(self.kind)
        return fn(labels, self.rate, num_classes, rng, label_set=self.label_set, **context)


def split_train_val(n: int, rng: np.random.Generator, val_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """The paper's 45,000 / 5,000 split of 50,000, scaled: a seeded draw without replacement.

    The released EchoAlign code (as PES) takes `np.random.choice(50000, 45000, replace=False)` after
    `np.random.seed(seed)`; echobench draws the same kind of subset with an explicit Generator, so
    the indices differ from that code's for the same seed number.
    """
    if not 0.0 < val_fraction < 1.0:
        raise EchobenchError(f"validation fraction {val_fraction} must lie in (0, 1)")
    n_train = int(round(n * (1.0 - val_fraction)))
    if n_train < 1 or n_train >= n:
        raise EchobenchError(f"cannot split {n} samples into train and validation with fraction {val_fraction}")
    perm = rng.permutation(n)
    return np.sort(perm[:n_train]), np.sort(perm[n_train:])
