"""Named Stable Diffusion + ControlNet configurations for EchoMod (`sd15` and `tiny`), and loading them.

The model layer under EchoMod's sampling loop (`echobench.echoalign.diffusion`, which imports this
module and never the other way round): architectures, checkpoints loaded with `from_pretrained`
(`load_checkpoints`, `load_tiny_vae`), models built locally (`build_components`) and the tiny model's
locally built tokenizer (`tiny_tokenizer`).

`sd15` is the paper's model (§4, appendix C): Stable Diffusion 1.5 with the canny ControlNet. Its
architectures are written out below as the `config.json` files of the public checkpoints
(stable-diffusion-v1-5/stable-diffusion-v1-5: unet/, vae/, text_encoder/, scheduler/; and
lllyasviel/sd-controlnet-canny), so that the model can be instantiated with random weights without a
download: the same compute as the real one (≈ 860 M UNet, ≈ 361 M ControlNet, ≈ 84 M VAE, ≈ 123 M CLIP
text parameters), for timing engines on machines without the weights. Each dict is passed as keyword
arguments to the diffusers class (`UNet2DConditionModel(**SD15_UNET)`, as `from_config` does) or, for
the text encoder, to transformers' `CLIPTextConfig`.

`shapes` is the learned generator of the embedded `shapes` world: the `tiny` architecture as
`echobench train-echomod` trained it on an independent world (seed 777), its folder shipped with
echobench under `TRAINED_DIR/shapes/` (`trained_folder`), with the thresholds EchoSelect uses on its
pairs (`calibrated_taus`, calibration.json, measured on that training world). Its cache key carries a
digest of its weight files (`trained_digest`), so retrained weights never mix with older images.

`tiny` is the test model (diffusers' own ControlNet pipeline tests' shapes, widened to block_out_channels
(32, 64)) at `TINY_RESOLUTION`: its "checkpoint" is the fixed, seeded weights that the parity tests use
(`build_components("tiny")`, also as `echobench.echoalign.diffusion.tiny_components`).

`build_components(name, random_init=..., device=..., dtype=...)` returns `echobench.engines.base.Components`:
- `random_init=False`: the real weights. `sd15` loads the checkpoints with `from_pretrained`
  (`base_model` / `controlnet` may point at other compatible checkpoints or local folders); `tiny`
  builds its seeded test weights.
- `random_init=True`: the architecture with the libraries' own initialisation under `seed`, created
  directly on `device` (no checkpoint, no download). The ControlNet's zero convolutions stay zero, as
  in a fresh ControlNet, so the control image has no effect on the output; the compute is the same.
  The tokenizer is the locally built byte-level CLIP tokenizer of the tiny model (the real vocabulary
  is a download); its ids are valid for SD 1.5's text encoder, whose output is then meaningless, as
  everything else is.

This module imports only the standard library and `echobench.errors` / `echobench.registry` at
import time; torch, diffusers and transformers are imported by the functions that need them.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from echobench.errors import EchobenchError
from echobench.registry import unknown_name_error

_SD15_DOWN = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
_SD15_UP = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")

# stable-diffusion-v1-5/stable-diffusion-v1-5, unet/config.json (without the _class_name/_diffusers_version keys).
SD15_UNET: dict[str, Any] = {
    "act_fn": "silu", "attention_head_dim": 8, "block_out_channels": (320, 640, 1280, 1280),
    "center_input_sample": False, "cross_attention_dim": 768, "down_block_types": _SD15_DOWN,
    "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4,
    "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32,
    "out_channels": 4, "sample_size": 64, "up_block_types": _SD15_UP,
}
# lllyasviel/sd-controlnet-canny, config.json.
SD15_CONTROLNET: dict[str, Any] = {
    "act_fn": "silu", "attention_head_dim": 8, "block_out_channels": (320, 640, 1280, 1280),
    "class_embed_type": None, "conditioning_embedding_out_channels": (16, 32, 96, 256),
    "controlnet_conditioning_channel_order": "rgb", "cross_attention_dim": 768,
    "down_block_types": _SD15_DOWN, "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0,
    "in_channels": 4, "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05,
    "norm_num_groups": 32, "num_class_embeds": None, "only_cross_attention": False,
    "projection_class_embeddings_input_dim": None, "resnet_time_scale_shift": "default",
    "upcast_attention": False, "use_linear_projection": False,
}
# stable-diffusion-v1-5/stable-diffusion-v1-5, vae/config.json (scaling_factor: the default, 0.18215).
SD15_VAE: dict[str, Any] = {
    "act_fn": "silu", "block_out_channels": (128, 256, 512, 512),
    "down_block_types": ("DownEncoderBlock2D",) * 4, "in_channels": 3, "latent_channels": 4,
    "layers_per_block": 2, "norm_num_groups": 32, "out_channels": 3, "sample_size": 512,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
}
# stable-diffusion-v1-5/stable-diffusion-v1-5, text_encoder/config.json (CLIP ViT-L/14's text tower).
SD15_TEXT_ENCODER: dict[str, Any] = {
    "attention_dropout": 0.0, "bos_token_id": 0, "dropout": 0.0, "eos_token_id": 2, "hidden_act": "quick_gelu",
    "hidden_size": 768, "initializer_factor": 1.0, "initializer_range": 0.02, "intermediate_size": 3072,
    "layer_norm_eps": 1e-05, "max_position_embeddings": 77, "num_attention_heads": 12,
    "num_hidden_layers": 12, "pad_token_id": 1, "projection_dim": 768, "vocab_size": 49408,
}
# stable-diffusion-v1-5/stable-diffusion-v1-5, scheduler/scheduler_config.json (the scheduler the checkpoint ships).
SD15_SCHEDULER_CONFIG: dict[str, Any] = {
    "_class_name": "PNDMScheduler", "beta_start": 0.00085, "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "num_train_timesteps": 1000, "set_alpha_to_one": False,
    "skip_prk_steps": True, "steps_offset": 1, "clip_sample": False, "trained_betas": None,
}

TINY_RESOLUTION = 32  # 16×16 latents: the tiny VAE has two blocks (factor 2)
_TINY_BLOCKS: dict[str, Any] = {
    "block_out_channels": (32, 64), "layers_per_block": 2, "cross_attention_dim": 32,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"), "in_channels": 4,
}
TINY_UNET: dict[str, Any] = {**_TINY_BLOCKS, "sample_size": 32, "out_channels": 4,
                             "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D")}
TINY_CONTROLNET: dict[str, Any] = {**_TINY_BLOCKS, "conditioning_embedding_out_channels": (16, 32)}
TINY_VAE: dict[str, Any] = {
    "block_out_channels": (32, 64), "in_channels": 3, "out_channels": 3, "latent_channels": 4,
    "down_block_types": ("DownEncoderBlock2D",) * 2, "up_block_types": ("UpDecoderBlock2D",) * 2,
}
# The vocabulary size and special token ids come from the tiny tokenizer when the model is built.
TINY_TEXT_ENCODER: dict[str, Any] = {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4,
                                     "num_hidden_layers": 5}


@dataclass(frozen=True)
class ModelSpec:
    """A named architecture: the four modules' configs, the scheduler, the native resolution, and the
    checkpoints holding its real weights (None: the weights are built locally)."""

    name: str
    description: str
    resolution: int
    unet: dict[str, Any] = field(repr=False)
    controlnet: dict[str, Any] = field(repr=False)
    vae: dict[str, Any] = field(repr=False)
    text_encoder: dict[str, Any] = field(repr=False)
    scheduler: dict[str, Any] = field(repr=False)
    base_model: str | None = None
    controlnet_checkpoint: str | None = None
    trained: str | None = None  # a folder under TRAINED_DIR holding the weights (a `train-echomod` folder)


# Trained generators shipped with echobench: folders as `echobench train-echomod` writes them
# (stable-diffusion/, controlnet/, tiny-vae/, training.json) plus calibration.json.
TRAINED_DIR = Path(__file__).parent / "trained"
TRAINED_PARTS = ("stable-diffusion", "controlnet", "tiny-vae")  # what the images depend on (the digest)
DIFFUSION_CONFIGS: dict[str, ModelSpec] = {
    "sd15": ModelSpec(
        "sd15", "Stable Diffusion 1.5 + canny ControlNet (the paper's EchoMod model)", 512,
        SD15_UNET, SD15_CONTROLNET, SD15_VAE, SD15_TEXT_ENCODER, SD15_SCHEDULER_CONFIG,
        base_model="stable-diffusion-v1-5/stable-diffusion-v1-5",
        controlnet_checkpoint="lllyasviel/sd-controlnet-canny",
    ),
    "tiny": ModelSpec(
        "tiny", "tiny test-sized SD + ControlNet (seeded weights, built locally)", TINY_RESOLUTION,
        TINY_UNET, TINY_CONTROLNET, TINY_VAE, TINY_TEXT_ENCODER, SD15_SCHEDULER_CONFIG,
    ),
    "shapes": ModelSpec(
        "shapes", "the tiny architecture trained by `echobench train-echomod` for the embedded shapes world, on an "
        "independent world (shipped with echobench)", TINY_RESOLUTION,
        TINY_UNET, TINY_CONTROLNET, TINY_VAE, TINY_TEXT_ENCODER, SD15_SCHEDULER_CONFIG, trained="shapes",
    ),
}
PARTS = ("unet", "controlnet", "vae", "text_encoder")


def model_spec(name: str) -> ModelSpec:
    """The configuration called `name` (an EchobenchError with suggestions otherwise)."""
    if name not in DIFFUSION_CONFIGS:
        raise unknown_name_error("model", name, list(DIFFUSION_CONFIGS))
    return DIFFUSION_CONFIGS[name]


def build_components(name: str, *, random_init: bool = False, device: str = "cpu", dtype: Any = "auto",
                     seed: int = 0, base_model: str | None = None, controlnet: str | None = None,
                     variant: str = "auto"):
    """`Components` of model `name` on `device` in `dtype` ("auto", a dtype name or a torch dtype),
    in eval mode (see the module docstring for what `random_init` means per model). `base_model` and
    `controlnet` override the checkpoints of `sd15`'s real weights."""
    spec = model_spec(name)
    torch_dtype = _torch_dtype(dtype, device)
    if not random_init and spec.trained is not None:
        if base_model or controlnet:
            raise EchobenchError(f"model {name!r}: its weights are the trained folder shipped with echobench; "
                                 "base_model/controlnet apply to sd15 (model=sd15 base_model=FOLDER/stable-diffusion "
                                 "controlnet=FOLDER/controlnet loads another trained folder)")
        folder = trained_folder(name)
        return load_checkpoints(str(folder / "stable-diffusion"), str(folder / "controlnet"), device, torch_dtype,
                                variant=variant)
    if not random_init and spec.base_model is not None:
        return load_checkpoints(base_model or spec.base_model, controlnet or spec.controlnet_checkpoint, device,
                                torch_dtype, variant=variant)
    if base_model or controlnet:
        raise EchobenchError(f"model {name!r}: base_model/controlnet only apply to sd15's real weights")
    if random_init:
        components = _build(spec, device=device, seed=seed, randomise_zero_convolutions=False)
    else:  # the tiny model's fixed weights: built on the CPU, where they are reproducible bit for bit
        components = _build(spec, device="cpu", seed=seed, randomise_zero_convolutions=True)
    for part in PARTS:
        module = getattr(components, part)
        if next(module.parameters()).dtype != torch_dtype:
            # diffusers warns on every cast of a model without `_keep_in_fp32_modules` (all of these).
            with _diffusers_quiet():
                module.to(dtype=torch_dtype)
        module.to(device=device).eval()
    return components


