"""The embedded synthetic image world "shapes": CIFAR-shaped, generated from a seed, no download.

Each image (32x32x3 uint8 by default, 10 classes) shows one flat-coloured object, a closed contour of
its class, at a random position, scale and rotation, in a colour chosen to contrast with a textured
background (two colours mixed by low-frequency noise and stripes). Objects are drawn at 4x resolution
and area-downsampled, so edges are anti-aliased and corners survive at 32 px. Labels are the rendered
class (clean labels) and are balanced: every class gets n // 10 or n // 10 + 1 images, in random order.

Hidden world. Everything that generated an image is returned in `extras["hidden"][part]` (arrays of
length N): pose (`cx`, `cy` in pixels with (0, 0) the top-left corner of the image, `scale` = radius
in pixels, `rotation` in radians), `color`, the background (`bg_colors`, `bg_seed`), and the
ambiguity (`ambiguity`, `strength`, `morph_target`, `occluder_*`). The runner may use it for
instance-dependent noise and analysis; methods never see it. `render_instance(hidden, i)` re-renders
image i byte-identically, and with `class_id=` as another class in the same scene, which is what a
procedural EchoMod engine needs.

Ambiguous instances. Real label noise is instance-dependent: annotators (and models) err on images
that are genuinely hard. A share `ambiguous_fraction` of instances is therefore made hard on purpose,
by one of three kinds (`AMBIGUITY_KINDS`):
  blur       the object's silhouette is Gaussian-blurred (sigma = strength * radius), hiding corners;
  occlusion  a bar of another colour crosses the object (strength = share of the object hidden);
  deform     the contour is interpolated toward `CONFUSABLE[class]` with weight strength in
             [0.35, 0.65], so the object is really halfway between two classes.
`CONFUSABLE` maps each class to the visually closest one, so noise and classifier confusions have a
known structure to be measured against.

World version. `WORLD_VERSION` names the generator: any change to what an argument list renders bumps
it. It is an identity field of the loader (`load_shapes.identity`, see
`echobench.data.base.dataset_identity`), so every cell spec and EchoMod cache key of `shapes` records
`world`, and cells or cached images of another version are never mixed with this one's. A loader
asked for another version refuses: this code can render only its own.

Determinism. Only `np.random.default_rng` streams are used: the train part from
`default_rng([seed, 0])`, the test part from `default_rng([seed, 1])`, each background from its own
`default_rng(bg_seed)`. The same arguments give byte-identical arrays (for a given NumPy and OpenCV);
n_test never changes the train part (and n_train never the test part). Results are cached in-process
and returned read-only.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from echobench.errors import EchobenchError
from echobench.data.base import Dataset

CLASS_NAMES: tuple[str, ...] = (
    "circle", "ellipse", "triangle", "square", "pentagon",
    "hexagon", "star", "cross", "flower", "rhombus",
)  # fmt: skip

# class -> its visually closest class: the target of `deform` and the expected confusion.
CONFUSABLE: dict[str, str] = {
    "circle": "hexagon",  # a hexagon is a circle with 6 faint corners
    "ellipse": "circle",  # differ only by aspect ratio (0.6 vs 1)
    "triangle": "pentagon",  # both pointed, odd-fold polygons
    "square": "rhombus",  # both 4-cornered, differ by aspect ratio
    "pentagon": "hexagon",  # one corner apart
    "hexagon": "pentagon",
    "star": "flower",  # both 5-fold with deep notches; points vs rounded petals
    "cross": "square",  # a plus whose notches fill up becomes a diamond
    "flower": "star",
    "rhombus": "square",
}
CONFUSABLE_ID = np.array([CLASS_NAMES.index(CONFUSABLE[name]) for name in CLASS_NAMES], dtype=np.int64)
CONFUSABLE_ID.flags.writeable = False

AMBIGUITY_KINDS: tuple[str, ...] = ("none", "blur", "occlusion", "deform")
NONE, BLUR, OCCLUSION, DEFORM = range(4)

NUM_ANGLES = 120  # divisible by 3, 4, 5, 6 and 10, so every polygon vertex is sampled exactly
_THETA = np.arange(NUM_ANGLES) * (2 * np.pi / NUM_ANGLES)
_SUPERSAMPLE = 4
_SHIFT = 4  # fixed-point bits for cv2.fillPoly: sub-pixel vertex positions
_BASE_SIZE = 32  # pixel quantities below are for 32 px and scale with image_size
_RADIUS_RANGE = (7.0, 13.0)
_MARGIN = 0.75  # centre at least this many radii from the border: objects stay (mostly) inside
_BLUR_RANGE = (0.16, 0.3)  # sigma / radius; below ~0.15 the corners of a pentagon still show
_MORPH_RANGE = (0.35, 0.65)
WORLD_VERSION = 1  # bump on any change to the rendered images or labels (see "World version")
_OCC_HALF_WIDTH = (0.25, 0.4)  # bar half-width / radius
_OCC_OFFSET = 0.35  # |bar centre line - object centre| / radius, at most


def _polygon(angles_deg: list[float], radii: list[float]) -> np.ndarray:
    """r(theta) of the star-shaped polygon with the given vertices (polar), at `_THETA`."""
    a = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))
    p = np.stack([np.asarray(radii) * np.cos(a), np.asarray(radii) * np.sin(a)], axis=1)
    order = np.argsort(a % (2 * np.pi))
    p, a = p[order], a[order] % (2 * np.pi)
    # the edge crossed by each ray: the last vertex at or before theta (wrapping around)
    i = (np.searchsorted(a, _THETA, side="right") - 1) % len(a)
    p1, p2 = p[i], p[(i + 1) % len(a)]
    e = p2 - p1
    d = np.stack([np.cos(_THETA), np.sin(_THETA)], axis=1)
    # ray t*d meets p1 + s*e where t = (p1 x p2) / (d x e)
    return (p1[:, 0] * p2[:, 1] - p1[:, 1] * p2[:, 0]) / (d[:, 0] * e[:, 1] - d[:, 1] * e[:, 0])


def _regular(n: int, first_deg: float = 90.0) -> np.ndarray:
    return _polygon([first_deg + k * 360.0 / n for k in range(n)], [1.0] * n)


def _radial_table() -> np.ndarray:
    # Canonical orientations are chosen so that each class lines up with its CONFUSABLE class
    # (vertices of square/rhombus and arms of the cross on the axes; star tips and flower petals
    # together), which makes the `deform` interpolation a plausible in-between shape.
    t = _THETA
    w = 0.3  # half-width of the cross's arms
    cross_angles, cross_radii = [], []
    for arm in (0.0, 90.0, 180.0, 270.0):
        tip = math.degrees(math.atan2(w, 1.0))
        cross_angles += [arm - tip, arm + tip, arm + 45.0]
        cross_radii += [math.hypot(1.0, w), math.hypot(1.0, w), w * math.sqrt(2.0)]
    shapes = {
        "circle": np.ones_like(t),
        "ellipse": 1.0 / np.sqrt(np.cos(t) ** 2 + (np.sin(t) / 0.6) ** 2),
        "triangle": _regular(3),
        "square": _regular(4, 0.0),
        "pentagon": _regular(5),
        "hexagon": _regular(6),
        "star": _polygon([90.0 + 36.0 * k for k in range(10)], [1.0, 0.42] * 5),
        "cross": _polygon(cross_angles, cross_radii),
        "flower": 0.5 + 0.5 * np.abs(np.cos(2.5 * (t - np.pi / 2))),
        "rhombus": _polygon([0.0, 90.0, 180.0, 270.0], [1.0, 0.6, 1.0, 0.6]),
    }
    table = np.stack([shapes[name] for name in CLASS_NAMES])
    table /= table.max(axis=1, keepdims=True)  # max radius 1: `scale` is the object's radius
    table.flags.writeable = False
    return table


RADII = _radial_table()  # (10, NUM_ANGLES): r(theta) of each class at angles 2*pi*k/NUM_ANGLES


def radius(class_id: int, morph_target: int = -1, morph: float = 0.0) -> np.ndarray:
    """r(theta) of a class, optionally interpolated toward `morph_target` with weight `morph`."""
    r = RADII[class_id]
    if morph_target >= 0 and morph > 0:
        r = (1.0 - morph) * r + morph * RADII[morph_target]
    return r


def contour(class_id: int, morph_target: int = -1, morph: float = 0.0) -> np.ndarray:
    """The (NUM_ANGLES, 2) x, y points of a class's closed contour: centred at 0, max radius 1."""
    r = radius(class_id, morph_target, morph)
    return np.stack([r * np.cos(_THETA), r * np.sin(_THETA)], axis=1)


