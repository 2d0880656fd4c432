"""EchoMod with Stable Diffusion 1.5 + a canny ControlNet, on the diffusers components.

The paper's recipe (§4, Algorithm 1; appendix C "Hyperparameter settings"): ControlNet with the Canny
preprocessor, low = high threshold = 75, control map and generated image 512×512, the prompt
"a photo of {label}" with no additional or negative prompt, 20 diffusion steps, mixed precision.
The paper does not state the scheduler, guidance scale or seeds; the defaults here are the diffusers
ControlNet documentation's standard recipe (`StableDiffusionControlNetPipeline` with
`UniPCMultistepScheduler`, 20 steps, guidance 7.5, `controlnet_conditioning_scale` 1.0, canny via
`cv2.Canny` on the RGB image, stacked to three channels). The authors' released code has no EchoMod
(it loads pre-generated images) but resizes the generated images back to 32×32 with PIL's default
filter, which is bicubic for RGB: so does `generate`.

Per batch, `DiffusionEchoMod` does what that pipeline does, in the same order and with the same
random numbers, so that its output equals the pipeline's (tests/test_echomod_diffusion.py checks it):

1. each original image is upscaled to `resolution`² (PIL bicubic) and its canny edges (three equal
   channels, values 0 or 1, as diffusers' control-image processor gives them) are the control image;
2. the text embeddings of "a photo of {class}" and of the empty unconditional prompt come from a cache
   filled once per class (the pipeline re-encodes the prompts of every batch);
3. the initial latents come from one `torch.Generator` per sample, seeded with that sample's seed,
   through diffusers' own `randn_tensor` with a list of generators (each sample's noise is drawn on
   its own, on the CPU), so a sample's output never depends on the batch it is in or on the device;
4. the scheduler loop: classifier-free guidance as one doubled batch (unconditional half first), one
   `engine.denoise` call per step (ControlNet + UNet, see `engines/base.py`), guidance, scheduler step;
5. VAE decode to [0, 1], rounded to uint8 as diffusers does, resized back to the dataset resolution.

Deliberate differences from the pipeline: underscores in class names become spaces in the prompt
("aquarium_fish" → "a photo of aquarium fish"); the scheduler is told its begin index, which skips the
`nonzero().item()` look-up of the first step (same index, no host synchronisation); guess mode is not
supported (the canny ControlNet does not use it).
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from echobench.echoalign.diffusion_configs import (DIFFUSION_CONFIGS, build_components, load_checkpoints, load_tiny_vae,
                                                   trained_digest, trained_folder, trained_models)
from echobench.engines.options import EngineSettings, check_option_names, coerce_option, resolve_dtype, torch_dtype
from echobench.engines.registry import ENGINES, diffusion_engines
from echobench.engines.step_shapes import StepShapes
from echobench.errors import EchobenchError

# Scheduler names → diffusers classes. "pndm" is Stable Diffusion 1.5's own; "unipc" the ControlNet
# documentation's choice.
SCHEDULERS = {
    "unipc": "UniPCMultistepScheduler",
    "ddim": "DDIMScheduler",
    "pndm": "PNDMScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "dpm++": "DPMSolverMultistepScheduler",
}
MAX_STEPS = 1000  # SD's schedulers are trained on 1000 timesteps: more sampling steps than that do not exist


VARIANTS = ("auto", "fp16", "none")


@dataclass(frozen=True)
class DiffusionConfig:
    """Everything that defines EchoMod's sampling; defaults follow the paper (appendix C) and, where
    it is silent, the diffusers ControlNet documentation.

    `base_model` and `controlnet` are Hugging Face hub ids or local directories (a diffusers folder
    with unet/, vae/, text_encoder/, tokenizer/, scheduler/; a ControlNet folder with config.json).
    `dtype`: "auto" is float16 on a GPU (the paper's mixed precision) and float32 on a CPU.
    `batch_size` changes only speed and memory, never the images.
    `model` names an architecture in `echobench.echoalign.diffusion_configs.DIFFUSION_CONFIGS`: "sd15" loads `base_model`
    and `controlnet`; "tiny" is the small test model (built locally, run at its own resolution unless
    `resolution` is given); "shapes" is the learned generator of the `shapes` world, whose trained
    weights ship with echobench (`vae=trained` decodes with the tiny VAE trained with it).
    `random_init`: the named architecture with random weights instead (same compute, nothing
    downloaded; for timing only, the images are noise).
    `vae`: "" decodes with the checkpoint's own VAE (exact). Otherwise a hub id or local directory of
    an `AutoencoderTiny`, e.g. "madebyollin/taesd" (TAESD, the tiny decoder the diffusers
    documentation swaps in with `pipe.vae = AutoencoderTiny.from_pretrained(...)`). It is an
    APPROXIMATE speedup: faster decoding, different images, so it is part of the cache key, and it is
    used only when asked. `echobench bench approx` measures what it, fewer `steps` and a lower
    `resolution` change in EchoSelect's decisions on the same pairs (reports/approx-shapes/).
    `variant`: which weight files `from_pretrained` reads (its `variant=`): "auto" reads the
    `*.fp16.*` files when the dtype is float16 and the checkpoint has them (half the download, and
    the UNet alone is 3.4 GB in fp32), or when they are the only ones it has; "fp16" asks for them;
    "none" reads the plain files. Not part of the cache key in float16: the fp16 files are the fp32
    weights rounded to float16, which is what loading the fp32 files in float16 gives too (see
    `echobench.echoalign.diffusion_configs.checkpoint_variant`); `variant=fp16` in another dtype reads
    rounded weights, and then the key records it.

    Every option of EchoMod lives in one namespace: these fields and the engine's settings
    (`option_namespace`), so a name has one meaning whatever the engine (the compile engine's "compile
    the VAE" is `compile_vae`, not `vae`).
    """

    base_model: str = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    controlnet: str = "lllyasviel/sd-controlnet-canny"
    resolution: int = 512
    canny_low: int = 75
    canny_high: int = 75
    prompt_template: str = "a photo of {}"
    negative_prompt: str = ""
    steps: int = 20
    scheduler: str = "unipc"
    guidance_scale: float = 7.5
    controlnet_conditioning_scale: float = 1.0
    batch_size: int = 8
    dtype: str = "auto"
    model: str = "sd15"
    random_init: bool = False
    vae: str = ""
    variant: str = "auto"

    def __post_init__(self) -> None:
        problems = []
        if self.model not in DIFFUSION_CONFIGS:
            problems.append(f"unknown model {self.model!r}; known: {', '.join(DIFFUSION_CONFIGS)}")
        elif DIFFUSION_CONFIGS[self.model].trained is not None:
            defaults = {f.name: f.default for f in dataclasses.fields(self)}
            if (self.base_model, self.controlnet) != (defaults["base_model"], defaults["controlnet"]):
                problems.append(f"model {self.model!r} runs its own trained weights: leave base_model and controlnet out "
                                "(model=sd15 base_model=FOLDER/stable-diffusion controlnet=FOLDER/controlnet loads "
                                "another train-echomod folder)")
        if self.vae == "trained" and self.model in DIFFUSION_CONFIGS and DIFFUSION_CONFIGS[self.model].trained is None:
            problems.append(f"vae=trained is the tiny VAE of a trained model ({', '.join(trained_models())}), "
                            f"not of {self.model!r}: give an AutoencoderTiny folder or hub id instead")
        if self.resolution <= 0 or self.resolution % 8:
            problems.append(f"resolution must be a positive multiple of 8 (got {self.resolution})")
        if not (0 <= self.canny_low <= 255 and 0 <= self.canny_high <= 255):
            problems.append(f"canny thresholds must lie in [0, 255] (got {self.canny_low}, {self.canny_high})")
        if self.prompt_template.count("{}") != 1:
            problems.append(f"prompt_template needs exactly one '{{}}' for the class name "
                            f"(got {self.prompt_template!r})")
        if not 1 <= self.steps <= MAX_STEPS:
            problems.append(f"steps must be from 1 to {MAX_STEPS}, the scheduler's training timesteps (got {self.steps})")
        if self.scheduler not in SCHEDULERS:
            problems.append(f"unknown scheduler {self.scheduler!r}; known: {', '.join(SCHEDULERS)}")
        if self.batch_size < 1:
            problems.append(f"batch_size must be >= 1 (got {self.batch_size})")
        if self.variant not in VARIANTS:
            problems.append(f"unknown variant {self.variant!r}; use one of {', '.join(VARIANTS)}")
        if problems:
            raise EchobenchError("EchoMod diffusion config: " + "; ".join(problems))

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> "DiffusionConfig":
        """Defaults overridden by `options` (field name → value; strings from a command line are
        converted to the field's type). Unknown names are an EchobenchError listing the known ones."""
        known = {f.name: f.default for f in dataclasses.fields(cls)}
        check_option_names(options, known)
        return cls(**{name: coerce_option(name, value, known[name]) for name, value in options.items()})


# ----------------------------------------------------------------------------------------- loading


def load_components(config: DiffusionConfig, device: str, dtype):
    """The Stable Diffusion modules of `config.base_model` and the ControlNet of `config.controlnet`
    via `from_pretrained`, in `dtype` (a torch dtype) on `device`, in eval mode
    (`echobench.echoalign.diffusion_configs.load_checkpoints`: a checkpoint that cannot be found is an
    EchobenchError saying where it was looked for and what to do), with `config.variant`'s weight files."""
    return load_checkpoints(config.base_model, config.controlnet, device, dtype, variant=config.variant)


def scheduler_class(name: str):
    """The diffusers scheduler class called `name` in `SCHEDULERS`."""
    import diffusers

    if name not in SCHEDULERS:
        raise EchobenchError(f"unknown scheduler {name!r}; known: {', '.join(SCHEDULERS)}")
    return getattr(diffusers, SCHEDULERS[name])


# ------------------------------------------------------------------------------------------ EchoMod


def prompt_for(template: str, class_name: str) -> str:
    """'a photo of {label}' (paper §4) with the class name written as words."""
    return template.format(class_name.replace("_", " "))


def control_images(images: np.ndarray, resolution: int, low: int, high: int) -> np.ndarray:
    """Canny control images (N, 3, R, R) float32 with values 0 or 1 from uint8 (N, H, W, 3) images.

    As in the diffusers ControlNet documentation: the RGB image goes to `cv2.Canny` (which takes the
    strongest gradient over the channels), the edge map is stacked to three channels, and the control
    image processor scales it to [0, 1]. The image is first upscaled to the generation resolution
    with PIL bicubic (appendix C: "the feature maps output by the preprocessor ... 512×512").
    """
    import cv2
    from PIL import Image

    out = np.empty((len(images), 3, resolution, resolution), dtype=np.float32)
    for k, image in enumerate(images):
        big = np.asarray(Image.fromarray(image).resize((resolution, resolution), Image.Resampling.BICUBIC))
        edges = cv2.Canny(np.ascontiguousarray(big), low, high)
        out[k] = (edges.astype(np.float32) / 255.0)[None]
    return out


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """[0, 1] floats → uint8 by rounding, as diffusers' `numpy_to_pil` does."""
    return (pixels * 255).round().astype(np.uint8)


def resize_back(images: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 NHWC images resized with PIL bicubic (the released code's PIL default for RGB)."""
    from PIL import Image

    if images.shape[1:3] == (height, width):
        return images
    return np.stack([np.asarray(Image.fromarray(img).resize((width, height), Image.Resampling.BICUBIC))
                     for img in images])


class PromptEmbeddings:
    """Text-encoder outputs of each class prompt and of the unconditional prompt, computed once.

    Each prompt is encoded on its own (a batch of one), as diffusers' `encode_prompt` tokenizes it:
    padded to the tokenizer's `model_max_length`, truncated, the attention mask passed only when the
    text encoder's config asks for it, the last hidden state cast to the text encoder's dtype. Encoding
    one prompt at a time keeps the numbers independent of which classes a batch holds.
    """

    def __init__(self, components, prompts: list[str], negative_prompt: str, device):
        self.text_encoder = components.text_encoder
        self.tokenizer = components.tokenizer
        self.prompts = prompts
        self.negative_prompt = negative_prompt
        self.device = device
        self._cache: dict[int, Any] = {}
        self._unconditional = None

    def _encode(self, text: str):
        import torch

        tokens = self.tokenizer(text, padding="max_length", max_length=self.tokenizer.model_max_length,
                                truncation=True, return_tensors="pt")
        use_mask = getattr(self.text_encoder.config, "use_attention_mask", False)
        mask = tokens.attention_mask.to(self.device) if use_mask else None
        with torch.inference_mode():
            hidden = self.text_encoder(tokens.input_ids.to(self.device), attention_mask=mask)[0]
        return hidden.to(dtype=self.text_encoder.dtype)

    def conditional(self, label: int):
        if label not in self._cache:
            self._cache[label] = self._encode(self.prompts[label])
        return self._cache[label]

    def unconditional(self):
        if self._unconditional is None:
            self._unconditional = self._encode(self.negative_prompt)
        return self._unconditional

    def batch(self, labels: np.ndarray, guidance: bool):
        """(2B, L, D) unconditional then conditional embeddings (B, L, D without guidance)."""
        import torch

        cond = torch.cat([self.conditional(int(y)) for y in labels])
        if not guidance:
            return cond
        return torch.cat([self.unconditional().expand(len(labels), -1, -1), cond])


def cache_config(s: DiffusionConfig, class_names: list[str], image_size: int, dtype: str,
                 engine_config: dict[str, Any]) -> dict[str, Any]:
    """EchoMod's cache key (`DiffusionEchoMod.config`): everything that can change its images."""
    return {
        "generator": "controlnet-canny",
        "base_model": s.base_model, "controlnet": s.controlnet,
        "scheduler": s.scheduler, "steps": s.steps, "guidance_scale": s.guidance_scale,
        "controlnet_conditioning_scale": s.controlnet_conditioning_scale,
        "canny_low": s.canny_low, "canny_high": s.canny_high, "resolution": s.resolution,
        "prompt_template": s.prompt_template, "negative_prompt": s.negative_prompt,
        "class_names": class_names, "image_size": image_size,
        "dtype": dtype,
        "engine": engine_config["name"], "engine_config": engine_config,
        "resize_back": "pil-bicubic",
        # Only when they differ from the defaults, so that the cache keys of images generated
        # before these options existed (sd15 from its checkpoints) stay the same.
        **({"model": s.model} if s.model != "sd15" else {}),
        **({"random_init": True} if s.random_init else {}),
        **({"vae": s.vae} if s.vae else {}),
        **({"variant": s.variant} if s.variant == "fp16" and dtype != "float16" else {}),
        # a shipped trained model: which weights (a path would differ between installations)
        **({"weights": trained_digest(s.model)} if DIFFUSION_CONFIGS[s.model].trained and not s.random_init else {}),
    }


class DiffusionEchoMod:
    """The EchoMod generator (a `Modifier`) on diffusers components and a `DenoiserEngine`.

    `progress(done, total)`, when given, is called after each batch of `generate`.
    """

    def __init__(self, class_names: list[str], image_size: int, components, engine,
                 config: DiffusionConfig | None = None, device: str = "cpu",
                 progress: Callable[[int, int], None] | None = None):
        import torch

        self.settings = config or DiffusionConfig()
        self.class_names = list(class_names)
        self.image_size = int(image_size)
        self.components = components
        self.engine = engine
        self.device = torch.device(device)
        self.dtype = components.unet.dtype
        self.progress = progress
        self._scheduler_cls = scheduler_class(self.settings.scheduler)
        prompts = [prompt_for(self.settings.prompt_template, name) for name in self.class_names]
        self.prompts = PromptEmbeddings(components, prompts, self.settings.negative_prompt, self.device)
        # diffusers' pipelines: one latent pixel per 2^(number of VAE blocks - 1) image pixels.
        self._latent_factor = 2 ** (len(components.vae.config.block_out_channels) - 1)
        engine.load(components)

    def config(self) -> dict[str, Any]:
        return cache_config(self.settings, self.class_names, self.image_size, str(self.dtype).removeprefix("torch."),
                            self.engine.config())

    def generate(self, images: np.ndarray, labels: np.ndarray, seeds: np.ndarray) -> np.ndarray:
        images, labels, seeds = self._check(images, labels, seeds)
        out = np.empty_like(images)
        height, width = images.shape[1:3]
        step = self.settings.batch_size
        for start in range(0, len(images), step):
            part = slice(start, start + step)
            pixels = self.generate_pixels(images[part], labels[part], seeds[part])
            out[part] = resize_back(to_uint8(pixels), height, width)
            if self.progress is not None:
                self.progress(min(start + step, len(images)), len(images))
        return out

    def generate_pixels(self, images: np.ndarray, labels: np.ndarray, seeds: np.ndarray) -> np.ndarray:
        """One batch at the generation resolution: float32 (B, R, R, 3) in [0, 1], what
        `StableDiffusionControlNetPipeline(..., output_type="np")` returns for the same inputs (to float
        rounding: the prompts are encoded one at a time here)."""
        import torch

        s = self.settings
        control = torch.from_numpy(control_images(images, s.resolution, s.canny_low, s.canny_high))
        control = control.to(self.device, self.dtype)
        guidance = s.guidance_scale > 1  # the pipeline's do_classifier_free_guidance
        text = self.prompts.batch(labels, guidance)
        generators = [torch.Generator("cpu").manual_seed(int(seed)) for seed in seeds]
        with torch.inference_mode():
            latents = self._sample(control, text, generators, guidance)
            pixels = self.engine.decode(latents)
            return pixels.permute(0, 2, 3, 1).float().cpu().numpy()

    def _sample(self, control, text, generators, guidance: bool):
        """The denoising loop of `StableDiffusionControlNetPipeline.__call__` (steps 5–8)."""
        import torch
        from diffusers.utils.torch_utils import randn_tensor

        s = self.settings
        # A fresh scheduler per batch: multistep schedulers keep the previous model outputs.
        scheduler = self._scheduler_cls.from_config(self.components.scheduler.config)
        scheduler.set_timesteps(s.steps, device=self.device)
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(0)
        size = s.resolution // self._latent_factor
        shape = (len(generators), self.components.unet.config.in_channels, size, size)
        latents = randn_tensor(shape, generator=generators, device=self.device, dtype=self.dtype)
        latents = latents * scheduler.init_noise_sigma
        step_kwargs = _step_kwargs(scheduler, generators)
        if guidance:
            control = torch.cat([control] * 2)
        for t in scheduler.timesteps:
            model_input = torch.cat([latents] * 2) if guidance else latents
            model_input = scheduler.scale_model_input(model_input, t)
            noise = self.engine.denoise(model_input, t, text, control, s.controlnet_conditioning_scale)
            if guidance:
                unconditional, conditional = noise.chunk(2)
                noise = unconditional + s.guidance_scale * (conditional - unconditional)
            latents = scheduler.step(noise, t, latents, **step_kwargs, return_dict=False)[0]
        return latents

    def _check(self, images, labels, seeds):
        images, labels, seeds = np.asarray(images), np.asarray(labels), np.asarray(seeds)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"EchoMod takes uint8 (N, H, W, 3) images, got {images.dtype} {images.shape}")
        if labels.shape != (len(images),) or seeds.shape != (len(images),):
            raise ValueError(f"need one label and one seed per image: {len(images)} images, "
                             f"labels {labels.shape}, seeds {seeds.shape}")
        if len(labels) and (labels.min() < 0 or labels.max() >= len(self.class_names)):
            raise ValueError(f"labels must lie in [0, {len(self.class_names)}), got {labels.min()}..{labels.max()}")
        return images, labels, seeds

    def close(self) -> None:
        self.engine.close()


def _step_kwargs(scheduler, generators) -> dict[str, Any]:
    """The pipeline's `prepare_extra_step_kwargs`: eta = 0 for DDIM, and the per-sample generators
    for schedulers that draw noise in their step (ancestral ones)."""
    accepted = set(inspect.signature(scheduler.step).parameters)
    kwargs: dict[str, Any] = {}
    if "eta" in accepted:
        kwargs["eta"] = 0.0
    if "generator" in accepted:
        kwargs["generator"] = generators
    return kwargs


# ------------------------------------------------------------------------------------------ engines


def diffusion_engine(engine: str) -> type[EngineSettings]:
    """The registered settings class of diffusion engine `engine` (`echobench.engines.registry`); an
    EchobenchError for unknown names (with suggestions) and for engines that are generators of their
    own rather than a step of this loop."""
    settings_cls = ENGINES.get(engine)
    if not settings_cls.diffusion:
        raise EchobenchError(f"engine {engine!r} is not a diffusion engine: it generates without EchoMod's diffusion "
                             f"loop. Diffusion engines: {', '.join(diffusion_engines())}")
    return settings_cls


def engine_option_defaults(engine: str) -> dict[str, Any]:
    """The options of diffusion engine `engine` (its settings' fields but `dtype`) with their defaults."""
    return diffusion_engine(engine).option_defaults()


def require_runtime(engine: str, device: str) -> None:
    """EchobenchError (naming the extra to install) when `engine`'s runtime is missing: checked before
    any model is loaded, which can take minutes."""
    check = getattr(diffusion_engine(engine).load_implementation(), "require_runtime", None)
    if check is not None:
        check(device)


def engine_settings(engine: str, device: str, dtype: str = "auto", options: dict[str, Any] | None = None):
    """The settings of diffusion engine `engine` from `options` (engine option → value, strings
    accepted) over the defaults, resolved for `device`; bad names or values are EchobenchErrors.
    `dtype` is EchoMod's dtype setting (the eager engine's settings record it)."""
    return diffusion_engine(engine).from_options(options, device, dtype)


def make_engine(engine: str, device: str, dtype: str = "auto", *, shapes=None,
                options: dict[str, Any] | None = None, settings=None):
    """A `DenoiserEngine` called `engine` for `device`, constructed the one way every engine is,
    `cls(settings, shapes, device)`: from `settings` (`engine_settings`) or from `dtype` and
    `options`. `shapes` (`echobench.engines.step_shapes.StepShapes`) is required by the engines built
    for fixed shapes (compile, ONNX export, TensorRT profile)."""
    settings_cls = diffusion_engine(engine)
    if settings is None:
        settings = settings_cls.from_options(options, device, dtype)
    return settings_cls.load_implementation()(settings, shapes, device)


def load_model(config: DiffusionConfig, device: str, dtype):
    """The components `config` names: sd15's checkpoints (`base_model`, `controlnet`) through
    `load_components`, or a model of `echobench.echoalign.diffusion_configs` (tiny, random_init)."""
    if config.model == "sd15" and not config.random_init:
        components = load_components(config, device, dtype)
    else:
        components = build_components(config.model, random_init=config.random_init, device=device, dtype=dtype)
    if config.vae:
        vae = str(trained_folder(config.model) / "tiny-vae") if config.vae == "trained" else config.vae
        components.vae = load_tiny_vae(vae, device, dtype)
    return components


def option_namespace(engine: str) -> dict[str, tuple[str, Any]]:
    """Every option EchoMod takes with diffusion engine `engine`, in one namespace: option → (owner,
    default), the owner "diffusion" (a `DiffusionConfig` field) or the engine's name (a field of its
    settings). One name, one meaning: a name that both define is an error of the engine, raised here
    (tests check every registered engine)."""
    diffusion = {f.name: ("diffusion", f.default) for f in dataclasses.fields(DiffusionConfig)}
    engine_options = {name: (engine, default) for name, default in diffusion_engine(engine).option_defaults().items()}
    clash = sorted(set(diffusion) & set(engine_options))
    if clash:
        raise EchobenchError(f"engine {engine!r} defines option(s) {', '.join(clash)}, which EchoMod's diffusion "
                             "settings define too: an option name must have one meaning; rename the engine's")
    return {**diffusion, **engine_options}


# Options whose meaning changed, with the value that betrays the old meaning and the new name.
_RENAMED = {"compile": {"vae": ("compile_vae", "true/false")}}


def _check_renamed(engine: str, options: dict[str, Any]) -> None:
    """An EchobenchError for an option given with its old meaning (`vae=true` for the compile engine,
    which now means a tiny decoder called "true")."""
    for old, (new, values) in _RENAMED.get(engine, {}).items():
        value = options.get(old)
        if isinstance(value, bool) or str(value).strip().lower() in ("true", "false", "yes", "no", "on", "off", "1",
                                                                      "0", "auto"):
            raise EchobenchError(f"EchoMod option {old}={value!r}: `{old}` is the tiny decoder's model id (an "
                                 f"AutoencoderTiny hub id or directory); the {engine} engine's option that compiles "
                                 f"the VAE is `{new}` ({values}), called `{old}` before issue 19")


def resolve_options(engine: str, options: dict[str, Any], device: str):
    """(DiffusionConfig, the engine's resolved settings, dtype name) from the registry's `options`.
    Everything a user can get wrong is checked here, before the model is loaded (which can take
    minutes): option names and values, and the engine's runtime."""
    settings_cls = diffusion_engine(engine)
    namespace = option_namespace(engine)
    engine_defaults = settings_cls.option_defaults()
    diffusion_defaults = {f.name: f.default for f in dataclasses.fields(DiffusionConfig)}
    _check_renamed(engine, options)
    check_option_names(options, {name: default for name, (_, default) in namespace.items()})
    engine_options = {k: v for k, v in options.items() if k in engine_defaults}
    diffusion_options = {k: v for k, v in options.items() if k not in engine_defaults}
    model = str(diffusion_options.get("model", diffusion_defaults["model"]))
    if model in DIFFUSION_CONFIGS and "resolution" not in diffusion_options:
        diffusion_options["resolution"] = DIFFUSION_CONFIGS[model].resolution
    config = DiffusionConfig.from_options(diffusion_options)
    dtype = resolve_dtype(config.dtype, device)
    settings = settings_cls.from_options(engine_options, device, config.dtype)
    require_runtime(engine, device)
    return config, settings, dtype


def diffusion_modifier_config(engine: str, dataset: str, class_names: list[str], image_size: int,
                              options: dict[str, Any], device: str) -> dict[str, Any]:
    """What `make_diffusion_modifier(...).config()` returns (EchoMod's cache key), from the settings
    alone: no model is loaded and no engine built, so a run whose pairs are all cached never loads
    SD 1.5 (`echobench.echoalign.methods.modify_pairs`)."""
    del dataset
    config, settings, dtype = resolve_options(engine, options, device)
    return cache_config(config, list(class_names), int(image_size), dtype, settings.engine_config(device))


def make_diffusion_modifier(engine: str, dataset: str, class_names: list[str], image_size: int,
                            options: dict[str, Any], device: str, *, components=None,
                            progress: Callable[[int, int], None] | None = None) -> DiffusionEchoMod:
    """EchoMod with the diffusion engine `engine`: `options` override `DiffusionConfig` fields and the
    engine's own options (`engine_option_defaults(engine)`); values may be strings, as a command line
    passes them. The components are `load_model(config)` unless given (already on `device`, in the
    configured dtype). `dataset` is part of `echomod.make_modifier`'s signature; the images do not
    depend on it."""
    del dataset
    config, settings, dtype = resolve_options(engine, options, device)
    if components is None:
        components = load_model(config, device, torch_dtype(dtype))
    shapes = StepShapes.for_components(components, config.resolution, config.batch_size, config.guidance_scale > 1)
    denoiser = make_engine(engine, device, shapes=shapes, settings=settings)
    return DiffusionEchoMod(class_names, image_size, components, denoiser, config, device=device, progress=progress)


# ------------------------------------------------------------------------ tiny random checkpoint


def tiny_components(seed: int = 0):
    """Small randomly initialised SD + ControlNet modules (`echobench.echoalign.diffusion_configs`' "tiny" model:
    the shapes of diffusers' own ControlNet pipeline tests, widened to block_out_channels (32, 64)) and
    a locally built CLIP tokenizer, float32 on the CPU.

    Nothing is downloaded. Run them at `diffusion_configs.TINY_RESOLUTION` (any multiple of 8 works).
    The global torch random state is left as it was.
    """
    return build_components("tiny", seed=seed, device="cpu", dtype="float32")


def save_tiny_checkpoint(path: str | os.PathLike, seed: int = 0) -> tuple[Path, Path]:
    """Write `tiny_components(seed)` with `save_pretrained` in the layouts the real checkpoints use:
    `path/stable-diffusion` (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/)
    and `path/controlnet`. Returns the two directories, usable as base_model and controlnet."""
    import diffusers

    components = tiny_components(seed)
    base, control = Path(path) / "stable-diffusion", Path(path) / "controlnet"
    pipeline = diffusers.StableDiffusionPipeline(
        vae=components.vae, text_encoder=components.text_encoder, tokenizer=components.tokenizer,
        unet=components.unet, scheduler=components.scheduler, safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    pipeline.save_pretrained(base)
    components.controlnet.save_pretrained(control)
    return base, control