def trained_folder(name: str) -> Path:
    """The shipped folder of trained model `name`; an EchobenchError saying how to make it when it is
    missing from this installation."""
    spec = model_spec(name)
    if spec.trained is None:
        raise EchobenchError(f"model {name!r} has no trained folder (only {', '.join(trained_models())} have)")
    folder = TRAINED_DIR / spec.trained
    if not all((folder / part).is_dir() for part in TRAINED_PARTS):
        raise EchobenchError(
            f"model {name!r}: its trained weights are not in this installation ({folder} lacks "
            f"{', '.join(part + '/' for part in TRAINED_PARTS)}). Train them with `bash scripts/train_echomod_shapes.sh` "
            f"(resumable) and copy the folder there, or use model=sd15 with base_model/controlnet pointing at a "
            f"`train-echomod` folder")
    return folder


def trained_models() -> list[str]:
    return [name for name, spec in DIFFUSION_CONFIGS.items() if spec.trained is not None]


def trained_digest(name: str) -> str:
    """A short hash of trained model `name`'s weight and config files (every file of `TRAINED_PARTS`):
    part of EchoMod's cache key, where a path would differ between installations."""
    return _folder_digest(str(trained_folder(name)))


@functools.lru_cache(maxsize=None)
def _folder_digest(folder: str) -> str:
    digest = hashlib.sha256()
    for part in TRAINED_PARTS:
        for path in sorted(p for p in (Path(folder) / part).rglob("*") if p.is_file()):
            digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def calibrated_taus(name: str, extractor: str) -> tuple[float, float] | None:
    """EchoSelect's (low-noise, high-noise) thresholds for the pairs of trained model `name` with
    `extractor`, as calibrated on its training world (its calibration.json); None when the model is
    not a trained one or has no calibration for that extractor."""
    if name not in DIFFUSION_CONFIGS or model_spec(name).trained is None:
        return None
    path = trained_folder(name) / "calibration.json"
    if not path.is_file():
        return None
    entry = json.loads(path.read_text()).get("taus", {}).get(extractor)
    return (float(entry[0]), float(entry[1])) if entry else None