def object_alpha(
    image_size: int, class_id: int, cx: float, cy: float, scale: float, rotation: float,
    morph_target: int = -1, morph: float = 0.0, blur: float = 0.0,
) -> np.ndarray:  # fmt: skip
    """The object's anti-aliased coverage, (image_size, image_size) float32 in [0, 1].

    `blur` is a Gaussian sigma in units of the radius `scale`.
    """
    xy = contour(class_id, morph_target, morph)
    c, s = math.cos(rotation), math.sin(rotation)
    x = cx + scale * (c * xy[:, 0] - s * xy[:, 1])
    y = cy + scale * (s * xy[:, 0] + c * xy[:, 1])
    # cv2 puts integer coordinates at pixel centres; ours put them at pixel corners
    hi = np.stack([x, y], axis=1) * _SUPERSAMPLE - 0.5
    pts = np.round(hi * (1 << _SHIFT)).astype(np.int32)
    size_hi = image_size * _SUPERSAMPLE
    mask = np.zeros((size_hi, size_hi), np.uint8)
    cv2.fillPoly(mask, [pts], 255, lineType=cv2.LINE_8, shift=_SHIFT)
    alpha = cv2.resize(mask, (image_size, image_size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    if blur > 0:
        alpha = cv2.GaussianBlur(alpha, (0, 0), sigmaX=blur * scale, borderType=cv2.BORDER_CONSTANT)
    return alpha


def render_background(bg_seed: int, bg_colors: np.ndarray, image_size: int = _BASE_SIZE) -> np.ndarray:
    """A textured (H, W, 3) uint8 background: two colours mixed by low-frequency noise and stripes."""
    rng = np.random.default_rng(int(bg_seed))
    blobs = cv2.resize(rng.normal(size=(4, 4)), (image_size, image_size), interpolation=cv2.INTER_CUBIC)
    freq, angle, phase = rng.uniform(1.5, 5.0), rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi)
    stripes_weight = rng.uniform(0.0, 1.0)
    u = (np.arange(image_size) + 0.5) / image_size  # stripe frequency is per image: scale-free
    stripes = np.sin(2 * np.pi * freq * (u[None, :] * math.cos(angle) + u[:, None] * math.sin(angle)) + phase)
    field = (1.0 - stripes_weight) * blobs + stripes_weight * 1.5 * stripes
    mix = 1.0 / (1.0 + np.exp(-2.0 * field))
    c1, c2 = np.asarray(bg_colors, dtype=np.float64)
    return np.round(c1 + (c2 - c1) * mix[..., None]).astype(np.uint8)


def _over(image: np.ndarray, alpha: np.ndarray, color: np.ndarray) -> np.ndarray:
    return image + alpha[..., None] * (np.asarray(color, dtype=np.float32) - image)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def _occluder_alpha(
    image_size: int, cx: float, cy: float, angle: float, offset: float, half_width: float
) -> np.ndarray:
    """Coverage of an infinite bar through (cx, cy) + offset along its normal; 1 px anti-aliased edges."""
    u = np.arange(image_size, dtype=np.float32) + 0.5
    nx, ny = -math.sin(angle), math.cos(angle)
    d = (u[None, :] - cx) * nx + (u[:, None] - cy) * ny - offset
    return np.clip(half_width - np.abs(d) + 0.5, 0.0, 1.0).astype(np.float32)


def _render(hidden: dict[str, np.ndarray], i: int, class_id: int, image_size: int) -> tuple[np.ndarray, float]:
    """Image i of a hidden part drawn as `class_id`, and the share of the object an occluder hides."""
    kind, strength, scale = int(hidden["ambiguity"][i]), float(hidden["strength"][i]), float(hidden["scale"][i])
    cx, cy = float(hidden["cx"][i]), float(hidden["cy"][i])
    morph_target = int(hidden["morph_target"][i])
    if kind == DEFORM and morph_target == class_id:  # re-rendered as its own morph target: no morph left
        morph_target = -1
    alpha = object_alpha(
        image_size, class_id, cx, cy, scale, float(hidden["rotation"][i]),
        morph_target, strength if kind == DEFORM else 0.0, strength if kind == BLUR else 0.0,
    )  # fmt: skip
    background = render_background(hidden["bg_seed"][i], hidden["bg_colors"][i], image_size)
    image = _over(background.astype(np.float32), alpha, hidden["color"][i])
    hidden_share = 0.0
    if kind == OCCLUSION:
        bar = _occluder_alpha(
            image_size, cx, cy, float(hidden["occluder_angle"][i]),
            float(hidden["occluder_offset"][i]) * scale, float(hidden["occluder_width"][i]) * scale,
        )  # fmt: skip
        image = _over(image, bar, hidden["occluder_color"][i])
        hidden_share = float((alpha * bar).sum() / max(alpha.sum(), 1e-6))
    return _to_uint8(image), hidden_share


def render_instance(
    hidden: dict[str, np.ndarray], index: int, class_id: int | None = None, image_size: int = _BASE_SIZE
) -> np.ndarray:
    """Re-render image `index` of a hidden part (`extras["hidden"]["train"]`, say), same scene and
    ambiguity, as its own class (byte-identical to the dataset image) or as `class_id`.

    A `deform` instance re-rendered as another class keeps its morph toward its original target.
    """
    label = int(hidden["label"][index]) if class_id is None else int(class_id)
    if not 0 <= label < len(CLASS_NAMES):
        raise EchobenchError(f"shapes: class_id must be in [0, {len(CLASS_NAMES)}), got {label}")
    return _render(hidden, index, label, image_size)[0]


def _contrasting_colors(rng: np.random.Generator, against: np.ndarray, candidates: int = 8) -> np.ndarray:
    """Per row, the random colour (of `candidates`) farthest from all colours in `against` (n, m, 3)."""
    n = against.shape[0]
    options = rng.integers(0, 256, size=(n, candidates, 3))
    dist = np.linalg.norm(options[:, :, None, :] - against[:, None, :, :].astype(np.int64), axis=-1).min(axis=2)
    return options[np.arange(n), dist.argmax(axis=1)].astype(np.uint8)


def _draw_hidden(rng: np.random.Generator, n: int, image_size: int, ambiguous_fraction: float) -> dict[str, np.ndarray]:
    """All generating parameters of a part; how much each draw takes depends only on n and the fraction."""
    px = image_size / _BASE_SIZE
    label = rng.permutation(np.arange(n, dtype=np.int64) % len(CLASS_NAMES))  # balanced, random order
    scale = rng.uniform(*_RADIUS_RANGE, size=n) * px
    cx = rng.uniform(_MARGIN * scale, image_size - _MARGIN * scale)
    cy = rng.uniform(_MARGIN * scale, image_size - _MARGIN * scale)
    rotation = rng.uniform(0.0, 2 * np.pi, size=n)
    c1 = rng.integers(0, 256, size=(n, 3))
    # a second colour near the first: texture without overpowering the object
    c2 = np.clip(c1 + rng.normal(0.0, 60.0, size=(n, 3)), 0, 255).round().astype(np.int64)
    bg_colors = np.stack([c1, c2], axis=1).astype(np.uint8)
    color = _contrasting_colors(rng, bg_colors)
    bg_seed = rng.integers(0, 2**62, size=n, dtype=np.int64)

    ambiguity = np.zeros(n, dtype=np.int64)
    chosen = rng.permutation(n)[: int(round(ambiguous_fraction * n))]
    ambiguity[chosen] = rng.integers(1, len(AMBIGUITY_KINDS), size=len(chosen))
    blur = rng.uniform(*_BLUR_RANGE, size=n)
    morph = rng.uniform(*_MORPH_RANGE, size=n)
    occluded = ambiguity == OCCLUSION
    occluder_angle = np.where(occluded, rng.uniform(0.0, np.pi, size=n), 0.0)
    occluder_offset = np.where(occluded, rng.uniform(-_OCC_OFFSET, _OCC_OFFSET, size=n), 0.0)
    occluder_width = np.where(occluded, rng.uniform(*_OCC_HALF_WIDTH, size=n), 0.0)
    occluder_color = np.where(occluded[:, None], _contrasting_colors(rng, color[:, None, :]), 0).astype(np.uint8)

    strength = np.select([ambiguity == BLUR, ambiguity == DEFORM], [blur, morph], 0.0)
    return {
        "label": label,
        "cx": cx, "cy": cy, "scale": scale, "rotation": rotation, "color": color,
        "bg_colors": bg_colors, "bg_seed": bg_seed,
        "ambiguity": ambiguity, "strength": strength,  # occlusion strength is filled in when rendered
        "morph_target": np.where(ambiguity == DEFORM, CONFUSABLE_ID[label], -1),
        "occluder_angle": occluder_angle, "occluder_offset": occluder_offset,
        "occluder_width": occluder_width, "occluder_color": occluder_color,
    }  # fmt: skip


def _generate_part(rng: np.random.Generator, n: int, image_size: int, ambiguous_fraction: float):
    hidden = _draw_hidden(rng, n, image_size, ambiguous_fraction)
    images = np.empty((n, image_size, image_size, 3), dtype=np.uint8)
    for i in range(n):
        images[i], covered = _render(hidden, i, int(hidden["label"][i]), image_size)
        if hidden["ambiguity"][i] == OCCLUSION:
            hidden["strength"][i] = covered
    for array in (images, *hidden.values()):
        array.flags.writeable = False
    return images, hidden["label"], hidden


@functools.lru_cache(maxsize=8)
def _generate(n_train: int, n_test: int, seed: int, ambiguous_fraction: float, image_size: int):
    train = _generate_part(np.random.default_rng([seed, 0]), n_train, image_size, ambiguous_fraction)
    test = _generate_part(np.random.default_rng([seed, 1]), n_test, image_size, ambiguous_fraction)
    return train, test


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise EchobenchError(f"shapes: {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def load_shapes(
    root: Path | None = None,
    *,
    n_train: int = 10000,
    n_test: int = 2000,
    seed: int = 0,
    ambiguous_fraction: float = 0.2,
    image_size: int = 32,
    world: int = WORLD_VERSION,
) -> Dataset:
    """The shapes world for these arguments (`root` is unused: nothing is downloaded).

    The image and hidden arrays are shared with an in-process cache and read-only; the `Dataset`
    and its dicts are new on every call.
    """
    if world != WORLD_VERSION:
        raise EchobenchError(f"shapes: this echobench renders world version {WORLD_VERSION}, not {world!r}; results "
                             f"of another version need the echobench that made them (or recompute them without `world:`)")
    n_train = _check_int("n_train", n_train, 1)
    n_test = _check_int("n_test", n_test, 1)
    seed = _check_int("seed", seed, 0)
    image_size = _check_int("image_size", image_size, 16)  # below 16 px the shapes are unreadable
    if isinstance(ambiguous_fraction, bool) or not isinstance(ambiguous_fraction, (int, float, np.number)):
        raise EchobenchError(f"shapes: ambiguous_fraction must be a number in [0, 1], got {ambiguous_fraction!r}")
    ambiguous_fraction = float(ambiguous_fraction)
    if not 0.0 <= ambiguous_fraction <= 1.0:
        raise EchobenchError(f"shapes: ambiguous_fraction must be in [0, 1], got {ambiguous_fraction}")

    (train_x, train_y, train_h), (test_x, test_y, test_h) = _generate(
        n_train, n_test, seed, ambiguous_fraction, image_size
    )
    return Dataset(
        name="shapes",
        class_names=list(CLASS_NAMES),
        train_images=train_x,
        train_labels=train_y,
        test_images=test_x,
        test_labels=test_y,
        extras={
            "hidden": {"train": dict(train_h), "test": dict(test_h)},
            "world": {
                "version": WORLD_VERSION,
                "seed": seed,
                "ambiguous_fraction": ambiguous_fraction,
                "image_size": image_size,
                "confusable": dict(CONFUSABLE),
                "ambiguity_kinds": AMBIGUITY_KINDS,
            },
        },
    )


# Always part of the dataset's identity (`echobench.data.base.dataset_identity`).
load_shapes.identity = {"world": WORLD_VERSION}
