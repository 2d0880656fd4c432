"""The compile engine: the fused ControlNet + UNet step (`echobench.engines.fused`) through `torch.compile`.

Following the diffusers "torch2.0" / "Accelerate inference of text-to-image diffusion models"
documentation, the networks of the hot loop are compiled and the VAE stays eager (it runs once per
image). Unlike the documentation, ControlNet and UNet are compiled as one function, the TensorRT
demo's `UNet2DConditionControlNetModel`, so that the residuals between them are part of one graph.

Shapes are fixed: `torch.compile(dynamic=False)` specialises on the input shapes and would recompile
for the last, smaller batch of a run (CUDA graphs even need the same shapes on every replay), so every
step is padded to the full batch (`StepShapes.max_rows`) and the padding rows are dropped from the
output. Rows never interact, so the padding changes no real row; the compile happens once, in `load`,
on example inputs of that shape (several calls for CUDA graphs, which are recorded after a warm-up).
Compiling takes a while, most with inductor on an empty inductor cache (measured build times:
reports/bench/README.md, "EchoMod engines").
"""

from __future__ import annotations

import os
import shutil
import time
from typing import Any

import torch

from echobench.errors import EchobenchError
from echobench.engines.base import Components, DenoiserEngine, fuse_qkv_projections
from echobench.engines.fused import FusedControlNetUNet, example_inputs, pad_rows, step_inputs
from echobench.engines.step_shapes import BATCHED_INPUTS, INPUT_NAMES, StepShapes, check_rows, require_shapes
from echobench.engines.compile.config import INDUCTOR_FLAGS, CompileConfig

CUDA_GRAPH_WARMUP_CALLS = 3  # cudagraph trees run eagerly once, then record, then replay


class CompileEngine(DenoiserEngine):
    """ControlNet + UNet compiled as one function, run at one fixed batch of `shapes.max_rows` rows."""

    name = CompileConfig.name

    def __init__(self, settings: CompileConfig, shapes: StepShapes | None = None, device: str = "cpu"):
        if settings.mode == "auto" or settings.channels_last is None:
            raise ValueError("CompileEngine needs a resolved CompileConfig: CompileConfig(...).resolve(device)")
        self.settings = settings
        self.shapes = require_shapes(self.name, shapes)
        self.device = torch.device(device)
        self.compiled = None
        self.compiled_decode = None
        self.build_info: dict[str, Any] = {}

    def load(self, components: Components) -> None:
        s = self.settings
        if s.backend == "inductor" and self.device.type == "cpu":
            _require_cpp_compiler()
        if s.channels_last:
            for module in (components.unet, components.controlnet, components.vae):
                module.to(memory_format=torch.channels_last)
        if s.fuse_qkv:
            fuse_qkv_projections(components)
        self.components = components
        fused = FusedControlNetUNet(components.controlnet, components.unet).eval()
        options = {"mode": s.mode} if s.backend == "inductor" else {}
        self.compiled = torch.compile(fused, backend=s.backend, fullgraph=s.fullgraph, dynamic=False, **options)
        if s.vae:  # once per batch: no CUDA graphs, inductor's default mode
            vae = components.vae
            self.compiled_decode = torch.compile(lambda z: vae.decode(z, return_dict=False)[0], backend=s.backend,
                                                 fullgraph=s.fullgraph, dynamic=False)
        calls = CUDA_GRAPH_WARMUP_CALLS if s.cuda_graphs else 1
        start = time.perf_counter()
        # Inductor reads its config when it compiles, i.e. during the first calls: the flags apply to
        # this engine's graphs only.
        with torch.inference_mode(), inductor_config(s.inductor_flags):  # dynamo guards on grad mode
            inputs = example_inputs(self.shapes, self.shapes.max_rows, components.unet.device, components.unet.dtype)
            for _ in range(calls):
                self._run(inputs)
            if s.vae:
                self.decode(inputs["sample"][: self.shapes.batch_size])
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.build_info = {"compile_seconds": round(time.perf_counter() - start, 3), "warmup_calls": calls,
                           "rows": self.shapes.max_rows}

    def _run(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.settings.cuda_graphs:
            # Each denoising step is a new iteration for cudagraph trees: outputs of the previous
            # replay may be overwritten (denoise returns a copy).
            torch.compiler.cudagraph_mark_step_begin()
        return self.compiled(*(inputs[name] for name in INPUT_NAMES))

    @torch.inference_mode()
    def denoise(self, latents: Any, t: Any, text_emb: Any, control: Any, scale: float) -> Any:
        rows = latents.shape[0]
        check_rows(self.name, rows, self.shapes.min_rows, self.shapes.max_rows, self.shapes, "its fixed batch")
        inputs = step_inputs(latents, t, text_emb, control, scale)
        for name in BATCHED_INPUTS:
            inputs[name] = pad_rows(inputs[name], self.shapes.max_rows)
        # Dynamo guards on a tensor's dispatch keys, which differ between inference tensors (made in
        # inference mode, like the latents) and normal ones (the cached prompt embeddings, or a
        # padded copy of them): a mix would recompile the step. All inputs become inference tensors,
        # as the warm-up's are.
        inputs = {name: x if x.is_inference() else x.clone() for name, x in inputs.items()}
        out = self._run(inputs)
        # CUDA graph outputs live in memory the next replay reuses: hand back a copy.
        return out[:rows].clone() if self.settings.cuda_graphs else out[:rows]

    @torch.inference_mode()
    def decode(self, latents: Any) -> Any:
        if self.compiled_decode is None:
            return super().decode(latents)
        # The base class's decode with the compiled VAE, padded to the full batch (fixed shapes).
        rows = latents.shape[0]
        scaled = pad_rows(latents / self.components.vae.config.scaling_factor, self.shapes.batch_size)
        return (self.compiled_decode(scaled)[:rows] / 2 + 0.5).clamp(0, 1)

    def config(self) -> dict[str, Any]:
        return self.settings.engine_config(str(self.device))

    def close(self) -> None:
        self.compiled = None
        self.compiled_decode = None
        super().close()


def inductor_config(flags: str):
    """A context that sets the inductor flags named `flags` (`INDUCTOR_FLAGS`) and restores them."""
    import contextlib

    values = INDUCTOR_FLAGS[flags]
    if not values:
        return contextlib.nullcontext()
    import torch._inductor.config as config

    return config.patch(values)


def _require_cpp_compiler() -> None:
    """Inductor generates C++ for CPU kernels; without a compiler it fails deep inside the first call."""
    if os.environ.get("CXX") or any(shutil.which(name) for name in ("g++", "c++", "clang++")):
        return
    raise EchobenchError("the compile engine's inductor backend needs a C++ compiler on a CPU (g++ or clang++; "
                         "none found on PATH and $CXX is unset): install one, or use backend=aot_eager or the "
                         "eager engine")