def default_resolution(name: str) -> int:
    """The resolution model `name` is run at unless told otherwise (512 for sd15, 32 for tiny)."""
    return model_spec(name).resolution


def parameter_counts(name: str) -> dict[str, int]:
    """Parameters per module of model `name`, counted on torch's meta device (no memory, no init)."""
    import torch

    spec = model_spec(name)
    with torch.device("meta"):
        modules = _modules(spec, tiny_tokenizer())
    return {part: sum(p.numel() for p in module.parameters()) for part, module in zip(PARTS, modules)}


# ------------------------------------------------------------------------------ loading checkpoints


# The weight files `from_pretrained` reads, per module: (subfolder, file stem). diffusers models are
# `diffusion_pytorch_model.[variant.]safetensors` (or `.bin`), transformers models `model.[variant.]safetensors`
# (or `pytorch_model.[variant.]bin`).
BASE_WEIGHTS = (("unet", "diffusion_pytorch_model"), ("vae", "diffusion_pytorch_model"), ("text_encoder", "model"))
CONTROLNET_WEIGHTS = (("", "diffusion_pytorch_model"),)


def weight_files(subfolder: str, stem: str, variant: str | None) -> list[str]:
    """The file names (relative to the checkpoint) `from_pretrained` looks for, safetensors first."""
    infix = f".{variant}" if variant else ""
    bin_stem = "pytorch_model" if stem == "model" else stem
    names = [f"{stem}{infix}.safetensors", f"{bin_stem}{infix}.bin"]
    return [f"{subfolder}/{name}" if subfolder else name for name in names]


