"""EchoMod: rewrite each training image so that it matches its (noisy) label.

The paper (§4, Algorithm 1) uses a controllable generative model (Stable Diffusion 1.5 + ControlNet
canny): the image's structure (its Canny edges) is kept while the content follows the prompt
"a photo of {label}". Here every generator implements one small contract, `Modifier`:

    modifier.config()                          -> dict: everything that determines the output
    modifier.generate(images, labels, seeds)   -> uint8 images, same shape as `images`

`images` are uint8 NHWC arrays at the dataset's resolution, `labels` the target classes (the noisy
labels), `seeds` one 63-bit integer per sample from `sample_seeds`. A generator's output for a sample
depends only on (its pixels, its target label, its seed, the config), never on which batch it was
in, so the cache (`echobench.echoalign.cache`) can serve any subset of a dataset from earlier runs.

Generators are chosen by engine name (`--engine`) in the engine registry
(`echobench.engines.registry.ENGINES`: engine name → its settings class): `procedural` (an OpenCV
re-renderer for the `shapes` world, no download) and the diffusion engines (`eager`, `compile`,
`onnxruntime`, `tensorrt`), which all run the same EchoMod loop (`echobench.echoalign.diffusion`) and
differ only in how one denoising step is computed.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Protocol

import numpy as np

from echobench.engines.registry import ENGINES, is_diffusion_engine
from echobench.errors import EchobenchError


class Modifier(Protocol):
    def config(self) -> dict[str, Any]:
        """JSON-able description of everything that determines the output (model ids, steps, ...)."""

    def generate(self, images: np.ndarray, labels: np.ndarray, seeds: np.ndarray) -> np.ndarray:
        """Modified uint8 images (same shape as `images`), one per (image, target label, seed)."""


def register_engine(name: str):
    """Decorator: register an EchoMod engine's settings class (an `echobench.engines.options.EngineSettings`
    dataclass; see engines/registry.py) under `name` (a plugin's too)."""
    return ENGINES.register(name)


def _check_engine(obj, name: str, source) -> None:
    from echobench.engines.options import EngineSettings

    if not (isinstance(obj, type) and issubclass(obj, EngineSettings)):
        raise EchobenchError(f"{getattr(source, 'label', 'a plugin')}: engine {name!r} is {obj!r}, not a subclass "
                             f"of echobench.engines.options.EngineSettings")


ENGINES.check = ENGINES.check or _check_engine  # the engine registry lives in engines/registry.py


def default_engine(dataset: str) -> str:
    """`shapes` has a procedural engine that needs no download; real datasets use diffusion."""
    return "procedural" if dataset == "shapes" else "eager"


def sample_seeds(base_seed: int, dataset_key: str, indices: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """One 63-bit seed per sample from (base seed, dataset, index, label).

    Hash-derived, so a sample's seed (and with it its initial latent) never depends on the batch it
    is generated in, nor on the other samples of the run.
    """
    prefix = f"{int(base_seed)}|{dataset_key}|".encode()
    out = np.empty(len(indices), dtype=np.int64)
    for k, (i, y) in enumerate(zip(np.asarray(indices).tolist(), np.asarray(labels).tolist())):
        digest = hashlib.sha256(prefix + f"{i}|{y}".encode()).digest()
        out[k] = int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF
    return out


def generator_taus(engine: str, options: dict[str, Any] | None, extractor: str) -> tuple[float, float] | None:
    """EchoSelect's (low-noise, high-noise) τ calibrated for the generator `engine` + `options` runs,
    with `extractor`: a trained diffusion model's own (`diffusion_configs.calibrated_taus`); None
    where the generator has none (the extractor's defaults apply)."""
    if not is_diffusion_engine(engine):
        return None
    from echobench.echoalign.diffusion_configs import calibrated_taus

    return calibrated_taus(str((options or {}).get("model", "sd15")), extractor)


def config_digest(config: dict[str, Any]) -> str:
    """A short stable hash of a generator config: part of the cache key."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def modifier_config(engine: str, dataset: str, class_names: list[str], image_size: int,
                    options: dict[str, Any] | None = None, device: str = "cpu") -> dict[str, Any] | None:
    """`make_modifier(...).config()` (the cache key) computed from the settings alone, without loading a
    model or building an engine: for the diffusion engines, whose building loads SD 1.5; None for the
    others (cheap to build)."""
    if not class_names or not is_diffusion_engine(engine):
        return None
    from echobench.echoalign.diffusion import diffusion_modifier_config

    return diffusion_modifier_config(engine, dataset, list(class_names), int(image_size), dict(options or {}), device)


def make_modifier(engine: str, dataset: str, class_names: list[str], image_size: int,
                  options: dict[str, Any] | None = None, device: str = "cpu") -> Modifier:
    """The generator called `engine` for `dataset` (errors name the engine and what to install): the
    EchoMod diffusion loop around a diffusion engine, or the engine's own generator."""
    if not class_names:
        raise EchobenchError(
            f"dataset {dataset!r} has no class names, and EchoMod's prompts are 'a photo of {{class name}}': "
            "give the dataset class names before running EchoMod on it"
        )
    settings_cls = ENGINES.get(engine)
    if settings_cls.diffusion:
        from echobench.echoalign.diffusion import make_diffusion_modifier

        return make_diffusion_modifier(engine, dataset, list(class_names), int(image_size), dict(options or {}), device)
    factory = settings_cls.load_implementation()
    return factory(dataset=dataset, class_names=list(class_names), image_size=int(image_size),
                   options=dict(options or {}), device=device)
