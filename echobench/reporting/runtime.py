"""EchoMod's runtime in GPU-hours: the paper's appendix D beside a compute model and our measurements.

The paper ("Can We Treat Noisy Labels as Accurate?", appendix D "Runtime Analysis") reports EchoMod's
cost in GPU-hours: Table 6 on an NVIDIA V100-SXM2 (CIFAR-10 at 256/512/768 px × batch 1/8/16, and an
estimate for Clothing1M at batch 16), Table 7 on a V100-SXM2 and an RTX 4090 at 512 px, batch 8.
ControlNet with the Canny preprocessor (for Stable Diffusion 1.5, which the paper does not name), 20
diffusion steps (appendix C), mixed precision. This module holds that transcription (`PAPER_TABLE6`,
`PAPER_TABLE7`), the GPUs' peak throughput (`GPUS`), and a compute model that puts the paper's rows,
our own measurements and other GPUs on one scale.

Compute per image. At 512² (a 64² latent), counted from the public model configs: the SD 1.5 UNet
costs ≈ 803 GFLOP per step and sample, the canny ControlNet ≈ 283, the VAE decoder ≈ 2,515 once per
image; the CLIP text encoder runs once per class (the prompt cache of `echobench.echoalign.diffusion`)
and is left out. Classifier-free guidance doubles the batch both networks see (diffusers feeds the
ControlNet the doubled batch unless guess mode is on), so per image

    steps × 2 × (UNet + ControlNet) + VAE decoder = 20 × 2 × (803 + 283) + 2,515 ≈ 45,955 GFLOP ≈ 46 TFLOP.

Other resolutions. Convolutions, linear projections, feed-forward layers and cross-attention (over 77
text tokens) cost a fixed amount per latent pixel, so they scale linearly with the pixel count. The
self-attention products (QKᵀ and the weighted sum of V, 4·N²·d FLOP per layer for N tokens of width d)
scale with the *square* of the pixel count. The model splits each network's 512² total into these two
parts, counting the quadratic part from the configs (`*_SELF_ATTENTION`): ≈ 15% of the UNet, ≈ 17% of
the ControlNet and ≈ 1.4% of the VAE decoder at 512². Scaling everything linearly in pixels is the
simpler approximation; it underestimates 768² by ≈ 16% and overestimates 256² by ≈ 13%
(`compute_model()` lists both). Neither counts memory traffic, which dominates at small batches.

Efficiency and projections. Seconds per image on GPU g = compute / (peak_g × efficiency), with peak_g
the dense (no sparsity) fp16/bf16 tensor-core peak from the vendor's datasheet (`GPUS`). The floor is
the time at 100% efficiency. The efficiency is calibrated from one measurement (the measured seconds
per image on a known GPU) or from the paper's own rows: Table 6's V100 at 512², batch 16 (17.2 GPU-h
for 50,000 images → 1.24 s/image) is ≈ 30% of the V100's 125 TFLOP/s, Table 7's RTX 4090 at batch 8
(8.5 GPU-h → 0.61 s/image) ≈ 46% of its 165.2. A projection to another GPU assumes the *same*
efficiency there. That is the model's weakest assumption: the paper's two GPUs at the same batch size
(Table 7) already differ by 1.6× in efficiency, and larger GPUs need larger batches (or compiled
engines) to stay busy. Projections are labelled as such everywhere.

Measurement files (`load_measurements`, `echobench report --runtime FILE ...`) hold one measurement,
a list of them, or an object whose "measurements" key holds the list. A measurement is a JSON object:

    {"device": "NVIDIA H100 80GB HBM3",  # the device's name, e.g. torch.cuda.get_device_name()
     "gpu": "h100",                       # a key of GPUS, or null: then guessed from "device"
     "resolution": 512,                   # generated image side in px (default 512)
     "batch_size": 8,                     # images per generation batch (optional)
     "steps": 20,                         # diffusion steps (default 20)
     "cfg": true,                         # classifier-free guidance on (default true)
     "seconds_per_image": 0.21,           # required: wall seconds per generated image
     "engine": "eager"}                   # the EchoMod engine (optional)

One of "device" and "gpu" is required; other keys are ignored, so a benchmark may add its own.
A measurement on a GPU outside `GPUS` is reported as measured, without efficiency or projections.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from echobench.errors import EchobenchError
from echobench.registry import Registry
from echobench.files import atomic_write_json, atomic_write_text

# --- the paper's appendix D ---------------------------------------------------------------------------

PAPER = "Can We Treat Noisy Labels as Accurate? (EchoAlign)"
PAPER_WHERE = "appendix D, Runtime Analysis, Tables 6 and 7"

# Images EchoMod rewrites: every CIFAR-10 training image, and the paper's round figure for Clothing1M's
# noisy training set (its Clothing1M rows are estimates, not runs: appendix D says so).
DATASET_IMAGES = {"cifar10": 50_000, "clothing1m": 1_000_000}
DATASET_NAMES = {"cifar10": "CIFAR-10", "clothing1m": "Clothing1M"}

# Table 6: NVIDIA V100-SXM2, GPU-hours. (dataset, resolution px, batch size, GPU-hours); None is the
# paper's "/" (768² at batch 16 was not run: out of GPU memory). Clothing1M has only a batch-16 column.
PAPER_TABLE6 = (
    ("cifar10", 256, 1, 31.5), ("cifar10", 256, 8, 5.5), ("cifar10", 256, 16, 4.5),
    ("cifar10", 512, 1, 35.1), ("cifar10", 512, 8, 18.5), ("cifar10", 512, 16, 17.2),
    ("cifar10", 768, 1, 68.5), ("cifar10", 768, 8, 51.9), ("cifar10", 768, 16, None),
    ("clothing1m", 256, 16, 129.5), ("clothing1m", 512, 16, 504.5), ("clothing1m", 768, 16, None),
)
TABLE6_GPU = "v100"

# Table 7: 512², batch 8, GPU-hours. (gpu key, dataset, GPU-hours)
PAPER_TABLE7 = (
    ("v100", "cifar10", 18.5), ("v100", "clothing1m", 504.5),
    ("rtx4090", "cifar10", 8.5), ("rtx4090", "clothing1m", 338.2),
)
TABLE7_RESOLUTION, TABLE7_BATCH = 512, 8

PAPER_NOTES = (
    "Clothing1M rows are the paper's estimates for the same GPU, not runs (appendix D).",
    "Per image, the Clothing1M estimates are slower than the CIFAR-10 runs of the same setting "
    "(V100, 512², batch 16: 1.82 s vs 1.24 s); the paper does not say why.",
    "Table 7's V100 Clothing1M value (504.5, stated at batch 8) equals Table 6's batch-16 value.",
    "768² at batch 16 ('/') was not run: GPU memory (V100-SXM2, 32 GB).",
)

# --- GPUs ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GPU:
    """A GPU's dense peak tensor throughput for fp16/bf16 inputs (TFLOP/s, no 2:4 sparsity)."""

    key: str
    name: str
    peak_tflops: float
    precision: str
    source: str