def _has_any(ident: str, names: list[str]) -> bool:
    """Whether checkpoint `ident` (a directory, or a hub id: its local cache, then the hub unless
    offline) has one of `names`."""
    if os.path.isdir(ident):
        return any(os.path.isfile(os.path.join(ident, name)) for name in names)
    try:
        from huggingface_hub import constants, file_exists, try_to_load_from_cache
    except ImportError:
        return False
    if any(isinstance(try_to_load_from_cache(ident, name), str) for name in names):
        return True
    if constants.HF_HUB_OFFLINE:
        return False
    try:
        return any(file_exists(ident, name) for name in names)
    except Exception:  # noqa: BLE001 - no network, no such repository: the load reports it
        return False


def checkpoint_variant(ident: str, parts, dtype, requested: str = "auto") -> str | None:
    """The `variant=` to load checkpoint `ident`'s modules `parts` ((subfolder, stem) pairs) with.

    "fp16" and "none" are taken as they are. "auto": "fp16" when the dtype is float16 and every module
    has `*.fp16.*` weight files (they are the fp32 weights rounded to float16: the same numbers as the
    plain files loaded in float16, at half the size; a cache holding only them works); otherwise None,
    the plain files. In float32, "auto" never reads fp16 files: their weights are rounded, so a float32
    run from them would not be the float32 run its cache key describes (`variant=fp16` asks for them
    explicitly, and then the key says so)."""
    if requested in ("none", "", None):
        return None
    if requested != "auto":
        return requested
    import torch

    if dtype != torch.float16:
        return None
    return "fp16" if all(_has_any(ident, weight_files(sub, stem, "fp16")) for sub, stem in parts) else None


