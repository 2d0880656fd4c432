"""Options of the procedural EchoMod engine (`echobench.engines.procedural.engine`), with their defaults.

Kept free of OpenCV and NumPy (as every engine's settings) so that listing or validating options
imports nothing heavy. Every field can be overridden by name through the engine's `options`
(`--engine-option name=value`, or a suite's engine options); `ProceduralModifier.config()` reports
all of them, so they are part of the EchoMod cache key.

The style fields implement the deliberate distribution shift between modified and real images that
the paper attributes to instance modification (§4.2, and the "instance modification only" row of its
ablation, Table 3). All of them are multiplied by `style_shift`, so `style_shift=0` gives a faithful
re-rendering and larger values a stronger shift; the amounts are stated for 32 px images and scale
with the image size.
"""

from __future__ import annotations

from dataclasses import dataclass

from echobench.engines.options import EngineSettings


@dataclass(frozen=True)
class ProceduralConfig(EngineSettings):
    # The engine registry's entry: a whole generator (no diffusion loop), built by `make_modifier`.
    name = "procedural"
    diffusion = False
    implementation = "echobench.engines.procedural.engine:make_modifier"

    # --- style shift (all scaled by style_shift) ---
    style_shift: float = 1.0  # overall strength of the generated-image style; 0 = none
    background_blur: float = 1.2  # Gaussian sigma (px at 32 px) applied to the background texture
    edge_softness: float = 0.5  # Gaussian sigma (px at 32 px) applied to the object's silhouette
    saturation_gain: float = 0.3  # relative boost of the distance of each pixel from its grey value
    contrast_gain: float = -0.12  # relative change of the distance of each pixel from mid-grey
    color_jitter: float = 10.0  # per-channel std of the seed-driven tint of the object colour (0..255)

    # --- scene recovery ---
    color_candidates: int = 3  # most frequent exact colours tried as the object colour (plus one extremal)
    inpaint_radius: float = 1.0  # cv2.inpaint (Navier-Stokes) neighbourhood radius (px at 32 px)
    min_object_share: float = 0.01  # silhouettes covering less of the image count as "no object found"