GPUS: Registry[GPU] = Registry("gpu")
GPU_KEYS = ("v100", "rtx4090", "a100", "h100", "h200")  # report order: oldest and slowest first
for _gpu in (
    GPU("v100", "NVIDIA V100-SXM2 (32 GB)", 125.0, "fp16 tensor cores",
        "NVIDIA Tesla V100 datasheet (SXM2: 125 tensor TFLOPS); the paper's appendix D quotes the same"),
    GPU("rtx4090", "NVIDIA GeForce RTX 4090 (24 GB)", 165.2, "fp16 tensor cores, fp32 accumulate",
        "the paper's appendix D (165.2 tensor TFLOPS); NVIDIA Ada Lovelace architecture whitepaper "
        "(165.2 dense with fp32 accumulate, 330.3 with fp16 accumulate)"),
    GPU("a100", "NVIDIA A100 (40/80 GB, SXM or PCIe)", 312.0, "bf16/fp16 tensor cores",
        "NVIDIA A100 datasheet (312 TFLOPS bf16/fp16 tensor, 624 with sparsity)"),
    GPU("h100", "NVIDIA H100 SXM (80 GB)", 989.0, "bf16/fp16 tensor cores",
        "NVIDIA H100 datasheet (SXM: 1,979 TFLOPS bf16/fp16 tensor with sparsity, 989 dense; "
        "the PCIe card is lower)"),
    GPU("h200", "NVIDIA H200 SXM (141 GB)", 989.0, "bf16/fp16 tensor cores",
        "NVIDIA H200 datasheet (1,979 TFLOPS bf16/fp16 tensor with sparsity, 989 dense: H100 SXM's "
        "compute with more, faster memory, which this compute-only model does not see)"),
):
    GPUS.add(_gpu.key, _gpu)
del _gpu

# Device names (as torch.cuda.get_device_name() spells them) → GPUS keys. Only unambiguous names:
# the PCIe/NVL variants of V100, H100 and H200 have lower peaks, so they are not guessed.
_DEVICE_PATTERNS = (
    ("v100", ("v100-sxm2", "v100 sxm2")),
    ("rtx4090", ("rtx 4090", "rtx4090")),
    ("a100", ("a100",)),
    ("h100", ("h100 80gb hbm3", "h100 sxm", "h100-sxm")),
    ("h200", ("h200",)),
)
_NOT_GUESSED = ("pcie", "nvl")