def load_checkpoints(base_model: str, controlnet: str, device: str, dtype, variant: str = "auto"):
    """The Stable Diffusion modules of the checkpoint `base_model` and the ControlNet of `controlnet`
    (hub ids or local directories) via `from_pretrained`, in `dtype` (a torch dtype) on `device`, in
    eval mode. `variant` ("auto", "fp16", "none"): which weight files to read, per checkpoint
    (`checkpoint_variant`), passed to `from_pretrained(variant=...)`.

    A checkpoint that is neither a local directory nor in the Hugging Face cache (and cannot be
    downloaded, e.g. offline), or that lacks the weight files of the variant, is an EchobenchError
    that names it, the files looked for, the cache directory in use and how to pass a local directory
    instead.
    """
    import diffusers
    from transformers import CLIPTextModel, CLIPTokenizer

    from echobench.engines.base import Components

    base = _checkpoint_path(base_model, "base_model")
    control = _checkpoint_path(controlnet, "controlnet")
    base_variant = checkpoint_variant(base, BASE_WEIGHTS, dtype, variant)
    control_variant = checkpoint_variant(control, CONTROLNET_WEIGHTS, dtype, variant)
    weights = {"torch_dtype": dtype, **_low_memory_kwargs()}

    def files(sub: str, stem: str, chosen: str | None) -> list[str]:
        return weight_files(sub, stem, chosen)

    # The small files first, so that a missing checkpoint is reported before gigabytes are read.
    scheduler = _load("scheduler", base, lambda: _checkpoint_scheduler(base), ["scheduler/scheduler_config.json"])
    controlnet = _load("ControlNet", control,
                       lambda: diffusers.ControlNetModel.from_pretrained(control, variant=control_variant, **weights),
                       files("", "diffusion_pytorch_model", control_variant))
    unet = _load("UNet", base, lambda: diffusers.UNet2DConditionModel.from_pretrained(
        base, subfolder="unet", variant=base_variant, **weights), files("unet", "diffusion_pytorch_model", base_variant))
    vae = _load("VAE", base, lambda: diffusers.AutoencoderKL.from_pretrained(
        base, subfolder="vae", variant=base_variant, **weights), files("vae", "diffusion_pytorch_model", base_variant))
    # transformers renamed torch_dtype → dtype; casting after loading works with every version.
    text_encoder = _load("text encoder", base, lambda: _without_progress_bar(
        lambda: CLIPTextModel.from_pretrained(base, subfolder="text_encoder", variant=base_variant)),
        files("text_encoder", "model", base_variant))
    text_encoder = text_encoder.to(dtype=dtype)
    tokenizer = _load("tokenizer", base, lambda: CLIPTokenizer.from_pretrained(base, subfolder="tokenizer"))
    _check_tokenizer(tokenizer, base)
    for module in (text_encoder, unet, vae, controlnet):
        module.to(device).eval()
    return Components(unet=unet, controlnet=controlnet, vae=vae, text_encoder=text_encoder,
                      tokenizer=tokenizer, scheduler=scheduler)


def _checkpoint_path(ident: str, option: str) -> str:
    """`ident` with ~ expanded; a path-like value that is not a directory is an error right away
    (otherwise the hub would be asked for a repository called "/some/path")."""
    expanded = os.path.expanduser(ident)
    if os.path.isdir(expanded):
        return expanded
    if expanded.startswith((os.sep, ".")) or expanded.count("/") > 1 or (os.altsep and os.altsep in expanded):
        raise EchobenchError(f"{option}: {ident!r} looks like a local path but is not a directory")
    return ident


