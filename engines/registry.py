"""The engine registry: one entry per EchoMod engine, its settings class (`EngineSettings`).

Entries are lazy "module:attr" strings, so listing engine names imports nothing; resolving one
imports only the engine's `config.py`. The entry says everything the rest of echobench asks about an
engine: its options and their defaults, whether it is a diffusion engine, its part of EchoMod's cache
key, and what runs it (`EngineSettings.implementation`, imported when an engine is built).
"""

from __future__ import annotations

from echobench.engines.options import EngineSettings
from echobench.registry import Registry

ENGINES: Registry[type[EngineSettings]] = Registry("engine")
ENGINES.add("procedural", "echobench.engines.procedural.config:ProceduralConfig")  # OpenCV, `shapes` only
ENGINES.add("eager", "echobench.engines.eager.config:EagerConfig")  # diffusers modules, the reference
ENGINES.add("compile", "echobench.engines.compile.config:CompileConfig")  # torch.compile of the fused step
ENGINES.add("onnxruntime", "echobench.engines.onnxruntime.config:OnnxRuntimeConfig")  # the step exported to ONNX
ENGINES.add("tensorrt", "echobench.engines.tensorrt.config:TensorRTConfig")  # a TensorRT plan; CUDA only


def is_diffusion_engine(name: str) -> bool:
    """Whether engine `name` computes the denoising step of EchoMod's diffusion loop (its entry's
    `diffusion`); False for generators of their own (`procedural`) and for unknown names."""
    return name in ENGINES and ENGINES.get(name).diffusion


def diffusion_engines() -> list[str]:
    """The names of the diffusion engines."""
    return [name for name in ENGINES.names() if is_diffusion_engine(name)]
