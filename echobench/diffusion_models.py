"""Named Stable Diffusion + ControlNet configurations for EchoMod: `sd15` and `tiny`.

`sd15` is the paper's model (§4, appendix C): Stable Diffusion 1.5 with the canny ControlNet. Its
architectures are written out below as the `config.json` files of the public checkpoints
(stable-diffusion-v1-5/stable-diffusion-v1-5: unet/, vae/, text_encoder/, scheduler/; and
lllyasviel/sd-controlnet-canny), so that the model can be instantiated with random weights without a
download: the same compute as the real one (≈ 860 M UNet, ≈ 361 M ControlNet, ≈ 84 M VAE, ≈ 123 M CLIP
text parameters), for timing engines on machines without the weights. Each dict is passed as keyword
arguments to the diffusers class (`UNet2DConditionModel(**SD15_UNET)`, as `from_config` does) or, for
the text encoder, to transformers' `CLIPTextConfig`.

`tiny` is the test model (diffusers' own ControlNet pipeline tests' shapes, widened to block_out_channels
(32, 64)) at `TINY_RESOLUTION`: its "checkpoint" is the fixed, seeded weights that the parity tests use
(`echobench.echomod_diffusion.tiny_components`).

`build_components(name, random_init=..., device=..., dtype=...)` returns `engines.base.Components`:
- `random_init=False`: the real weights. `sd15` loads the checkpoints with `from_pretrained`
  (`base_model` / `controlnet` may point at other compatible checkpoints or local folders); `tiny`
  builds its seeded test weights.
- `random_init=True`: the architecture with the libraries' own initialisation under `seed`, created
  directly on `device` (no checkpoint, no download). The ControlNet's zero convolutions stay zero, as
  in a fresh ControlNet, so the control image has no effect on the output; the compute is the same.
  The tokenizer is the locally built byte-level CLIP tokenizer of the tiny model (the real vocabulary
  is a download); its ids are valid for SD 1.5's text encoder, whose output is then meaningless, as
  everything else is.

This module imports only the standard library at import time; torch, diffusers and transformers are
imported by the functions that need them.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

from .errors import EchobenchError
from .registry import unknown_name_error

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


MODELS: dict[str, ModelSpec] = {
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
}
PARTS = ("unet", "controlnet", "vae", "text_encoder")


def model_spec(name: str) -> ModelSpec:
    """The configuration called `name` (an EchobenchError with suggestions otherwise)."""
    if name not in MODELS:
        raise unknown_name_error("model", name, list(MODELS))
    return MODELS[name]


def build_components(name: str, *, random_init: bool = False, device: str = "cpu", dtype: Any = "auto",
                     seed: int = 0, base_model: str | None = None, controlnet: str | None = None):
    """`Components` of model `name` on `device` in `dtype` ("auto", a dtype name or a torch dtype),
    in eval mode (see the module docstring for what `random_init` means per model). `base_model` and
    `controlnet` override the checkpoints of `sd15`'s real weights."""
    spec = model_spec(name)
    torch_dtype = _torch_dtype(dtype, device)
    if not random_init and spec.base_model is not None:
        from .echomod_diffusion import DiffusionConfig, load_components

        config = DiffusionConfig(base_model=base_model or spec.base_model,
                                 controlnet=controlnet or spec.controlnet_checkpoint)
        return load_components(config, device, torch_dtype)
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


def default_resolution(name: str) -> int:
    """The resolution model `name` is run at unless told otherwise (512 for sd15, 32 for tiny)."""
    return model_spec(name).resolution


def make_engine(name: str, device: str, dtype: Any = "auto", *, shapes=None, options: dict[str, Any] | None = None):
    """`echobench.echomod_diffusion.make_engine`: a `DenoiserEngine` by engine name (see there)."""
    from .echomod_diffusion import make_engine as make

    return make(name, device, dtype, shapes=shapes, options=options)


def parameter_counts(name: str) -> dict[str, int]:
    """Parameters per module of model `name`, counted on torch's meta device (no memory, no init)."""
    import torch

    spec = model_spec(name)
    with torch.device("meta"):
        modules = _modules(spec, _tokenizer())
    return {part: sum(p.numel() for p in module.parameters()) for part, module in zip(PARTS, modules)}


# ZERO_CONV_STD: see `_randomise_zero_convolutions`.
ZERO_CONV_STD = 0.3


def _build(spec: ModelSpec, device: str, seed: int, randomise_zero_convolutions: bool):
    """The modules of `spec`, each created on `device` after seeding torch with seed + its index (the
    global random state is left as it was)."""
    import diffusers
    import torch

    from engines.base import Components

    tokenizer = _tokenizer()
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


def _tokenizer():
    from .echomod_diffusion import tiny_tokenizer

    return tiny_tokenizer()


def _torch_dtype(dtype: Any, device: str):
    import torch

    from engines.options import resolve_dtype, torch_dtype

    if isinstance(dtype, torch.dtype):
        return dtype
    return torch_dtype(resolve_dtype(str(dtype), device))