def infer_gpu(device: str) -> str | None:
    """The `GPUS` key of a device name, or None when the name does not say which peak applies."""
    name = device.lower()
    for key, patterns in _DEVICE_PATTERNS:
        if any(p in name for p in patterns) and (key == "a100" or not any(v in name for v in _NOT_GUESSED)):
            return key
    return None


# --- compute model ------------------------------------------------------------------------------------

BASE_RESOLUTION = 512
STEPS = 20
UNET_GFLOP_512 = 803.0  # per denoising step and sample, at 512² (64² latent)
CONTROLNET_GFLOP_512 = 283.0  # per step and sample
VAE_DECODER_GFLOP_512 = 2515.0  # once per image

# Self-attention layers at 512²: (latent side, channels, layers). SD 1.5's UNet has one transformer
# layer per attention block, two per down block and three per up block at the 64², 32² and 16² levels
# (channels 320, 640, 1280) and one in the 8² mid block; the ControlNet copies the down blocks and the
# mid block; the VAE decoder has one single-head attention in its 64² mid block (512 channels).
UNET_SELF_ATTENTION = ((64, 320, 5), (32, 640, 5), (16, 1280, 5), (8, 1280, 1))
CONTROLNET_SELF_ATTENTION = ((64, 320, 2), (32, 640, 2), (16, 1280, 2), (8, 1280, 1))
VAE_DECODER_SELF_ATTENTION = ((64, 512, 1),)


def _attention_gflop_512(levels: tuple) -> float:
    """The quadratic part at 512²: QKᵀ and softmax(QKᵀ)·V, each N²·d multiply-adds, per layer."""
    return sum(layers * 4 * (side * side) ** 2 * dim for side, dim, layers in levels) / 1e9


def _scaled(total_512: float, attention: tuple, resolution: int, linear: bool) -> float:
    scale = (resolution / BASE_RESOLUTION) ** 2  # pixel count relative to 512²
    if linear:
        return total_512 * scale
    quadratic = _attention_gflop_512(attention)
    return (total_512 - quadratic) * scale + quadratic * scale**2


def per_image_breakdown(resolution: int = BASE_RESOLUTION, steps: int = STEPS, cfg: bool = True,
                        linear: bool = False) -> dict[str, float]:
    """GFLOP per generated image: UNet and ControlNet over all steps (×2 with CFG), VAE decode, total."""
    factor = steps * (2 if cfg else 1)
    unet = factor * _scaled(UNET_GFLOP_512, UNET_SELF_ATTENTION, resolution, linear)
    controlnet = factor * _scaled(CONTROLNET_GFLOP_512, CONTROLNET_SELF_ATTENTION, resolution, linear)
    vae = _scaled(VAE_DECODER_GFLOP_512, VAE_DECODER_SELF_ATTENTION, resolution, linear)
    return {"unet": unet, "controlnet": controlnet, "vae_decoder": vae, "total": unet + controlnet + vae}


def per_image_gflop(resolution: int = BASE_RESOLUTION, steps: int = STEPS, cfg: bool = True) -> float:
    """GFLOP to generate one image (the module docstring's model; ≈ 45,955 at 512², 20 steps, CFG)."""
    return per_image_breakdown(resolution, steps, cfg)["total"]


def _gpu(key: str) -> GPU:
    # Keys are lower case; "H100" means h100. An unknown key raises unknown_name_error (did-you-mean).
    return GPUS.get(key.lower() if key.lower() in GPUS else key)


def floor_seconds(gpu: str, resolution: int = BASE_RESOLUTION, steps: int = STEPS, cfg: bool = True) -> float:
    """Seconds per image at 100% of `gpu`'s dense peak: no engine can be faster."""
    return per_image_gflop(resolution, steps, cfg) / (_gpu(gpu).peak_tflops * 1000.0)


def efficiency(seconds_per_image: float, gpu: str, resolution: int = BASE_RESOLUTION, steps: int = STEPS,
               cfg: bool = True) -> float:
    """Fraction of `gpu`'s peak that a measured `seconds_per_image` sustains (the floor / the measurement)."""
    _check_seconds(seconds_per_image)
    return floor_seconds(gpu, resolution, steps, cfg) / seconds_per_image


def gpu_hours(seconds_per_image: float, n_images: int) -> float:
    """GPU-hours to generate `n_images` at `seconds_per_image` on one GPU (the paper's unit)."""
    return seconds_per_image * n_images / 3600.0


