"""Image feature extractors for EchoSelect, in a registry.

A `FeatureExtractor` maps uint8 NHWC images to float32 features (N, D), in batches:

- ``open_clip``: open_clip `ViT-B-32` as the paper (§4.2: "CLIP ViT-B-32") and the released code
  (KevinCarpricorn/EchoAlign `clip_filter.py`: pretrained tag `laion2b_s34b_b79k`); `pretrained` is an
  option (`openai` for OpenAI's weights, `none` for random weights, e.g. for timing). Images are
  preprocessed as a batch of tensors (bicubic resize of the short side to 224 with antialiasing,
  centre crop, CLIP mean/std), which is open_clip's own preprocess pipeline applied to tensors instead
  of one PIL image at a time; half precision on GPU. `exact_released=true` runs the released
  `clip_filter.py`'s way instead: open_clip's own PIL preprocess on each image and the model in
  float32 on every device (slower; `echobench select` then also reports how many keep/replace
  decisions the fast path would have made differently at its τ: `echoselect.exact_released_differences`).
- ``shapes-hog``: the embedded extractor for the `shapes` world (no download): a histogram of oriented
  gradients of the grey image (Dalal–Triggs HOG in NumPy: 8 px cells, 9 bins, 2×2-cell blocks, on
  the image resized to 32 px) — it describes the object's outline, which is what a label change alters — centred by a fixed
  vector and L2-normalised, so cosine similarities use the whole [−1, 1] range as CLIP's do.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

from echobench.errors import EchobenchError
from echobench.registry import Registry


class FeatureExtractor(Protocol):
    name: str

    def config(self) -> dict[str, Any]: ...

    def extract(self, images: np.ndarray, progress=None) -> np.ndarray: ...


EXTRACTORS: Registry = Registry("extractor")


def default_extractor(dataset: str) -> str:
    return "shapes-hog" if dataset == "shapes" else "open_clip"


def extractor_default_tau(name: str, noise_rate: float) -> float:
    """The extractor's default τ: its low value below 37.5% noise, its high value above (for CLIP the
    paper's 0.4 at 30% and 0.52 at 45–50%; CIFAR-10N's ~17% random sets get 0.4 and worst 0.52)."""
    return tau_for_rate(EXTRACTORS.get(name).taus, noise_rate)


def tau_for_rate(taus: tuple[float, float], noise_rate: float) -> float:
    """The low threshold of a (low-noise, high-noise) pair below 37.5% noise, the high one above (the
    paper's 0.4 at 30% and 0.52 at 45–50%, split half-way between 30 and 45)."""
    low, high = taus
    return low if noise_rate < 0.375 else high


def make_extractor(name: str, options: dict[str, Any] | None = None, device: str = "cpu") -> FeatureExtractor:
    cls = EXTRACTORS.get(name)
    return cls.create(dict(options or {}), device)


def extractor_options(cls, options: dict[str, Any], what: str):
    known = set(cls.__dataclass_fields__)
    unknown = sorted(set(options) - known)
    if unknown:
        raise EchobenchError(f"{what} has no option(s) {unknown}; known: {sorted(known)}")
    return cls(**options)


def check_images(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise EchobenchError(f"feature extraction needs uint8 images of shape (N, H, W, 3); got {images.dtype} {images.shape}")
    return images


# --- the embedded extractor ---------------------------------------------------------------------------

@dataclass(frozen=True)
class HogOptions:
    size: int = 32  # images are resized to size × size before HOG
    cell: int = 8
    bins: int = 9


def hog(grey: np.ndarray, cell: int, bins: int) -> np.ndarray:
    """Histograms of oriented gradients of a batch of grey images (N, H, W) → (N, D), Dalal–Triggs style:
    central-difference gradients, unsigned orientation in `bins` bins (linear interpolation between
    the two nearest), magnitude-weighted per `cell`×`cell` cell, blocks of 2×2 cells with a stride of
    one cell, each L2-Hys normalised (clip at 0.2, renormalise)."""
    g = grey.astype(np.float32)
    gx = np.zeros_like(g)
    gy = np.zeros_like(g)
    gx[:, :, 1:-1] = g[:, :, 2:] - g[:, :, :-2]
    gy[:, 1:-1, :] = g[:, 2:, :] - g[:, :-2, :]
    mag = np.hypot(gx, gy)
    pos = (np.arctan2(gy, gx) % np.pi) / np.pi * bins - 0.5  # bin centres at (k + 0.5)·180°/bins
    lo = np.floor(pos)
    frac = pos - lo
    lo = lo.astype(np.int64) % bins
    hi = (lo + 1) % bins
    n, h, w = g.shape
    cy, cx = h // cell, w // cell
    hist = np.zeros((n, cy, cx, bins), dtype=np.float32)
    cell_y = np.minimum(np.arange(h) // cell, cy - 1)[:, None]
    cell_x = np.minimum(np.arange(w) // cell, cx - 1)[None, :]
    flat = ((np.arange(n)[:, None, None] * cy + cell_y) * cx + cell_x) * bins
    np.add.at(hist.reshape(-1), (flat + lo).ravel(), (mag * (1 - frac)).ravel())
    np.add.at(hist.reshape(-1), (flat + hi).ravel(), (mag * frac).ravel())
    blocks = np.concatenate([hist[:, :-1, :-1], hist[:, 1:, :-1], hist[:, :-1, 1:], hist[:, 1:, 1:]], axis=-1)
    blocks /= np.sqrt((blocks**2).sum(-1, keepdims=True) + 1e-6)
    blocks = np.minimum(blocks, 0.2)
    blocks /= np.sqrt((blocks**2).sum(-1, keepdims=True) + 1e-6)
    return blocks.reshape(n, -1)


class ShapesHog:
    """HOG features of the object outline; deterministic, fast, no download (see the module doc).

    Its similarities live on another scale than CLIP's (a modification that keeps the class keeps
    S ≈ 0.9, one that changes it gives S ≈ 0.5–0.65), so it carries its own default thresholds:
    τ = 0.86 below 37.5% noise and 0.87 above, the thresholds maximising Youden's J (true-clean rate +
    true-noisy rate) at 30% and 50% instance-dependent noise on an independent world
    (`echobench select shapes --noise instance:0.3 --dataset-option seed=777 --dataset-option n_train=4000`,
    and instance:0.5; the runs use world seed 0). As in the paper, the threshold rises with the noise rate.
    """

    name = "shapes-hog"
    taus = (0.86, 0.87)  # (below 37.5% noise, above)

    def __init__(self, options: HogOptions):
        if options.size < 2 * options.cell or options.bins < 2:
            raise EchobenchError(f"extractor 'shapes-hog': size must be at least 2 cells and bins ≥ 2, got {options}")
        self.options = options

    @classmethod
    def create(cls, options: dict[str, Any], device: str) -> "ShapesHog":
        return cls(extractor_options(HogOptions, options, "extractor 'shapes-hog'"))

    def config(self) -> dict[str, Any]:
        return {"extractor": self.name, **asdict(self.options)}

    def extract(self, images: np.ndarray, progress=None) -> np.ndarray:
        import cv2

        images = check_images(images)
        s = self.options.size
        grey = np.stack([cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) for img in images]) if len(images) else np.zeros((0, s, s))
        if grey.shape[1:] != (s, s):
            grey = np.stack([cv2.resize(g, (s, s), interpolation=cv2.INTER_AREA) for g in grey])
        feats = hog(grey, self.options.cell, self.options.bins)
        if progress is not None:
            progress(len(images))
        # HOG entries are non-negative, so raw cosines all sit near 1; centring by a fixed vector (each
        # entry's value for a block of uniform histograms) spreads them over [-1, 1] without looking at
        # the data, so a feature never depends on which other images were in the batch.
        feats -= 1.0 / np.sqrt(4 * self.options.bins)
        feats /= np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
        return feats.astype(np.float32)


EXTRACTORS.add("shapes-hog", ShapesHog)


def _clip_load_error(options: "ClipOptions", exc: Exception) -> str:
    text = f"{type(exc).__name__}: {exc}"
    if "download" not in text.lower() and not isinstance(exc, OSError):  # an unknown model name or tag
        return f"open_clip could not build {options.model!r} with pretrained={options.pretrained!r} ({text})"
    cache = os.environ.get("HF_HUB_CACHE") or os.path.join(os.environ.get("HF_HOME", "~/.cache/huggingface"), "hub")
    return (f"the CLIP weights {options.model}/{options.pretrained} are not available and could not be downloaded "
            f"({text.splitlines()[0][:200]}). They are fetched into the Hugging Face cache ({cache}) on first use; with "
            "no network, copy them there, or pass a local checkpoint file: --extractor-option "
            "pretrained=/path/to/open_clip_model.safetensors")


# --- open_clip --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ClipOptions:
    model: str = "ViT-B-32"
    pretrained: str = "laion2b_s34b_b79k"  # the released code's tag; "openai" or "none" also work
    batch_size: int = 256
    exact_released: bool = False  # PIL preprocessing + float32, as the released clip_filter.py


def create_clip(options: "ClipOptions"):
    """open_clip's (model, preprocess) for the options, or an EchobenchError saying what is missing."""
    try:
        import open_clip
    except ImportError:
        raise EchobenchError("extractor 'open_clip' needs open_clip_torch: `pip install 'echobench[clip]'`") from None
    pretrained = None if options.pretrained.lower() in ("", "none") else options.pretrained
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(options.model, pretrained=pretrained)
    except (RuntimeError, OSError, ValueError) as exc:
        raise EchobenchError(_clip_load_error(options, exc)) from None
    return model, preprocess


class OpenClip:
    """open_clip image tower, batched (see the module doc)."""

    name = "open_clip"
    taus = (0.4, 0.52)  # the paper's τ: 30% noise, 45% and 50% noise

    def __init__(self, options: ClipOptions, device: str = "cpu", built=None):
        """`built`: an already created (model, preprocess) pair (benchmarks share one random model)."""
        import torch

        self.options, self.device = options, torch.device(device)
        model, preprocess = built if built is not None else create_clip(options)
        self.pil_preprocess = preprocess
        self.half = self.device.type == "cuda" and not options.exact_released
        self.model = model.visual.to(self.device).eval()
        if self.half:
            self.model = self.model.half()
        size = model.visual.image_size
        self.size = size[0] if isinstance(size, (tuple, list)) else int(size)
        norm = next(t for t in preprocess.transforms if type(t).__name__ == "Normalize")
        self.mean = torch.tensor(norm.mean).view(1, 3, 1, 1).to(self.device)
        self.std = torch.tensor(norm.std).view(1, 3, 1, 1).to(self.device)

    @classmethod
    def create(cls, options: dict[str, Any], device: str) -> "OpenClip":
        options = dict(options)
        if "exact_released" in options:
            options["exact_released"] = as_bool(options["exact_released"], "exact_released")
        return cls(extractor_options(ClipOptions, options, "extractor 'open_clip'"), device)

    def config(self) -> dict[str, Any]:
        exact = {"exact_released": True} if self.options.exact_released else {}  # older configs unchanged
        return {"extractor": self.name, "model": self.options.model, "pretrained": self.options.pretrained, **exact}

    def preprocess_released(self, images_uint8: np.ndarray):
        """The released clip_filter.py's input: open_clip's PIL preprocess (resize, centre crop,
        to tensor, normalise) of each image, stacked, float32."""
        import torch
        from PIL import Image

        return torch.stack([self.pil_preprocess(Image.fromarray(image)) for image in images_uint8]).to(self.device)

    def preprocess(self, images_uint8):
        """uint8 NHWC tensor → the CLIP input: bicubic resize to 224 (short side), centre crop, normalise."""
        import torch.nn.functional as F

        x = images_uint8.to(self.device).permute(0, 3, 1, 2).float() / 255.0
        h, w = x.shape[-2:]
        scale = self.size / min(h, w)
        nh, nw = max(self.size, round(h * scale)), max(self.size, round(w * scale))
        x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True).clamp_(0, 1)
        top, left = (nh - self.size) // 2, (nw - self.size) // 2
        x = x[:, :, top : top + self.size, left : left + self.size]
        return (x - self.mean) / self.std

    def extract(self, images: np.ndarray, progress=None) -> np.ndarray:
        import torch

        images = check_images(images)
        out = []
        with torch.inference_mode():
            for start in range(0, len(images), self.options.batch_size):
                part = np.ascontiguousarray(images[start : start + self.options.batch_size])
                x = self.preprocess_released(part) if self.options.exact_released else self.preprocess(torch.from_numpy(part))
                feats = self.model(x.half() if self.half else x)
                out.append(feats.float().cpu())
                if progress is not None:
                    progress(x.shape[0])
        return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


EXTRACTORS.add("open_clip", OpenClip)


def as_bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise EchobenchError(f"extractor option {name}: expected true or false, got {value!r}")