def _low_memory_kwargs() -> dict[str, Any]:
    """diffusers warns on every load when accelerate is missing unless low_cpu_mem_usage is off."""
    import importlib.util

    return {} if importlib.util.find_spec("accelerate") else {"low_cpu_mem_usage": False}


def _checkpoint_scheduler(base: str):
    """The checkpoint's scheduler in its own class (model_index.json's choice, e.g. PNDM for SD 1.5)."""
    import diffusers

    config = diffusers.DDIMScheduler.load_config(base, subfolder="scheduler")
    cls = getattr(diffusers, str(config.get("_class_name")), None) or diffusers.PNDMScheduler
    return cls.from_config(config)


def _check_tokenizer(tokenizer, base: str) -> None:
    """transformers 5 returns an empty tokenizer instead of failing when the files are missing; a
    byte-level BPE vocabulary has at least the 256 byte symbols."""
    if len(tokenizer) < 256:
        raise _missing_checkpoint("tokenizer", base, f"no tokenizer files found (vocabulary of {len(tokenizer)})")


def _load(what: str, ident: str, load: Callable[[], Any], looked_for: list[str] | None = None) -> Any:
    from huggingface_hub.utils import HFValidationError

    try:
        return load()
    except (OSError, HFValidationError, ValueError) as error:  # hub errors are OSError subclasses; a
        # missing variant is a ValueError in some diffusers versions
        lines = str(error).strip().splitlines()
        raise _missing_checkpoint(what, ident, lines[0] if lines else type(error).__name__, looked_for) from error


def _without_progress_bar(load: Callable[[], Any]) -> Any:
    """`load()` without transformers' per-tensor "Loading weights" bar: it would print one bar per
    model load into every EchoMod run's output; the other modules load silently too."""
    from transformers.utils import logging

    enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        return load()
    finally:
        if enabled:
            logging.enable_progress_bar()


def _missing_checkpoint(what: str, ident: str, reason: str, looked_for: list[str] | None = None) -> EchobenchError:
    from huggingface_hub import constants

    files = (f" (looked for {' or '.join(looked_for)}; the engine option variant=fp16|none|auto chooses the "
             "weight files)") if looked_for else ""
    if os.path.isdir(ident):
        return EchobenchError(f"cannot load the {what} from the local directory {ident!r}{files}: {reason}")
    offline = ", and the hub is offline (HF_HUB_OFFLINE is set)" if constants.HF_HUB_OFFLINE else ""
    return EchobenchError(
        f"cannot load the {what} of {ident!r}{files}: it is not a local directory and not in the Hugging Face "
        f"cache in use ({constants.HF_HUB_CACHE}){offline}. Download it once where the hub can be "
        "reached (it is then found in that cache), or pass a local directory path as "
        "base_model/controlnet (base_model: a diffusers folder with unet/, vae/, text_encoder/, "
        f"tokenizer/, scheduler/; controlnet: a folder with config.json and the weights). Loader: {reason}"
    )


def load_tiny_vae(ident: str, device: str, dtype):
    """An `AutoencoderTiny` (hub id or local directory) in `dtype` on `device`, in eval mode: the
    approximate decoder of `echobench.echoalign.diffusion.DiffusionConfig.vae`."""
    import diffusers

    path = _checkpoint_path(ident, "vae")
    weights = {"torch_dtype": dtype, **_low_memory_kwargs()}
    with _diffusers_quiet():  # AutoencoderTiny warns that its own saved `block_out_channels` is unexpected
        vae = _load("tiny VAE", path, lambda: diffusers.AutoencoderTiny.from_pretrained(path, **weights))
    return vae.to(device).eval()


# ------------------------------------------------------------------------------ building models


# ZERO_CONV_STD: see `_randomise_zero_convolutions`.
ZERO_CONV_STD = 0.3


