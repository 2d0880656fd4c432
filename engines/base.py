"""The engine interface for EchoMod's hot loop: one fused ControlNet + UNet denoising step.

EchoMod (paper §4, Algorithm 1; appendix C) runs Stable Diffusion 1.5 with a canny ControlNet for 20
steps per image. Almost all of its compute is the denoising step, repeated `steps` times on the
doubled classifier-free-guidance batch; the VAE decode runs once per image and the text encoder once
per class (appendix C, Tables 6/7 measure exactly this loop). Everything else (control images, prompt
cache, initial latents, the scheduler, guidance) lives in `echobench.echoalign.diffusion` and is the
same for every engine, so an engine only decides *how* that step is computed: eagerly with the
diffusers modules, through torch.compile, ONNX Runtime or TensorRT.

The step follows the diffusers ControlNet documentation's recipe (`StableDiffusionControlNetPipeline`
denoising loop): the ControlNet turns (latents, t, text embeddings, control image) into down-block
and mid-block residuals scaled by the conditioning scale, and the UNet adds them to its own skip
connections while predicting the noise. TensorRT's diffusion demo fuses the two networks into one
graph with the same inputs, which is why `denoise` takes them all at once.

This module imports no framework: tensors are whatever the engine works with (torch tensors for the
engines shipped here), so an engine can be written without touching EchoMod. The two helpers at the
end, for engines that run the diffusers modules themselves, import diffusers when called.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any


@dataclass
class Components:
    """The modules of a Stable Diffusion + ControlNet checkpoint, as `from_pretrained` loads them.

    `scheduler` is the checkpoint's own scheduler; EchoMod derives the configured sampling algorithm
    from its config (`NewScheduler.from_config(scheduler.config)`, the diffusers documentation's way
    of swapping schedulers), so that betas and timestep offsets always come from the checkpoint.
    """

    unet: Any
    controlnet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    scheduler: Any


class DenoiserEngine(abc.ABC):
    """How one denoising step (and the final decode) of EchoMod is computed.

    Life cycle: `load(components)` once, then `denoise` `steps` times per batch and `decode` once per
    batch, then `close()`. EchoMod calls `denoise` and `decode` inside `torch.inference_mode()` for
    torch-based engines; all tensors live on the engine's device in the components' dtype.

    Every engine is constructed the same way, `cls(settings, shapes, device)`: `settings` its
    `echobench.engines.options.EngineSettings` resolved for `device`, `shapes` the
    `echobench.engines.step_shapes.StepShapes` of the steps it will run (engines built for fixed
    shapes require them; the eager engine takes None). Constructing builds nothing; `load` does.
    """

    name: str = "base"
    components: Components | None = None
    # What `load` built and how long it took (export, compile or build seconds, whether a cached
    # artefact was reused, its path): JSON-able, for reports; empty for engines that build nothing.
    build_info: dict[str, Any] = {}

    @abc.abstractmethod
    def load(self, components: Components) -> None:
        """Take the loaded modules (and build whatever the engine runs: a compiled graph, an ONNX
        session, a TensorRT engine). Must set `self.components` so that the default `decode` works."""

    @abc.abstractmethod
    def denoise(self, latents: Any, t: Any, text_emb: Any, control: Any, scale: float) -> Any:
        """The noise prediction of one step: ControlNet residuals fed into the UNet.

        The caller has already folded classifier-free guidance into the batch: `latents` (2B, 4, h, w)
        are the scheduler-scaled latents twice (unconditional half first), `text_emb` (2B, L, D) the
        unconditional then the class-prompt embeddings, `control` (2B, 3, H, W) the canny images
        (values in [0, 1]) twice; `t` is the scheduler's timestep (a 0-d tensor) and `scale` the
        ControlNet conditioning scale. Returns the UNet's noise prediction for the doubled batch
        (2B, 4, h, w); the caller combines the two halves with the guidance scale.

        Engines built ahead of time for given shapes (`echobench.engines.step_shapes.StepShapes`: compile, ONNX
        Runtime, TensorRT) take steps of one image up to a full batch and raise an EchobenchError
        for more rows; EchoMod never passes more than its batch_size images at once.
        """

    def decode(self, latents: Any) -> Any:
        """Final latents (B, 4, h, w) → images (B, 3, H, W) in [0, 1], on the device.

        Default: the checkpoint's VAE, un-scaled by its `scaling_factor` and mapped from [-1, 1] to
        [0, 1] with clamping, as `StableDiffusionControlNetPipeline` and its image processor do.
        """
        if self.components is None:
            raise RuntimeError(f"engine {self.name!r}: decode() called before load()")
        vae = self.components.vae
        images = vae.decode(latents / vae.config.scaling_factor, return_dict=False)[0]
        return (images / 2 + 0.5).clamp(0, 1)

    def config(self) -> dict[str, Any]:
        """JSON-able settings of this engine that can change its numbers (part of EchoMod's cache key):
        the engines shipped here return their settings' `engine_config(device)`, which EchoMod uses to
        know the key without building an engine."""
        return {"name": self.name}

    def close(self) -> None:
        """Release what `load` built; the engine cannot be used afterwards."""
        self.components = None


def fuse_qkv_projections(components: Components) -> None:
    """One projection matmul per attention layer in the UNet and ControlNet instead of three (query,
    key, value of self-attention) or two (key, value of cross-attention), with diffusers'
    `FusedAttnProcessor2_0`: the fused projections of the "Accelerate inference of text-to-image
    diffusion models" tutorial. The math is the same; the concatenated weight changes the matmul
    shapes, so the rounding differs. In place, like channels_last; `unfuse_qkv_projections` undoes it.

    This is `UNet2DConditionModel.fuse_qkv_projections()` applied to both networks: diffusers 0.42's
    `ControlNetModel.fuse_qkv_projections()` only fuses attention modules of its newer kind, which
    SD 1.5's ControlNet does not use, so it would leave the ControlNet's layers as they were."""
    from diffusers.models.attention_processor import Attention, FusedAttnProcessor2_0

    for module in (components.unet, components.controlnet):
        if getattr(module, "original_attn_processors", None) is None:  # fusing twice keeps the first originals
            module.original_attn_processors = module.attn_processors
        for layer in module.modules():
            if isinstance(layer, Attention):
                layer.fuse_projections(fuse=True)
        module.set_attn_processor(FusedAttnProcessor2_0())


def unfuse_qkv_projections(components: Components) -> None:
    """Give the UNet and ControlNet back the attention processors they had before
    `fuse_qkv_projections` (a no-op for modules that were never fused)."""
    for module in (components.unet, components.controlnet):
        originals = getattr(module, "original_attn_processors", None)
        if originals is not None:
            module.set_attn_processor(originals)
            module.original_attn_processors = None
