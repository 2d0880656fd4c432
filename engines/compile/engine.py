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

Every engine compiles its own graphs, with its own settings (issue 19). Dynamo keeps compiled graphs
per *code object* and reuses one whenever its guards pass and the backend compares equal; inductor's
backend compares only the `mode`/`options` given to `torch.compile`, and `torch.compile(module)`
enters through `nn.Module.__call__`, a code object every compiled module in the process shares. So a
second engine on the same modules used to run the first one's graphs, flags applied with
`config.patch` were silently ignored, and eight engines exhausted dynamo's recompile limit. Here:

- the step and the decode are compiled as functions with a code object (and globals, where dynamo
  installs the compiled graphs) private to this engine (`private_function`): no other engine can
  find its graphs, and they are freed with it;
- inductor's settings go through `torch.compile(options=...)` (`CompileConfig.compile_options`),
  so they are applied to exactly this engine's compilation;
- `close()` drops the functions (and so the graphs and the dynamo cache entries on their code
  objects), frees the CUDA graph trees when the engine recorded any, and returns cached CUDA memory,
  so the out-of-memory retry that rebuilds the engine at a smaller batch really gets memory back.

`build_info` says what was built: `graphs` (dynamo cache entries of this engine's code objects, i.e.
graphs compiled for this engine), `compile_seconds` (the warm-up calls that compile them), the
inductor options, and inductor's FX-graph-cache hits and misses during the build (a hit reuses
generated code from the on-disk cache, for an identical graph with identical settings: a shorter
but honest compile time).
"""

from __future__ import annotations

import gc
import os
import shutil
import time
import types
from typing import Any, Callable

import torch

from echobench.errors import EchobenchError
from echobench.engines.base import Components, DenoiserEngine, fuse_qkv_projections
from echobench.engines.fused import FusedControlNetUNet, example_inputs, pad_rows, step_inputs
from echobench.engines.step_shapes import BATCHED_INPUTS, INPUT_NAMES, StepShapes, check_rows, require_shapes
from echobench.engines.compile.config import CompileConfig

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
        self._step: Callable | None = None
        self._decode: Callable | None = None
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
        self._step = private_function(_step_of(fused))
        self.compiled = torch.compile(self._step, backend=s.backend, fullgraph=s.fullgraph, dynamic=False,
                                      options=s.compile_options(step=True))
        if s.compile_vae:  # once per batch: no CUDA graphs
            self._decode = private_function(_decode_of(components.vae))
            self.compiled_decode = torch.compile(self._decode, backend=s.backend, fullgraph=s.fullgraph,
                                                 dynamic=False, options=s.compile_options(step=False))
        calls = CUDA_GRAPH_WARMUP_CALLS if s.cuda_graphs else 1
        before = _fx_cache_counters()
        start = time.perf_counter()
        with torch.inference_mode():  # dynamo guards on grad mode
            inputs = example_inputs(self.shapes, self.shapes.max_rows, components.unet.device, components.unet.dtype)
            for _ in range(calls):
                self._run(inputs)
            if s.compile_vae:
                self.decode(inputs["sample"][: self.shapes.batch_size])
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        after = _fx_cache_counters()
        self.build_info = {"compile_seconds": round(time.perf_counter() - start, 3), "warmup_calls": calls,
                           "rows": self.shapes.max_rows, "graphs": self.graphs(),
                           "inductor_options": s.compile_options(step=True),
                           "fx_graph_cache_hits": after[0] - before[0], "fx_graph_cache_misses": after[1] - before[1]}

    def graphs(self) -> int:
        """Graphs compiled for this engine: dynamo's cache entries on its private code objects."""
        return sum(cache_entries(f) for f in (self._step, self._decode) if f is not None)

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
        """Drop the compiled graphs (with the private code objects that hold dynamo's cache entries
        and the globals that hold the compiled functions), the CUDA graphs this engine recorded, and
        the CUDA memory cached for them."""
        cuda_graphs = self.settings.cuda_graphs and self.compiled is not None
        for function in (self._step, self._decode):
            if function is not None:
                forget_graphs(function)
        self.compiled = self.compiled_decode = None
        self._step = self._decode = None
        super().close()
        if cuda_graphs:
            # The cudagraph trees (and their memory pool) are per device and process; an engine that
            # recorded graphs is the only one on its device in EchoMod and in `bench engines`.
            from torch._inductor.cudagraph_trees import reset_cudagraph_trees

            reset_cudagraph_trees()
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def _step_of(fused: torch.nn.Module) -> Callable:
    def step(sample, timestep, encoder_hidden_states, controlnet_cond, conditioning_scale):
        return fused(sample, timestep, encoder_hidden_states, controlnet_cond, conditioning_scale)

    return step


def _decode_of(vae: torch.nn.Module) -> Callable:
    def decode(latents):
        return vae.decode(latents, return_dict=False)[0]

    return decode


def private_function(function: Callable) -> Callable:
    """`function` with a code object and a globals dict of its own.

    Dynamo attaches its compiled graphs (cache entries) to the code object, and installs the compiled
    functions as globals of the frame's module; a function made by a closure shares its code object
    with every other closure made by the same `def`. A private copy of both gives each engine a cache
    of its own, found by no other engine and freed (cache entries, and through them the compiled
    functions in the private globals) when the engine drops the function."""
    return types.FunctionType(function.__code__.replace(), dict(function.__globals__), function.__name__,
                              function.__defaults__, function.__closure__)


def cache_entries(function: Callable) -> int:
    """How many compiled graphs dynamo holds for `function`'s code object."""
    from torch._C._dynamo.eval_frame import _debug_get_cache_entry_list

    return len(_debug_get_cache_entry_list(function.__code__))


def forget_graphs(function: Callable) -> None:
    """Drop dynamo's cache entries of `function`'s code object. Dropping the function is not enough:
    dynamo maps each compiled (output) code object back to its original one (`orig_code_map`), and the
    original's cache entries hold the output code, a cycle through C++ state that the garbage
    collector cannot see, so the graphs would live as long as the process."""
    from torch._C._dynamo.eval_frame import reset_code

    reset_code(function.__code__)


def _fx_cache_counters() -> tuple[int, int]:
    from torch._dynamo.utils import counters

    return int(counters["inductor"]["fxgraph_cache_hit"]), int(counters["inductor"]["fxgraph_cache_miss"])


def _require_cpp_compiler() -> None:
    """Inductor generates C++ for CPU kernels; without a compiler it fails deep inside the first call."""
    if os.environ.get("CXX") or any(shutil.which(name) for name in ("g++", "c++", "clang++")):
        return
    raise EchobenchError("the compile engine's inductor backend needs a C++ compiler on a CPU (g++ or clang++; "
                         "none found on PATH and $CXX is unset): install one, or use backend=aot_eager or the "
                         "eager engine")