def _build(spec: ModelSpec, device: str, seed: int, randomise_zero_convolutions: bool):
    """The modules of `spec`, each created on `device` after seeding torch with seed + its index (the
    global random state is left as it was)."""
    import diffusers
    import torch

    from echobench.engines.base import Components

    tokenizer = tiny_tokenizer()
    rng_devices = [torch.device(device).index or 0] if str(device).startswith("cuda") else []
    with torch.random.fork_rng(devices=rng_devices), torch.device(device):
        modules = _modules(spec, tokenizer, seed=seed, randomise_zero_convolutions=randomise_zero_convolutions)
    unet, controlnet, vae, text_encoder = modules
    scheduler_cls = getattr(diffusers, spec.scheduler["_class_name"])
    return Components(unet=unet, controlnet=controlnet, vae=vae, text_encoder=text_encoder,
                      tokenizer=tokenizer, scheduler=scheduler_cls.from_config(spec.scheduler))


def _modules(spec: ModelSpec, tokenizer, seed: int | None = None, randomise_zero_convolutions: bool = False):
    """UNet, ControlNet, VAE and text encoder of `spec` in that order, each after seeding torch with
    seed + its index when `seed` is given (the order and seeds of the tiny test weights)."""
    import diffusers
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    def seeded(offset: int) -> None:
        if seed is not None:
            torch.manual_seed(seed + offset)

    seeded(0)
    unet = diffusers.UNet2DConditionModel(**spec.unet)
    seeded(1)
    controlnet = diffusers.ControlNetModel(**spec.controlnet)
    if randomise_zero_convolutions:
        _randomise_zero_convolutions(controlnet, std=ZERO_CONV_STD)
    seeded(2)
    vae = diffusers.AutoencoderKL(**spec.vae)
    seeded(3)
    text = dict(spec.text_encoder)
    if "vocab_size" not in text:  # the tiny model: sized to its tokenizer
        text.update(vocab_size=len(tokenizer), max_position_embeddings=tokenizer.model_max_length,
                    bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                    pad_token_id=tokenizer.pad_token_id)
    text_encoder = CLIPTextModel(CLIPTextConfig(**text))
    return unet, controlnet, vae, text_encoder


def _randomise_zero_convolutions(controlnet, std: float) -> None:
    """A fresh ControlNet's "zero convolutions" (the last layer of the control-image embedding and
    the output convolutions of its residuals) are zero, so the control image would have no effect at
    all; diffusers' ControlNet pipeline tests re-initialise them randomly for the same reason."""
    import torch

    zero = [controlnet.controlnet_cond_embedding.conv_out, *controlnet.controlnet_down_blocks,
            controlnet.controlnet_mid_block]
    for block in zero:
        torch.nn.init.normal_(block.weight, std=std)
        torch.nn.init.normal_(block.bias, std=std)


@contextlib.contextmanager
def _diffusers_quiet():
    from diffusers.utils import logging

    before = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(before)


def _torch_dtype(dtype: Any, device: str):
    import torch

    from echobench.engines.options import resolve_dtype, torch_dtype

    if isinstance(dtype, torch.dtype):
        return dtype
    return torch_dtype(resolve_dtype(str(dtype), device))


# ------------------------------------------------------------------------------ the tiny tokenizer

TINY_WORDS = ("a", "photo", "of")  # words given BPE merges in the tiny vocabulary


def tiny_tokenizer():
    """A CLIP tokenizer from a vocab.json / merges.txt written here: the 256 byte-level symbols, each
    also as a word end ("</w>"), merges spelling out `TINY_WORDS`, and CLIP's two special tokens."""
    from transformers import CLIPTokenizer

    symbols = list(_bytes_to_unicode().values())
    vocab = {token: i for i, token in enumerate(symbols + [s + "</w>" for s in symbols])}
    merges = []
    for word in TINY_WORDS:
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        while len(parts) > 1:  # merge left to right: p h → ph, ph o → pho, ...
            merges.append(f"{parts[0]} {parts[1]}")
            parts = [parts[0] + parts[1]] + parts[2:]
            vocab.setdefault(parts[0], len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "vocab.json").write_text(json.dumps(vocab))
        Path(folder, "merges.txt").write_text("#version: 0.2\n" + "".join(m + "\n" for m in merges))
        Path(folder, "tokenizer_config.json").write_text(json.dumps({
            "tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "bos_token": "<|startoftext|>",
            "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}))
        return CLIPTokenizer.from_pretrained(folder)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte → printable character table used by byte-level BPE."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {b: chr(b) for b in printable}, 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return dict(sorted(table.items()))
