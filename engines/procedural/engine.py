"""A procedural EchoMod engine for the embedded `shapes` world: OpenCV scene recovery + re-rendering.

EchoMod (the paper's §4.1, Algorithm 1) rewrites every training image X into an X' that matches its
(noisy) label while keeping X's structure: Stable Diffusion + ControlNet conditioned on the Canny
edges of X and the prompt "a photo of {label}". This engine does the same job for `shapes` with no
download, by inverting the world's renderer from the pixels alone (it never sees the hidden
parameters):

1. Object colour. A `shapes` object is flat-coloured, so its colour is among the most frequent exact
   colours of the image; a blurred object has few exact repeats, so the pixel least like the image
   border is a candidate too. The world draws object colours far from both background colours and
   keeps objects mostly inside the image, so the candidate far from most border pixels and rarely on
   the border itself is the object (a flat patch of background is near many border pixels, an
   occluding bar crosses the border twice).
2. Silhouette and background. Pixels nearer the object colour than the background form the object's
   core (connected components; specks dropped). The core grown by one pixel is removed with
   `cv2.inpaint` (Navier-Stokes), which gives the background behind the object, and each removed
   pixel's anti-aliased coverage alpha is its least-squares position on the segment from that
   background to the object colour.
3. Pose. The centre is the centroid of alpha (every class of the world is point-symmetric or regular,
   so centroid = contour centre; for an object cut by the image border, the shift the border causes
   to the fitted object's centroid is undone). `cv2.warpPolar` unrolls alpha around the centre, and
   integrating each ray gives the silhouette's radial profile p(theta) at the world's 120 contour
   angles, to a fraction of a pixel thanks to the anti-aliasing; rays that leave the image are left
   out. Every class c of the world's own table `shapes.RADII` at every rotation step k (3 degrees) is
   fitted by least squares, p ~ s * r_c(theta - k), as circular correlations (FFT); the best (c, k)
   is the apparent class, its s the radius (`scale`), and a parabola through the neighbouring
   residuals refines the rotation below one step. The contours are fitted as the profile sees them
   at that radius (thin tips look rounder on small objects), which keeps 16 px stars from reading as
   flowers.
4. Rotation of the target. A silhouette fixes the rotation only up to its class's symmetry (a
   square's modulo 90 degrees, a circle's not at all). Of the rotations that symmetry leaves open,
   the target class is drawn at the one whose contour, at the fitted radius, best overlaps the
   observed silhouette: the choice that keeps the most of the image's structure, which is what
   ControlNet's edge conditioning aims at. For the apparent class itself this is the apparent
   rotation, so the output re-draws the input.
5. Rendering. The target class is drawn with `shapes.object_alpha` (the world's contours and
   anti-aliasing) at the recovered centre, radius and rotation, in the recovered colour, over the
   inpainted background, in the generated-image style (below). If no object is found, the pose is
   drawn from the sample's seed.

Why this serves EchoSelect (§4.2): when the target label is the apparent class the output is nearly
the input (high feature similarity); when it differs, the object's shape changes while its pose,
colour and background stay (lower similarity). That gap between clean and noisy labels is what
EchoSelect thresholds.

Deliberate deviations from ControlNet:
- Structure is kept as a fitted pose (centre, radius, rotation, colour) of the object's outer
  contour, not as a Canny edge map: the outer contour is the part of the edge map that matters in
  these images, and a pose lets the target be drawn with the world's exact contours instead of a
  learned prior.
- No pre-trained model and no text: "a photo of {label}" becomes the label's contour in
  `shapes.RADII`, so only `shapes` (with its class names) is supported.
- The distribution shift of generated images is explicit and tunable (`style_shift`, `config.py`):
  a blurred background texture, a softer silhouette, more saturation, less contrast and a per-sample
  tint of the object colour: the kind of shift diffusion outputs show against the photos they
  imitate (smoother textures, other colour statistics). The paper's ablation (Table 3) shows that
  training on modified instances alone costs accuracy; this shift reproduces that on `shapes`.
- The only randomness is that tint (and the pose when nothing is found), drawn from
  `np.random.default_rng(seed)` of the sample; each sample is processed on its own, so a sample's
  output never depends on the other samples of its batch.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

from echobench.data import shapes
from echobench.errors import EchobenchError
from echobench.engines.procedural.config import ProceduralConfig

ENGINE_NAME = "procedural"
# Bumped whenever the algorithm changes what it outputs: it is part of `config()`, hence of the cache key.
ENGINE_VERSION = 1

_BASE_SIZE = 32  # the config's pixel amounts are for 32 px images
_NUM_ANGLES = shapes.NUM_ANGLES
_ANGLE_STEP = 2 * math.pi / _NUM_ANGLES
_SAME_COLOR_L1 = 12  # L1 distance (0..765) under which two pixels count as the same flat colour
# `shapes.object_alpha` fills polygons at 4x with their boundary pixels included, so rendered objects
# reach ~0.11 px beyond their contour (measured on renders at known poses); subtracting it makes the
# fitted radius the renderer's `scale` parameter (within 0.3% at 16, 32 and 64 px), not the drawn extent.
_RASTER_GROWTH = 0.11
# sideways spread (px) of an edge's coverage in the radial profile (1 px area-downsampling, bilinear
# sampling, the matte): fitted on the engine's own mattes of 2,000 images at 16 and 32 px
_LATERAL_SPREAD = 0.35
_CENTRE_TOLERANCE = 0.05  # px: a smaller clipping shift of the centroid is not worth a second fit
_MIN_RAYS = 12  # below this many uncensored rays the fit uses all rays (a mostly clipped object)
_KERNEL3 = np.ones((3, 3), np.uint8)
_KERNEL5 = np.ones((5, 5), np.uint8)


def _symmetry_steps() -> list[np.ndarray]:
    """Per class, the rotation steps k under which its contour maps onto itself (all 120 for the
    circle, {0, 60} for the ellipse, ...): the rotations its silhouette cannot tell apart."""
    radii = shapes.RADII
    return [
        np.flatnonzero([np.abs(np.roll(r, k) - r).max() < 1e-9 for k in range(_NUM_ANGLES)]) for r in radii
    ]


_SYMMETRY = _symmetry_steps()
_COS = np.cos(np.arange(_NUM_ANGLES) * _ANGLE_STEP)
_SIN = np.sin(np.arange(_NUM_ANGLES) * _ANGLE_STEP)
with np.errstate(divide="ignore"):  # rays along an axis never meet the walls parallel to them
    _INV_ABS_COS = np.where(np.abs(_COS) > 1e-9, 1.0 / np.abs(_COS), np.inf)
    _INV_ABS_SIN = np.where(np.abs(_SIN) > 1e-9, 1.0 / np.abs(_SIN), np.inf)
# Gauss-Hermite quadrature of a standard normal, for the sideways spread of coverage (`_template_spectra`)
_SPREAD_NODES, _SPREAD_WEIGHTS = np.polynomial.hermite_e.hermegauss(7)
_SPREAD_WEIGHTS = _SPREAD_WEIGHTS / _SPREAD_WEIGHTS.sum()


@dataclass(frozen=True, eq=False)
class ClassFit:
    """The least-squares fit p(theta) ~ scale * r_c(theta - k * step) of a radial profile p.

    `cross`, `norm` (10, 120) and `energy` are the fit's sums for every class c and step k, kept so
    that the target class can be placed against the same profile (`target_rotation`).
    """

    apparent: int  # the best-fitting class
    step: int  # its best rotation step
    sub_step: float  # parabolic refinement of the step, in [-0.5, 0.5]
    scale: float  # the fitted radius, pixels
    error: float  # residual / energy, in [0, 1]: 0 is a perfect fit
    cross: np.ndarray  # sum w * p * r_ck
    norm: np.ndarray  # sum w * r_ck^2
    energy: float  # sum w * p^2

    @property
    def rotation(self) -> float:
        return ((self.step + self.sub_step) * _ANGLE_STEP) % (2 * math.pi)


@dataclass(frozen=True, eq=False)
class Scene:
    """What was recovered from one image. Coordinates follow `shapes` (pixel corners at integers)."""

    found: bool
    cx: float
    cy: float
    color: np.ndarray  # (3,) float32, the object's colour
    background: np.ndarray  # (H, W, 3) float32, the image with the object inpainted away
    fit: ClassFit | None = None  # None when no object was found

    @property
    def apparent(self) -> int:
        return self.fit.apparent if self.fit else -1

    @property
    def scale(self) -> float:
        return self.fit.scale if self.fit else 0.0

    @property
    def rotation(self) -> float:
        return self.fit.rotation if self.fit else 0.0


# ---------------------------------------------------------------- scene recovery


def _border_pixels(image: np.ndarray) -> np.ndarray:
    return np.concatenate([image[0], image[-1], image[1:-1, 0], image[1:-1, -1]])


def _l1_distances(pixels: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """(k, n) int32 L1 distances between (n, 3) int32 pixels and (k, 3) colours (channel by channel:
    much faster than a reduction over an axis of length 3)."""
    return (np.abs(pixels[:, 0] - colors[:, 0, None]) + np.abs(pixels[:, 1] - colors[:, 1, None])
            + np.abs(pixels[:, 2] - colors[:, 2, None]))  # fmt: skip


def _color_candidates(pixels: np.ndarray, border: np.ndarray, count: int) -> np.ndarray:
    """(k, 3) int32: the `count` most frequent exact colours of (n, 3) int32 `pixels`, and the pixel
    least like the `border` pixels."""
    keys = (pixels[:, 0] << 16) | (pixels[:, 1] << 8) | pixels[:, 2]
    values, counts = np.unique(keys, return_counts=True)
    top = values[np.argsort(-counts, kind="stable")[:count]]
    frequent = np.stack([top >> 16, (top >> 8) & 255, top & 255], axis=1)
    # the border is mostly background (objects stay mostly inside): its mean is a background colour
    reference = border.mean(axis=0).round().astype(np.int32)[None]
    extremal = pixels[_l1_distances(pixels, reference)[0].argmax()]
    return np.concatenate([frequent, extremal[None]])


def _object_color(image: np.ndarray, count: int) -> tuple[np.ndarray, float, np.ndarray]:
    """The object's colour, its contrast with the background (L1) and the (H, W) L1 distance of every
    pixel to it."""
    h, w, _ = image.shape
    pixels = image.reshape(-1, 3).astype(np.int32)
    border = _border_pixels(image).astype(np.int32)
    colors = _color_candidates(pixels, border, count)
    to_border = _l1_distances(border, colors)  # (k, border pixels)
    # The world picks object colours far from both background colours, and the border is mostly
    # background: the object's colour is far from most border pixels (a flat patch of background is
    # near many of them) and rarely on the border itself (an occluding bar crosses it twice).
    # (Chosen over ring contrast alone, which found the object's colour less often on ambiguous images.)
    far = np.partition(to_border, len(border) // 4, axis=1)[:, len(border) // 4]  # lower quartile
    on_border = (to_border < _SAME_COLOR_L1).mean(axis=1)
    best = int((far * (1.0 - on_border)).argmax())
    dist = _l1_distances(pixels, colors[best : best + 1])[0].reshape(h, w)
    region = (dist < _SAME_COLOR_L1).astype(np.uint8)
    ring = cv2.dilate(region, _KERNEL5) > cv2.dilate(region, _KERNEL3)
    # the ring 2 px out is background around a crisp object but still inside a blurred one's tails:
    # there the border's distance is the better measure of how far the background is
    contrast = max(float(dist[ring].mean()) if ring.any() else 0.0, float(far[best]))
    return colors[best].astype(np.float32), contrast, dist


def _object_core(dist: np.ndarray, contrast: float) -> np.ndarray:
    """uint8 mask of the pixels nearer the object colour than the background, without stray specks."""
    core = (dist < 0.5 * contrast).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(core, connectivity=8)
    if n <= 2:
        return core
    areas = stats[1:, cv2.CC_STAT_AREA]
    # an occluding bar can split the object in two large parts; background specks are tiny
    keep = np.concatenate([[False], areas >= max(2, 0.2 * areas.max())])
    return keep[labels].astype(np.uint8)


def _matte(image: np.ndarray, color: np.ndarray, core: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """(alpha (H, W) float32, background (H, W, 3) float32): the object's coverage, and the image
    with the object inpainted away."""
    removed = cv2.dilate(core, _KERNEL3)  # the core plus its anti-aliased rim
    # Navier-Stokes inpainting: on these smooth backgrounds it was both faster and closer to the true
    # background than Telea's method (rim pixels, 500 images: mean error 2.8 vs 4.1 at radius 1)
    background = cv2.inpaint(image, removed, radius, cv2.INPAINT_NS).astype(np.float32)
    pixels = image.astype(np.float32)
    toward = color - background
    # image = background + alpha * (color - background), solved for alpha in the least-squares sense
    along = np.einsum("ijk,ijk->ij", pixels - background, toward)
    alpha = np.clip(along / np.maximum(np.einsum("ijk,ijk->ij", toward, toward), 1.0), 0.0, 1.0) * removed
    return alpha.astype(np.float32), background


def _radial_profile(alpha: np.ndarray, cx: float, cy: float) -> tuple[np.ndarray, np.ndarray]:
    """(p, w) at the world's 120 contour angles: p = integral of alpha along each ray from (cx, cy)
    (OpenCV pixel-centre coordinates), w = 0 where the silhouette reaches the image border."""
    h, w = alpha.shape
    max_radius = 0.75 * max(h, w)
    samples = int(math.ceil(2 * max_radius))  # half-pixel steps
    polar = cv2.warpPolar(alpha, (samples, _NUM_ANGLES), (cx, cy), max_radius,
                          cv2.INTER_LINEAR | cv2.WARP_POLAR_LINEAR | cv2.WARP_FILL_OUTLIERS)  # fmt: skip
    step = max_radius / samples
    # trapezoid rule from rho = 0 (where alpha is ~1 for a found object)
    profile = step * (polar.sum(axis=1).astype(np.float64) - 0.5 * polar[:, 0])
    profile = np.maximum(profile - _RASTER_GROWTH, 0.0)
    # distance from the centre to the image's edge along each ray (pixel edges at -0.5 and size - 0.5)
    to_x = np.where(_COS > 0, w - 0.5 - cx, cx + 0.5) * _INV_ABS_COS
    to_y = np.where(_SIN > 0, h - 0.5 - cy, cy + 0.5) * _INV_ABS_SIN
    weights = (profile < np.minimum(to_x, to_y) - 1.0).astype(np.float64)
    if weights.sum() < _MIN_RAYS:
        weights[:] = 1.0
    return profile, weights


def _parabola_offset(left: float, mid: float, right: float) -> float:
    """Where a parabola through three equally spaced residuals has its minimum, in steps from mid."""
    curvature = left - 2.0 * mid + right
    if curvature <= 1e-12:
        return 0.0
    return min(max(0.5 * float(left - right) / float(curvature), -0.5), 0.5)


def _template_bucket(scale: float) -> int:
    """Radii are bucketed at 1/16 octave for the template cache: the templates change slowly with it."""
    return int(round(16 * math.log2(max(scale, 0.5))))


@functools.lru_cache(maxsize=256)
def _template_spectra(bucket: int) -> tuple[np.ndarray, np.ndarray]:
    """rfft of each class's contour, and of its square, as the radial profile sees them on an object
    whose radius is 2 ** (bucket / 16) pixels.

    Area-downsampling and bilinear sampling spread coverage sideways by ~`_LATERAL_SPREAD` px, which
    averages r(theta) over an arc of that length: thin features (a star's tips) look rounder the
    smaller the object. Fitting the exact contours instead, 108 of 200 stars at 16 px read as flowers
    (class accuracy 91.4% on 2,000 clean images); with these templates 13 do (99.3%). At 32 px both
    read 100% right.
    """
    scale, radii = 2.0 ** (bucket / 16), shapes.RADII
    spread = _LATERAL_SPREAD / (scale * radii) / _ANGLE_STEP  # (10, 120), in steps
    at = np.arange(_NUM_ANGLES)[None, :, None] + spread[..., None] * _SPREAD_NODES  # (10, 120, 7)
    below = np.floor(at).astype(np.int64)
    frac = at - below
    rows = np.arange(len(radii))[:, None, None]
    values = (1 - frac) * radii[rows, below % _NUM_ANGLES] + frac * radii[rows, (below + 1) % _NUM_ANGLES]
    templates = values @ _SPREAD_WEIGHTS
    return np.conj(np.fft.rfft(templates)), np.conj(np.fft.rfft(templates * templates))


def _fit(profile: np.ndarray, weights: np.ndarray) -> ClassFit:
    """Weighted least squares p ~ s * t_c(theta - k) for every class c and step k, as circular
    correlations computed with the FFT, against the templates `t_c` for the object's size."""
    templates, squares = _template_spectra(_template_bucket(float((weights * profile).max())))
    spectra = np.fft.rfft(np.stack([weights * profile, weights]))
    cross, norm = np.fft.irfft(np.stack([templates * spectra[0], squares * spectra[1]]), n=_NUM_ANGLES)
    norm = np.maximum(norm, 1e-9)  # FFT round-off around a zero weight sum
    energy = float((weights * profile * profile).sum())
    residual = energy - cross * cross / norm
    apparent, step = np.unravel_index(int(residual.argmin()), residual.shape)
    row = residual[apparent]
    sub_step = _parabola_offset(row[step - 1], row[step], row[(step + 1) % _NUM_ANGLES])
    return ClassFit(
        int(apparent), int(step), sub_step, float(cross[apparent, step] / norm[apparent, step]),
        float(np.clip(row[step] / max(energy, 1e-12), 0.0, 1.0)), cross, norm, energy,
    )  # fmt: skip


def _fit_pose(alpha: np.ndarray, cx: float, cy: float) -> ClassFit:
    """Fit the classes to the radial profile of `alpha` around (cx, cy) (OpenCV coordinates)."""
    return _fit(*_radial_profile(alpha, cx, cy))


def _clipping_offset(size: int, fit: ClassFit, cx: float, cy: float) -> tuple[float, float]:
    """How far the image border moves the centroid of the fitted object away from its centre."""
    predicted = shapes.object_alpha(size, fit.apparent, cx + 0.5, cy + 0.5, fit.scale, fit.rotation)
    moments = cv2.moments(predicted)
    if moments["m00"] <= 0:
        return 0.0, 0.0
    return moments["m10"] / moments["m00"] - cx, moments["m01"] / moments["m00"] - cy


def _touches_border(alpha: np.ndarray) -> bool:
    return bool(_border_pixels(alpha).max() > 0.05)


def recover_scene(image: np.ndarray, config: ProceduralConfig = ProceduralConfig()) -> Scene:
    """Object colour, silhouette, background and pose of one (H, W, 3) uint8 `shapes` image."""
    h, w, _ = image.shape
    px = h / _BASE_SIZE
    color, contrast, dist = _object_color(image, config.color_candidates)
    core = _object_core(dist, contrast)
    alpha, background = _matte(image, color, core, config.inpaint_radius * px)
    moments = cv2.moments(alpha)
    if contrast <= 0 or moments["m00"] < config.min_object_share * h * w:
        return Scene(False, w / 2, h / 2, color, image.astype(np.float32))
    # OpenCV coordinates (pixel centres at integers) until the Scene is built
    cx, cy = moments["m10"] / moments["m00"], moments["m01"] / moments["m00"]
    fit = _fit_pose(alpha, cx, cy)
    if _touches_border(alpha):
        # a clipped object's centroid lies inside its centre: undo the shift the fitted object shows
        dx, dy = _clipping_offset(h, fit, cx, cy)
        if math.hypot(dx, dy) > _CENTRE_TOLERANCE:
            cx, cy = cx - dx, cy - dy
            fit = _fit_pose(alpha, cx, cy)
    return Scene(True, cx + 0.5, cy + 0.5, color, background, fit)


def target_rotation(scene: Scene, target: int) -> float:
    """The rotation at which `target` is drawn: of the rotations the apparent class's symmetry leaves
    open, the one whose contour (at the fitted radius) best overlaps the observed silhouette."""
    fit = scene.fit
    steps = (fit.step + _SYMMETRY[fit.apparent]) % _NUM_ANGLES
    s = fit.scale
    residual = fit.energy - 2 * s * fit.cross[target, steps] + s * s * fit.norm[target, steps]
    best = int(steps[int(residual.argmin())])  # ties keep the first: the apparent step itself
    return ((best + fit.sub_step) * _ANGLE_STEP) % (2 * math.pi)


# ---------------------------------------------------------------- rendering with the style shift


def _soften(array: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(array, (0, 0), sigmaX=sigma) if sigma > 0 else array


def _stylize(image: np.ndarray, saturation: float, contrast: float) -> np.ndarray:
    """Scale each pixel's distance from its grey value (channel mean) by 1 + saturation, then its
    distance from mid-grey by 1 + contrast: one affine colour map, applied by `cv2.transform`."""
    if not saturation and not contrast:
        return image
    colour = (1.0 + saturation) * np.eye(3) - saturation / 3.0 * np.ones((3, 3))
    matrix = np.concatenate([(1.0 + contrast) * colour, np.full((3, 1), -127.5 * contrast)], axis=1)
    return cv2.transform(image, matrix)


def _fallback_pose(rng: np.random.Generator, size: int) -> tuple[float, float, float, float]:
    """No object in sight: centre, radius and rotation drawn from the seed, in the world's ranges."""
    cx, cy = rng.uniform(0.35 * size, 0.65 * size, size=2)
    return float(cx), float(cy), 0.3 * size, float(rng.uniform(0.0, 2 * math.pi))


def render_target(scene: Scene, target: int, seed: int, config: ProceduralConfig) -> np.ndarray:
    """The scene re-rendered with `target` as its object, in the generated-image style, uint8."""
    size = scene.background.shape[0]
    px, k = size / _BASE_SIZE, config.style_shift
    rng = np.random.default_rng(int(seed))
    tint = rng.normal(0.0, 1.0, size=3)  # drawn first and always, so it never depends on `found`
    if scene.found:
        pose = (scene.cx, scene.cy, scene.scale, target_rotation(scene, target))
        color = scene.color
    else:
        pose = _fallback_pose(rng, size)
        # the corner of the RGB cube farthest from the image's median colour stands out from it
        color = np.where(np.median(scene.background.reshape(-1, 3), axis=0) > 127.5, 0.0, 255.0)
    alpha = shapes.object_alpha(size, int(target), *pose)
    alpha = _soften(alpha, k * config.edge_softness * px)
    background = _soften(scene.background, k * config.background_blur * px)
    color = np.clip(color + k * config.color_jitter * tint, 0.0, 255.0).astype(np.float32)
    image = background + alpha[..., None] * (color - background)
    image = _stylize(image, k * config.saturation_gain, k * config.contrast_gain)
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- the Modifier


class ProceduralModifier:
    """EchoMod for `shapes`: recover each image's scene, re-draw its object as the target class."""

    def __init__(self, image_size: int, config: ProceduralConfig):
        self.image_size = image_size
        self.settings = config

    def config(self) -> dict[str, Any]:
        return {"engine": ENGINE_NAME, "version": ENGINE_VERSION, "dataset": "shapes",
                "image_size": self.image_size, **asdict(self.settings), **_implementation()}  # fmt: skip

    def recover(self, images: np.ndarray) -> list[Scene]:
        """The scene recovered from each image (for analysis and tests; `generate` uses the same)."""
        images = self._check_images(images)
        return [recover_scene(image, self.settings) for image in images]

    def generate(self, images: np.ndarray, labels: np.ndarray, seeds: np.ndarray) -> np.ndarray:
        images = self._check_images(images)
        labels = self._check_vector("labels", labels, len(images), 0, len(shapes.CLASS_NAMES) - 1)
        seeds = self._check_vector("seeds", seeds, len(images), 0, None)
        out = np.empty_like(images)
        for i, (image, label, seed) in enumerate(zip(images, labels.tolist(), seeds.tolist())):
            out[i] = render_target(recover_scene(image, self.settings), label, seed, self.settings)
        return out

    def _check_images(self, images: Any) -> np.ndarray:
        expected = (self.image_size, self.image_size, 3)
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 \
                or images.shape[1:] != expected:  # fmt: skip
            got = f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else type(images).__name__
            raise EchobenchError(f"procedural engine: images must be uint8 (N, {', '.join(map(str, expected))}), got {got}")
        return np.ascontiguousarray(images)  # OpenCV wants each image contiguous

    @staticmethod
    def _check_vector(name: str, values: Any, n: int, low: int, high: int | None) -> np.ndarray:
        values = np.asarray(values)
        if values.shape != (n,) or (n and not np.issubdtype(values.dtype, np.integer)):
            raise EchobenchError(f"procedural engine: {name} must be {n} integers (one per image), "
                                 f"got {values.dtype} {values.shape}")  # fmt: skip
        if n and (values.min() < low or (high is not None and values.max() > high)):
            bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
            raise EchobenchError(f"procedural engine: {name} must be {bound}, got {values.min()}..{values.max()}")
        return values


# ---------------------------------------------------------------- the factory


def _config_from_options(options: dict[str, Any]) -> ProceduralConfig:
    """The default config with `options` applied by field name, coerced and checked like every
    engine's options (`EngineSettings.from_options`; command-line values may arrive as strings)."""
    config = ProceduralConfig.from_options(options)
    _check_ranges(config)
    return config


def _check_ranges(config: ProceduralConfig) -> None:
    non_negative = ("style_shift", "background_blur", "edge_softness", "color_jitter", "inpaint_radius")
    for name in non_negative:
        if not math.isfinite(getattr(config, name)) or getattr(config, name) < 0:
            raise EchobenchError(f"procedural engine: option {name!r} must be >= 0, got {getattr(config, name)}")
    if config.color_candidates < 1:
        raise EchobenchError(f"procedural engine: option 'color_candidates' must be >= 1, got {config.color_candidates}")
    if not 0.0 <= config.min_object_share < 1.0:
        raise EchobenchError(f"procedural engine: option 'min_object_share' must be in [0, 1), got {config.min_object_share}")
    for name in ("saturation_gain", "contrast_gain"):
        gain = getattr(config, name)
        if not math.isfinite(gain) or config.style_shift * gain <= -1.0:  # a factor <= 0 inverts the image
            raise EchobenchError(f"procedural engine: style_shift * {name} must be > -1, got {config.style_shift * gain}")


@functools.lru_cache(maxsize=1)
def _implementation() -> dict[str, str]:
    """What else decides the output: the source of this engine and of the world's renderer, and the
    OpenCV version (inpainting and resampling). Part of `config()`, hence of the cache key, so that an
    edited engine never reads images an older version wrote under the same settings (regenerating
    `shapes` pairs costs seconds)."""
    import hashlib
    from pathlib import Path

    digest = hashlib.sha256()
    for path in (Path(__file__), Path(__file__).with_name("config.py"), Path(shapes.__file__)):
        digest.update(path.read_bytes())
    return {"source_sha256": digest.hexdigest()[:16], "opencv": cv2.__version__}


def make_modifier(dataset: str, class_names: list[str], image_size: int, options: dict[str, Any],
                  device: str = "cpu") -> ProceduralModifier:  # fmt: skip
    """The procedural engine for `dataset` (only `shapes`). `device` is accepted and unused: it runs
    on CPU, and its output does not depend on the device."""
    if dataset != "shapes":
        raise EchobenchError(
            f"the procedural engine re-renders the embedded 'shapes' world only, not {dataset!r}: "
            "use a diffusion engine (e.g. --engine eager) for real images"
        )
    if list(class_names) != list(shapes.CLASS_NAMES):
        raise EchobenchError(f"procedural engine: class names must be the shapes world's {list(shapes.CLASS_NAMES)}, "
                             f"got {list(class_names)}")  # fmt: skip
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 16:
        raise EchobenchError(f"procedural engine: image_size must be an integer >= 16 (as for shapes), got {image_size!r}")
    return ProceduralModifier(int(image_size), _config_from_options(dict(options or {})))
