"""The shapes of one denoising step, for engines that build something shape-specific ahead of time.

torch.compile specialises on shapes and recompiles on new ones (CUDA graphs even need fixed input
addresses), an ONNX graph is exported from example inputs, and a TensorRT engine is built for an
optimisation profile of input shapes. All of them are known before the first step: they follow from
the modules' configs, EchoMod's resolution and its batch size. The names are those of the TensorRT
diffusion demo's fused ControlNet + UNet model (`UNet2DConditionControlNetModel`: sample, timestep,
encoder_hidden_states, controlnet_cond, conditioning_scale).

Batch sizes count *rows* of the step: with classifier-free guidance every image is two rows
(unconditional and conditional), so a batch of B images is a step of 2B rows.

Torch-free, so that the TensorRT engine's cache keys can be computed and tested without a runtime.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from echobench.errors import EchobenchError

INPUT_NAMES = ("sample", "timestep", "encoder_hidden_states", "controlnet_cond", "conditioning_scale")
OUTPUT_NAME = "noise_pred"
BATCHED_INPUTS = ("sample", "encoder_hidden_states", "controlnet_cond")


@dataclass(frozen=True)
class StepShapes:
    """`batch_size` images per EchoMod batch, each `rows_per_image` rows (2 with guidance); the
    per-row shapes of the latents, text embeddings and control images."""

    batch_size: int
    rows_per_image: int
    latent_channels: int
    latent_size: int
    text_length: int
    text_dim: int
    control_channels: int
    control_size: int

    @property
    def min_rows(self) -> int:
        """A batch of one image."""
        return self.rows_per_image

    @property
    def max_rows(self) -> int:
        """A full batch: every engine that pads pads to this."""
        return self.batch_size * self.rows_per_image

    @classmethod
    def for_components(cls, components: Any, resolution: int, batch_size: int, guidance: bool) -> "StepShapes":
        """The shapes EchoMod feeds `components` at `resolution` (the latent size follows the VAE's
        downsampling, 2^(blocks - 1), as in diffusers' pipelines)."""
        factor = 2 ** (len(components.vae.config.block_out_channels) - 1)
        if resolution % factor:
            raise EchobenchError(f"resolution {resolution} is not a multiple of the VAE's factor {factor}")
        return cls(
            batch_size=int(batch_size), rows_per_image=2 if guidance else 1,
            latent_channels=int(components.unet.config.in_channels), latent_size=resolution // factor,
            text_length=int(components.tokenizer.model_max_length),
            text_dim=int(components.text_encoder.config.hidden_size),
            control_channels=int(getattr(components.controlnet.config, "conditioning_channels", 3)),
            control_size=int(resolution),
        )

    def input_shapes(self, rows: int) -> dict[str, tuple[int, ...]]:
        """Input name → shape for a step of `rows` rows (timestep and scale are one value each)."""
        return {
            "sample": (rows, self.latent_channels, self.latent_size, self.latent_size),
            "timestep": (1,),
            "encoder_hidden_states": (rows, self.text_length, self.text_dim),
            "controlnet_cond": (rows, self.control_channels, self.control_size, self.control_size),
            "conditioning_scale": (1,),
        }

    def row_shapes(self) -> dict[str, int]:
        """Everything but the batch: what an exported graph with a dynamic batch axis depends on."""
        fields = asdict(self)
        fields.pop("batch_size")
        fields.pop("rows_per_image")
        return fields


def check_rows(engine: str, rows: int, low: int, high: int, shapes: StepShapes, what: str) -> None:
    """EchobenchError when a step of `rows` rows lies outside [low, high], the rows `engine` was built
    for (`what` says what fixed them: "its fixed batch", "its optimisation profile")."""
    if low <= rows <= high:
        return
    per = shapes.rows_per_image
    raise EchobenchError(
        f"the {engine} engine got a step of {rows} rows ({rows // per} image(s) × {per}), outside "
        f"{what}: {low}..{high} rows, i.e. batches of {low // per} to {high // per} images "
        f"(batch_size={shapes.batch_size}). Build the engine with a batch_size that covers the batches "
        "you generate (EchoMod never passes more than batch_size images at once)."
    )


def require_shapes(engine: str, shapes: StepShapes | None) -> StepShapes:
    """`shapes`, or the EchobenchError for an engine built for fixed step shapes that got none."""
    if shapes is None:
        raise EchobenchError(f"the {engine} engine is built for fixed step shapes: pass shapes="
                             "StepShapes.for_components(components, resolution, batch_size, guidance)")
    return shapes
