"""The eager engine: EchoMod's denoising step with the diffusers modules, called directly.

The step is the body of the diffusers `StableDiffusionControlNetPipeline` denoising loop (the
ControlNet documentation's recipe, without guess mode): the ControlNet's down/mid residuals, scaled by
the conditioning scale, go into the UNet as additional residuals. This engine is the reference the
other engines are compared with.
"""

from __future__ import annotations

from typing import Any

import torch

from echobench.engines.base import Components, DenoiserEngine, fuse_qkv_projections
from echobench.engines.eager.config import EagerConfig
from echobench.engines.step_shapes import StepShapes


class EagerEngine(DenoiserEngine):
    """ControlNet + UNet in eager PyTorch under `torch.inference_mode` (no autograd bookkeeping)."""

    name = EagerConfig.name

    def __init__(self, settings: EagerConfig, shapes: StepShapes | None = None, device: str = "cpu"):
        """The engines' one constructor; eager builds nothing for fixed shapes, so `shapes` may be None."""
        if settings.dtype == "auto":
            raise ValueError("EagerEngine needs a resolved EagerConfig: EagerConfig(...).resolve(device)")
        self.settings = settings
        self.shapes = shapes
        self.device = str(device)

    def load(self, components: Components) -> None:
        if self.settings.channels_last:
            # Only the convolution-heavy networks of the hot loop and the decoder benefit.
            for module in (components.unet, components.controlnet, components.vae):
                module.to(memory_format=torch.channels_last)
        if self.settings.fuse_qkv:
            fuse_qkv_projections(components)
        self.components = components

    @torch.inference_mode()
    def denoise(self, latents: Any, t: Any, text_emb: Any, control: Any, scale: float) -> Any:
        down, mid = self.components.controlnet(
            latents, t, encoder_hidden_states=text_emb, controlnet_cond=control,
            conditioning_scale=scale, guess_mode=False, return_dict=False,
        )
        return self.components.unet(
            latents, t, encoder_hidden_states=text_emb,
            down_block_additional_residuals=down, mid_block_additional_residual=mid, return_dict=False,
        )[0]

    @torch.inference_mode()
    def decode(self, latents: Any) -> Any:
        return super().decode(latents)

    def config(self) -> dict[str, Any]:
        return self.settings.engine_config(self.device)
