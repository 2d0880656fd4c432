"""Settings of the compile engine (`torch.compile` of the fused step), importable without torch.

`mode` "auto" follows the diffusers "torch2.0" / "Accelerate inference" documentation on a GPU:
`torch.compile(..., mode="reduce-overhead", fullgraph=True)`, whose CUDA graphs remove the launch
overhead of the UNet's many small kernels; CUDA graphs need a CUDA device, so on a CPU "auto" is
inductor's "default" mode. "max-autotune" also records CUDA graphs; "max-autotune-no-cudagraphs"
benchmarks kernels without them. `fullgraph=True` turns a graph break (a Python fallback in the
middle of the step) into an error instead of a silent slowdown. `channels_last` as for the eager
engine (GPU only by default).

Two more options follow the diffusers "Accelerate inference of text-to-image diffusion models"
tutorial; both leave the math unchanged (only kernel choice and rounding differ):
- `compile_vae`: also compile the VAE decode (padded to the full batch, without CUDA graphs: it runs once per
  batch). "auto" (None) turns it on on a GPU, where it was measured faster, and off on a CPU, where
  inductor's C++ compile of the decoder costs more than it saves on small runs;
- `inductor_flags`: "default", or "diffusers" = the tutorial's inductor settings (`conv_1x1_as_mm`,
  `coordinate_descent_tuning`, `coordinate_descent_check_all_directions` on, `epilogue_fusion` off),
  passed to this engine's `torch.compile(options=...)`, so that they are part of what dynamo compares
  before it reuses a graph (see `engine.py`). Coordinate-descent tuning benchmarks each kernel's launch
  parameters, so compiling takes longer. Off by default: it was not faster.

A third, `fuse_qkv` (the tutorial's fused attention projections, `echobench.engines.base.fuse_qkv_projections`),
is off by default: it has not been timed on a GPU yet.

The measurements behind these defaults: reports/gpu/README.md, section 2.

`compile_vae` was called `vae` until issue 19: `vae` is `DiffusionConfig`'s tiny-decoder model id (an
approximate setting), and one option namespace cannot give one name two meanings. The rename changed
the engine's part of the cache key of runs that compiled the VAE (`"vae": true` → `"compile_vae": true`;
README, "Cache keys").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from echobench.errors import EchobenchError
from echobench.engines.options import EngineSettings, is_gpu

MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
INDUCTOR_FLAGS = {
    "default": {},
    "diffusers": {"conv_1x1_as_mm": True, "coordinate_descent_tuning": True, "epilogue_fusion": False,
                  "coordinate_descent_check_all_directions": True},
}
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")


@dataclass(frozen=True)
class CompileConfig(EngineSettings):
    """`backend`: a torch.compile backend ("inductor"; "aot_eager" traces the same graph without
    generating code, for quick checks); `mode`: "auto" or one of `MODES` (inductor only)."""

    name = "compile"
    implementation = "echobench.engines.compile.engine:CompileEngine"

    backend: str = "inductor"
    mode: str = "auto"
    fullgraph: bool = True
    channels_last: bool | None = None
    compile_vae: bool | None = None
    inductor_flags: str = "default"
    fuse_qkv: bool = False

    def __post_init__(self) -> None:
        if self.inductor_flags not in INDUCTOR_FLAGS:
            raise EchobenchError(f"compile engine: unknown inductor_flags {self.inductor_flags!r}; use one of "
                                 f"{', '.join(INDUCTOR_FLAGS)}")
        if self.inductor_flags != "default" and self.backend != "inductor":
            raise EchobenchError(f"compile engine: inductor_flags={self.inductor_flags!r} needs backend inductor "
                                 f"(backend is {self.backend!r})")
        if self.mode != "auto" and self.mode not in MODES:
            raise EchobenchError(f"compile engine: unknown mode {self.mode!r}; use auto or one of {', '.join(MODES)}")
        if self.mode not in ("auto", "default") and self.backend != "inductor":
            raise EchobenchError(f"compile engine: mode {self.mode!r} is an inductor mode, but backend is "
                                 f"{self.backend!r}")

    def resolve(self, device: str) -> "CompileConfig":
        """The same settings with "auto"/None replaced by the concrete choice for `device`."""
        gpu = is_gpu(device)
        mode = self.mode
        if mode == "auto":
            mode = "reduce-overhead" if gpu and self.backend == "inductor" else "default"
        if mode in CUDA_GRAPH_MODES and not gpu:
            raise EchobenchError(f"compile engine: mode {mode!r} records CUDA graphs, which need a CUDA device "
                                 f"(device is {device!r}); use mode=default or auto")
        channels_last = gpu if self.channels_last is None else bool(self.channels_last)
        return CompileConfig(backend=self.backend, mode=mode, fullgraph=self.fullgraph, channels_last=channels_last,
                             compile_vae=gpu if self.compile_vae is None else bool(self.compile_vae),
                             inductor_flags=self.inductor_flags,
                             fuse_qkv=bool(self.fuse_qkv))

    @property
    def cuda_graphs(self) -> bool:
        return self.mode in CUDA_GRAPH_MODES

    def compile_options(self, step: bool = True) -> dict[str, Any] | None:
        """What this engine passes to `torch.compile(options=...)` (inductor only; None otherwise): the
        mode's inductor settings (`torch._inductor.list_mode_options`, which is what `mode=` expands
        to; `torch.compile` takes one of mode and options) and the inductor flags. `step=False`: the
        VAE decode's, which runs once per batch: no CUDA graphs. Imports torch."""
        if self.backend != "inductor":
            return None
        from torch._inductor import list_mode_options

        options = dict(list_mode_options(self.mode)) if step else {}
        options.update(INDUCTOR_FLAGS[self.inductor_flags])
        return options

    def engine_config(self, device: str) -> dict[str, Any]:
        # Only when set: older cache keys stay valid.
        extra: dict[str, Any] = {"compile_vae": True} if self.compile_vae else {}
        if self.inductor_flags != "default":
            extra["inductor_flags"] = self.inductor_flags
        if self.fuse_qkv:
            extra["fuse_qkv"] = True
        return {"name": self.name, "backend": self.backend, "mode": self.mode, "fullgraph": self.fullgraph,
                "channels_last": bool(self.channels_last), **extra}
