"""ControlNet + UNet as one torch module: the graph that the compile, ONNX Runtime and TensorRT engines run.

TensorRT's Stable Diffusion demo exports the ControlNet and the UNet as one ONNX graph,
`UNet2DConditionControlNetModel(sample, timestep, encoder_hidden_states, images, controlnet_scales)`,
so that the residuals never leave the device and the builder can optimise across both networks.
`FusedControlNetUNet` is that model for one ControlNet; its body is the step of diffusers'
`StableDiffusionControlNetPipeline` (and of the eager engine): the ControlNet's down/mid residuals,
scaled by the conditioning scale, go into the UNet as additional residuals.

Inputs are canonicalised by `step_inputs` so that every engine feeds the graph the same dtypes:
- `timestep`: float32 of shape (1,), as in the demo. Schedulers give int64 (UniPC, DDIM, PNDM) or
  float (Euler) timesteps; both networks turn them into float32 before the sinusoidal embedding
  (`get_timestep_embedding` calls `.float()`), so the conversion is exact (timesteps < 2^24).
- `conditioning_scale`: shape (1,) in the modules' dtype. A float32 tensor would promote float16
  residuals to float32 (two tensors with dimensions follow type promotion), and a Python float would
  be baked into an exported graph as a constant.
"""

from __future__ import annotations

from typing import Any

import torch

from echobench.engines.step_shapes import INPUT_NAMES, StepShapes


class FusedControlNetUNet(torch.nn.Module):
    """One denoising step: (sample, timestep, encoder_hidden_states, controlnet_cond,
    conditioning_scale) → noise prediction (see the module docstring for the input conventions)."""

    def __init__(self, controlnet: torch.nn.Module, unet: torch.nn.Module):
        super().__init__()
        self.controlnet = controlnet
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states, controlnet_cond, conditioning_scale):
        down, mid = self.controlnet(
            sample, timestep, encoder_hidden_states=encoder_hidden_states, controlnet_cond=controlnet_cond,
            conditioning_scale=conditioning_scale, guess_mode=False, return_dict=False,
        )
        return self.unet(
            sample, timestep, encoder_hidden_states=encoder_hidden_states,
            down_block_additional_residuals=down, mid_block_additional_residual=mid, return_dict=False,
        )[0]


def step_inputs(latents: Any, t: Any, text_emb: Any, control: Any, scale: float) -> dict[str, torch.Tensor]:
    """`DenoiserEngine.denoise`'s arguments as the fused graph's named inputs (canonical dtypes)."""
    device, dtype = latents.device, latents.dtype
    timestep = torch.as_tensor(t, device=device).to(torch.float32).reshape(1)
    return {
        "sample": latents,
        "timestep": timestep,
        "encoder_hidden_states": text_emb.to(dtype),
        "controlnet_cond": control.to(dtype),
        "conditioning_scale": torch.full((1,), float(scale), device=device, dtype=dtype),
    }


def example_inputs(shapes: StepShapes, rows: int, device: Any, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Plausible inputs of `rows` rows (for warm-up and export): unit-variance latents and text, a
    binary control image like canny edges, a late timestep and scale 1."""
    generator = torch.Generator("cpu").manual_seed(0)
    sizes = shapes.input_shapes(rows)
    made = {
        "sample": torch.randn(sizes["sample"], generator=generator),
        "timestep": torch.full((1,), 981.0),
        "encoder_hidden_states": torch.randn(sizes["encoder_hidden_states"], generator=generator),
        "controlnet_cond": (torch.rand(sizes["controlnet_cond"], generator=generator) > 0.9).float(),
        "conditioning_scale": torch.ones(1),
    }
    return {name: made[name].to(device, torch.float32 if name == "timestep" else dtype) for name in INPUT_NAMES}


def pad_rows(tensor: torch.Tensor, rows: int) -> torch.Tensor:
    """`tensor` with its last row repeated up to `rows` rows. Rows of a step never interact (GroupNorm
    and attention are per sample), so the padding cannot change the real rows' results; a copy of a
    real row keeps the padding's values in range (zeros would be out-of-distribution, harmless in
    float32 but not a clean test of float16 overflow)."""
    missing = rows - tensor.shape[0]
    if missing <= 0:
        return tensor
    return torch.cat([tensor, tensor[-1:].expand(missing, *tensor.shape[1:])])