def seconds_per_image(hours: float, n_images: int) -> float:
    """The inverse of `gpu_hours`: what a GPU-hours figure implies per image."""
    return hours * 3600.0 / n_images


def project(measured_s_per_image: float, measured_gpu: str, target_gpu: str, *,
            resolution: int = BASE_RESOLUTION, steps: int = STEPS, cfg: bool = True,
            target_resolution: int | None = None, target_steps: int | None = None) -> float:
    """Seconds per image on `target_gpu`, from a measurement on `measured_gpu`, at the same efficiency.

    The target setting defaults to the measured one; another resolution or step count rescales by the
    compute model. A projection, not a measurement: efficiency differs between architectures.
    """
    _check_seconds(measured_s_per_image)
    peak_ratio = _gpu(measured_gpu).peak_tflops / _gpu(target_gpu).peak_tflops
    compute_ratio = (per_image_gflop(target_resolution or resolution, target_steps or steps, cfg)
                     / per_image_gflop(resolution, steps, cfg))
    return measured_s_per_image * peak_ratio * compute_ratio


def _check_seconds(value: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < math.inf:
        raise EchobenchError(f"seconds per image must be a positive number, got {value!r}")


# --- the transcription as documents -------------------------------------------------------------------

def _derived(hours: float | None, dataset: str) -> dict[str, Any]:
    s = None if hours is None else round(seconds_per_image(hours, DATASET_IMAGES[dataset]), 4)
    return {"seconds_per_image": s}


def paper_runtime() -> dict[str, Any]:
    """The transcription of the paper's Tables 6 and 7 (`reports/reference/paper_runtime.json`)."""
    return {
        "source": {"paper": PAPER, "where": PAPER_WHERE,
                   "setting": "ControlNet with the Canny preprocessor, 20 diffusion steps "
                              "(appendix C), mixed precision; the paper names no base model (the public canny "
                              "ControlNet is for Stable Diffusion 1.5)"},
        "unit": "GPU-hours",
        "missing": "null = the paper's '/' (not run)",
        "images": dict(DATASET_IMAGES),
        "derived": "derived values are computed here, not printed in the paper: "
                   "seconds_per_image = gpu_hours × 3600 / images",
        "table6": {
            "caption": "Comparison of runtime at different settings using an NVIDIA V100-SXM2.",
            "gpu": TABLE6_GPU,
            "rows": [{"dataset": d, "resolution": r, "batch_size": b, "gpu_hours": h, "derived": _derived(h, d)}
                     for d, r, b, h in PAPER_TABLE6],
        },
        "table7": {
            "caption": "Comparison of runtime at different computing performance.",
            "resolution": TABLE7_RESOLUTION, "batch_size": TABLE7_BATCH,
            "rows": [{"gpu": g, "dataset": d, "gpu_hours": h, "derived": _derived(h, d)} for g, d, h in PAPER_TABLE7],
        },
        "notes": list(PAPER_NOTES),
    }


def gpus_document() -> dict[str, Any]:
    """The GPU peaks the projections use (`reports/reference/gpus.json`)."""
    return {"unit": "TFLOP/s", "what": "dense peak tensor-core throughput for fp16/bf16 inputs (no sparsity)",
            "gpus": {k: {"name": g.name, "peak_tflops": g.peak_tflops, "precision": g.precision, "source": g.source}
                     for k in GPU_KEYS for g in [GPUS.get(k)]}}


def write_reference(out_dir: str | Path) -> None:
    """Write paper_runtime.json and gpus.json into `out_dir`, keys in reading order (not sorted)."""
    for name, doc in (("paper_runtime.json", paper_runtime()), ("gpus.json", gpus_document())):
        atomic_write_text(Path(out_dir) / name, json.dumps(doc, indent=2, ensure_ascii=False) + "\n")


# --- measurements -------------------------------------------------------------------------------------

def _int_field(m: dict, key: str, default: int | None, where: str) -> int | None:
    value = m.get(key)
    if value is None:  # absent or null: the default
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise EchobenchError(f"{where}: {key!r} must be a positive integer, got {value!r}")
    return value


def _str_field(m: dict, key: str, where: str) -> str | None:
    value = m.get(key)
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise EchobenchError(f"{where}: {key!r} must be a non-empty string or null, got {value!r}")
    return value


def normalize_measurement(m: Any, where: str = "measurement") -> dict[str, Any]:
    """A checked measurement with defaults filled in and `gpu` resolved (see the module docstring)."""
    if not isinstance(m, dict):
        raise EchobenchError(f"{where}: a measurement must be a JSON object, got {type(m).__name__}")
    if "seconds_per_image" not in m:
        raise EchobenchError(f"{where}: 'seconds_per_image' is missing (keys given: {', '.join(sorted(m)) or 'none'})")
    try:
        _check_seconds(m["seconds_per_image"])
    except EchobenchError as exc:
        raise EchobenchError(f"{where}: {exc}") from None
    device, gpu = _str_field(m, "device", where), _str_field(m, "gpu", where)
    if device is None and gpu is None:
        raise EchobenchError(f"{where}: give 'device' (the device's name) or 'gpu' (one of {', '.join(GPU_KEYS)})")
    guessed = gpu is None
    if guessed:
        gpu = infer_gpu(device)
    else:
        try:
            gpu = _gpu(gpu).key
        except EchobenchError as exc:
            raise EchobenchError(f"{where}: {exc}") from None
    cfg = m.get("cfg", True)
    if not isinstance(cfg, bool):
        raise EchobenchError(f"{where}: 'cfg' must be true or false, got {cfg!r}")
    # Normalizing twice keeps the flag: a checked measurement carries "gpu" and its "gpu_guessed".
    guessed = (guessed and gpu is not None) or m.get("gpu_guessed") is True
    return {"device": device or _gpu(gpu).name, "gpu": gpu, "gpu_guessed": guessed,
            "resolution": _int_field(m, "resolution", BASE_RESOLUTION, where),
            "batch_size": _int_field(m, "batch_size", None, where),
            "steps": _int_field(m, "steps", STEPS, where), "cfg": cfg,
            "seconds_per_image": float(m["seconds_per_image"]), "engine": _str_field(m, "engine", where)}


def _as_list(data: Any, where: str) -> list:
    if isinstance(data, dict) and "measurements" in data:
        data = data["measurements"]
        if not isinstance(data, list):
            raise EchobenchError(f"{where}: 'measurements' must be a list")
    return data if isinstance(data, list) else [data]


def normalize_measurements(data: Any, where: str = "measurement") -> list[dict[str, Any]]:
    """One measurement, a list of them or {"measurements": [...]} → a list of checked measurements."""
    items = _as_list(data, where)
    if not items:
        raise EchobenchError(f"{where}: holds no measurement")
    return [normalize_measurement(m, where if len(items) == 1 else f"{where}, measurement {i + 1}")
            for i, m in enumerate(items)]


def load_measurements(paths: list[str | Path]) -> list[dict[str, Any]]:
    """The checked measurements of every file in `paths`, in order."""
    out = []
    for path in paths:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise EchobenchError(f"cannot read measurement file {path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise EchobenchError(f"measurement file {path} is not UTF-8 text") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise EchobenchError(f"measurement file {path} is not valid JSON: {exc.msg} "
                                 f"(line {exc.lineno}, column {exc.colno})") from None
        out.extend(normalize_measurements(data, str(path)))
    return out


# --- the report ---------------------------------------------------------------------------------------

def _hours(s: float) -> dict[str, float]:
    return {d: round(gpu_hours(s, n), 2) for d, n in DATASET_IMAGES.items()}


def _estimate(gpu: str, s: float, kind: str, **extra: Any) -> dict[str, Any]:
    return {"gpu": gpu, "kind": kind, "seconds_per_image": round(s, 4), "gpu_hours": _hours(s), **extra}


def compute_model() -> dict[str, Any]:
    """The compute model's constants and its per-image TFLOP at the paper's resolutions."""
    per_resolution = []
    for r in (256, 512, 768):
        split, linear = per_image_breakdown(r), per_image_breakdown(r, linear=True)
        per_resolution.append({"resolution": r, "tflop": round(split["total"] / 1000, 3),
                               "tflop_linear_in_pixels": round(linear["total"] / 1000, 3),
                               "breakdown_gflop": {k: round(v, 1) for k, v in split.items()}})
    return {
        "formula": "steps × (2 with CFG) × (UNet + ControlNet per step) + VAE decoder",
        "steps": STEPS, "cfg": True,
        "gflop_512": {"unet_per_step": UNET_GFLOP_512, "controlnet_per_step": CONTROLNET_GFLOP_512,
                      "vae_decoder": VAE_DECODER_GFLOP_512},
        "self_attention_gflop_512": {"unet": round(_attention_gflop_512(UNET_SELF_ATTENTION), 1),
                                     "controlnet": round(_attention_gflop_512(CONTROLNET_SELF_ATTENTION), 1),
                                     "vae_decoder": round(_attention_gflop_512(VAE_DECODER_SELF_ATTENTION), 1)},
        "scaling": "linear in pixel count, except self-attention products, quadratic in pixel count",
        "per_image": per_resolution,
    }


def _paper_rows() -> dict[str, list[dict[str, Any]]]:
    """Tables 6 and 7 with derived seconds per image and the efficiency they imply (derived)."""
    def row(gpu: str, dataset: str, r: int, b: int, h: float | None) -> dict[str, Any]:
        s = None if h is None else seconds_per_image(h, DATASET_IMAGES[dataset])
        return {"gpu": gpu, "dataset": dataset, "resolution": r, "batch_size": b, "gpu_hours": h,
                "seconds_per_image": None if s is None else round(s, 4),
                "efficiency": None if s is None else round(efficiency(s, gpu, r), 4)}

    return {"table6": [row(TABLE6_GPU, d, r, b, h) for d, r, b, h in PAPER_TABLE6],
            "table7": [row(g, d, TABLE7_RESOLUTION, TABLE7_BATCH, h) for g, d, h in PAPER_TABLE7]}


def paper_efficiencies() -> dict[str, dict[str, Any]]:
    """The paper-implied efficiencies used for calibration: CIFAR-10 runs at 512² (not the estimates)."""
    v100 = seconds_per_image(17.2, DATASET_IMAGES["cifar10"])  # Table 6, 512², batch 16
    rtx = seconds_per_image(8.5, DATASET_IMAGES["cifar10"])  # Table 7, 512², batch 8
    return {"v100": {"source": "Table 6, CIFAR-10, 512², batch 16", "seconds_per_image": round(v100, 4),
                     "efficiency": round(efficiency(v100, "v100"), 4)},
            "rtx4090": {"source": "Table 7, CIFAR-10, 512², batch 8", "seconds_per_image": round(rtx, 4),
                        "efficiency": round(efficiency(rtx, "rtx4090"), 4)}}


def _paper_cifar10_hours(gpu: str, resolution: int, batch_size: int | None) -> float | None:
    """The paper's CIFAR-10 GPU-hours at this GPU and setting, if it has that cell."""
    if gpu == TABLE6_GPU:
        for d, r, b, h in PAPER_TABLE6:
            if (d, r, b) == ("cifar10", resolution, batch_size):
                return h
    if (resolution, batch_size) == (TABLE7_RESOLUTION, TABLE7_BATCH):
        for g, d, h in PAPER_TABLE7:
            if (g, d) == (gpu, "cifar10"):
                return h
    return None


def _measured(m: dict[str, Any]) -> dict[str, Any]:
    """One measurement: its GPU-hours, efficiency and projections to every GPU at its own setting."""
    s, setting = m["seconds_per_image"], {"resolution": m["resolution"], "steps": m["steps"], "cfg": m["cfg"]}
    row = {**m, "gpu_hours": _hours(s), "kind": "measured"}
    if m["gpu"] is None:
        row["note"] = "GPU not in the peak table: no efficiency or projections (give 'gpu' to calibrate)"
        return row
    row["floor_seconds"] = round(floor_seconds(m["gpu"], **setting), 4)
    row["efficiency"] = round(efficiency(s, m["gpu"], **setting), 4)
    like_paper = m["steps"] == STEPS and m["cfg"]
    row["estimates"] = []
    for target in GPU_KEYS:
        paper = _paper_cifar10_hours(target, m["resolution"], m["batch_size"]) if like_paper else None
        if target == m["gpu"]:
            row["estimates"].append(_estimate(target, s, "measured", paper_cifar10_gpu_hours=paper))
        else:
            projected = project(s, m["gpu"], target, **setting)
            row["estimates"].append(_estimate(target, projected, "projection", paper_cifar10_gpu_hours=paper))
    return row


def runtime_report(measurement: dict | list | None = None) -> dict[str, Any]:
    """The runtime report as a JSON-able document: the paper's tables, the compute model, floors,
    paper-calibrated projections and, given one or more measurements (see the module docstring), our
    measured rows with their projections to every GPU in `GPUS`."""
    measurements = [] if measurement is None else normalize_measurements(measurement)
    efficiencies = paper_efficiencies()
    floors = [_estimate(g, floor_seconds(g), "floor", peak_tflops=GPUS.get(g).peak_tflops) for g in GPU_KEYS]
    calibrated = [{"gpu": g, "kind": "projection",
                   **{f"at_{k}_efficiency": _estimate(g, floor_seconds(g) / e["efficiency"], "projection")
                      for k, e in efficiencies.items()}} for g in GPU_KEYS]
    return {
        "title": "EchoMod runtime: the paper's appendix D beside the compute model and our measurements",
        "source": {"paper": PAPER, "where": PAPER_WHERE, "gpu_peaks": "vendor datasheets (see gpus)"},
        "images": dict(DATASET_IMAGES),
        "compute_model": compute_model(),
        "gpus": gpus_document()["gpus"],
        "paper": {**_paper_rows(), "notes": list(PAPER_NOTES),
                  "derived": "seconds_per_image and efficiency are derived here from the paper's GPU-hours"},
        "paper_efficiencies": efficiencies,
        "floors": floors,
        "paper_calibrated_projections": calibrated,
        "measurement_given": bool(measurements),
        "measurements": [_measured(m) for m in measurements],
    }


# --- Markdown -----------------------------------------------------------------------------------------

def _fmt(value: float | None, spec: str, missing: str = "/") -> str:
    return missing if value is None else format(value, spec)


def _pct(fraction: float | None) -> str:
    return _fmt(None if fraction is None else 100 * fraction, ".1f")


def _span(low: dict[str, Any], high: dict[str, Any], spec: str, *path: str) -> str:
    """"a – b" for one value of two estimates, e.g. _span(x, y, ".1f", "gpu_hours", "cifar10")."""
    a, b = low, high
    for key in path:
        a, b = a[key], b[key]
    return f"{a:{spec}} – {b:{spec}}"


def _table(rows: list[list[Any]], headers: list[str], text_columns: int = 1) -> str:
    """A pipe table: the first `text_columns` columns left-aligned, numbers right-aligned as written."""
    from tabulate import tabulate

    align = ["left"] * text_columns + ["right"] * (len(headers) - text_columns)
    return tabulate(rows, headers, tablefmt="pipe", colalign=align, disable_numparse=True)


def _md_compute(doc: dict[str, Any]) -> list[str]:
    cm = doc["compute_model"]
    g, att = cm["gflop_512"], cm["self_attention_gflop_512"]
    rows = [[f"{p['resolution']}²", f"{p['tflop']:.1f}", f"{p['tflop_linear_in_pixels']:.1f}"]
            for p in cm["per_image"]]
    return [
        "## Compute model\n",
        f"Per image: {cm['steps']} steps × 2 (classifier-free guidance doubles the batch) × (UNet "
        f"{g['unet_per_step']:g} + ControlNet {g['controlnet_per_step']:g} GFLOP per step) + VAE decoder "
        f"{g['vae_decoder']:,g} GFLOP, at 512² (counted from the public configs; the text encoder runs once "
        "per class and is left out).\n",
        "Other resolutions: linear in pixel count, except the self-attention products, which grow with the "
        f"square of it (at 512²: UNet {att['unet']:g}, ControlNet {att['controlnet']:g}, VAE decoder "
        f"{att['vae_decoder']:g} GFLOP). Purely linear scaling is shown for comparison.\n",
        _table(rows, ["resolution", "TFLOP per image", "linear-in-pixels approximation"]) + "\n",
    ]


def _md_paper(doc: dict[str, Any]) -> list[str]:
    p = doc["paper"]
    derived = ["GPU-hours (paper)", "s/image (derived)", "% of peak (derived)"]

    def values(r: dict[str, Any]) -> list[str]:
        return [_fmt(r["gpu_hours"], "g"), _fmt(r["seconds_per_image"], ".3f"), _pct(r["efficiency"])]

    rows6 = [[DATASET_NAMES[r["dataset"]], f"{r['resolution']}²", r["batch_size"], *values(r)] for r in p["table6"]]
    rows7 = [[GPUS.get(r["gpu"]).name, DATASET_NAMES[r["dataset"]], *values(r)] for r in p["table7"]]
    return [
        "## The paper's Table 6 (NVIDIA V100-SXM2, GPU-hours)\n",
        "s/image and % of peak are derived here (GPU-hours × 3600 / images; compute model / peak); "
        "'/' is the paper's (not run).\n",
        _table(rows6, ["dataset", "resolution", "batch", *derived]) + "\n",
        f"## The paper's Table 7 ({TABLE7_RESOLUTION}², batch {TABLE7_BATCH}, GPU-hours)\n",
        _table(rows7, ["GPU", "dataset", *derived], 2) + "\n",
        "Notes on the paper's numbers:\n",
        *[f"- {n}" for n in p["notes"]],
        "",
    ]


def _md_floors(doc: dict[str, Any]) -> list[str]:
    eff = doc["paper_efficiencies"]
    rows = []
    for floor, cal in zip(doc["floors"], doc["paper_calibrated_projections"]):
        at_v100, at_rtx = cal["at_v100_efficiency"], cal["at_rtx4090_efficiency"]
        rows.append([GPUS.get(floor["gpu"]).name, f"{floor['peak_tflops']:g}", f"{floor['seconds_per_image']:.3f}",
                     f"{floor['gpu_hours']['cifar10']:.2f}", _span(at_v100, at_rtx, ".3f", "seconds_per_image"),
                     _span(at_v100, at_rtx, ".1f", "gpu_hours", "cifar10"),
                     _span(at_v100, at_rtx, ".0f", "gpu_hours", "clothing1m")])
    v, r = eff["v100"], eff["rtx4090"]
    return [
        "## Floors at peak and paper-calibrated projections (512², 20 steps, CFG)\n",
        "Floor: seconds per image at 100% of the dense fp16/bf16 tensor peak (vendor datasheets). "
        f"Projection: at the efficiency the paper's own runs imply — {100 * v['efficiency']:.1f}% ({v['source']}, "
        f"V100) to {100 * r['efficiency']:.1f}% ({r['source']}, RTX 4090). Projections, not measurements. "
        "H100 SXM and H200 have the same compute peak; the H200's faster memory is outside this model.\n",
        _table(rows, ["GPU", "peak TFLOP/s", "floor s/image", "floor CIFAR-10 GPU-h", "projection s/image",
                      "projection CIFAR-10 GPU-h", "projection Clothing1M GPU-h"]) + "\n",
    ]


def _md_measurement(m: dict[str, Any]) -> list[str]:
    batch = m["batch_size"] if m["batch_size"] is not None else "not given"
    setting = (f"{m['resolution']}², batch {batch}, {m['steps']} steps{', CFG' if m['cfg'] else ', no CFG'}"
               f"{', engine ' + m['engine'] if m['engine'] else ''}")
    guessed = ""
    if m["gpu"] is not None:
        guessed = f" ({m['gpu']}{', guessed from the device name' if m['gpu_guessed'] else ''})"
    lines = [f"### Measured on {m['device']}{guessed}: {setting}\n",
             f"{m['seconds_per_image']:.4g} s/image → CIFAR-10 {m['gpu_hours']['cifar10']:.2f} GPU-h, "
             f"Clothing1M {m['gpu_hours']['clothing1m']:.1f} GPU-h."]
    if m["gpu"] is None:
        return lines + [f"{m['note']}.\n"]
    lines.append(f"Floor on this GPU {m['floor_seconds']:.4g} s/image: {100 * m['efficiency']:.1f}% of peak. "
                 "Other GPUs below are projections at that same efficiency; the paper's column is its "
                 "CIFAR-10 cell at the same resolution and batch size, where it has one.\n")
    rows = [[GPUS.get(e["gpu"]).name, e["kind"], f"{e['seconds_per_image']:.3f}", f"{e['gpu_hours']['cifar10']:.2f}",
             f"{e['gpu_hours']['clothing1m']:.1f}", _fmt(e["paper_cifar10_gpu_hours"], "g", "—")]
            for e in m["estimates"]]
    return lines + [_table(rows, ["GPU", "ours", "s/image", "CIFAR-10 GPU-h", "Clothing1M GPU-h",
                                  "paper CIFAR-10 GPU-h"], 2) + "\n"]


def format_runtime_report(doc: dict[str, Any], no_measurement_note: str | None = None) -> str:
    """Markdown: the paper's numbers and ours side by side, projections labelled as projections.
    `no_measurement_note` replaces the paragraph said when no measurement was given."""
    lines = [f"# {doc['title']}\n",
             f"Source: {doc['source']['paper']}, {doc['source']['where']}; GPU peaks from vendor datasheets. "
             f"GPU-hours for CIFAR-10 ({doc['images']['cifar10']:,} images) and Clothing1M "
             f"({doc['images']['clothing1m']:,} images).\n"]
    lines += _md_compute(doc) + _md_paper(doc) + _md_floors(doc)
    lines.append("## Our measurements\n")
    if not doc["measurement_given"] and no_measurement_note:
        lines.append(no_measurement_note + "\n")
    elif not doc["measurement_given"]:
        lines.append("No measurement was given: no EchoMod run of ours is in this report, only the paper's numbers, "
                     "the compute model, its floors and the paper-calibrated projections. Pass a measurement file "
                     "(`echobench report --runtime MEASUREMENT.json`; schema in `echobench/reporting/runtime.py`).\n")
    for m in doc["measurements"]:
        lines += _md_measurement(m)
    return "\n".join(lines).rstrip() + "\n"


def write_runtime_report(out_dir: str | Path, measurement: dict | list | None = None) -> dict[str, Any]:
    """Write runtime.md and runtime.json into `out_dir` (atomically); return the document with "markdown"."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise EchobenchError(f"output path {out} exists and is not a directory; choose another --out")
    doc = runtime_report(measurement)
    markdown = format_runtime_report(doc)
    atomic_write_json(out / "runtime.json", doc)
    atomic_write_text(out / "runtime.md", markdown)
    return {**doc, "markdown": markdown}
