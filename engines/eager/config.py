"""Settings of the eager engine (plain diffusers modules), importable without torch or diffusers.

`dtype` "auto" is float16 on a GPU and float32 on a CPU (see `echobench.engines.options`); it is
EchoMod's dtype setting, recorded here. `channels_last` (the memory layout of cuDNN's NHWC kernels)
is off unless asked for: in eager mode the layout converts back and forth around the UNet's attention
and normalisation layers, and it was slower than the stock layout on a GPU (reports/gpu/README.md,
section 2); torch.compile plans the layout once, so the compile engine keeps channels_last on a GPU.

`fuse_qkv`: one matmul for each attention layer's projections
(`echobench.engines.base.fuse_qkv_projections`). Off by default: it has not been timed on a GPU yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from echobench.errors import EchobenchError
from echobench.engines.options import DTYPES, EngineSettings, resolve_dtype


@dataclass(frozen=True)
class EagerConfig(EngineSettings):
    """`dtype`: "auto" (float16 on GPU, float32 on CPU) or a name in `DTYPES`; `channels_last`: the
    NHWC layout for the UNet, ControlNet and VAE (off: see the module docstring); `fuse_qkv`: fused
    attention projections."""

    name = "eager"
    implementation = "echobench.engines.eager.engine:EagerEngine"

    dtype: str = "auto"
    channels_last: bool = False
    fuse_qkv: bool = False

    def __post_init__(self) -> None:
        if self.dtype != "auto" and self.dtype not in DTYPES:
            raise EchobenchError(
                f"eager engine: unknown dtype {self.dtype!r}; use auto or one of {', '.join(sorted(DTYPES))}"
            )

    def resolve(self, device: str) -> "EagerConfig":
        """The same settings with dtype "auto" replaced by the concrete choice for `device`."""
        return EagerConfig(dtype=resolve_dtype(self.dtype, device), channels_last=bool(self.channels_last),
                           fuse_qkv=bool(self.fuse_qkv))

    def engine_config(self, device: str) -> dict[str, Any]:
        # The dtype is reported by EchoMod from the loaded modules; the layout can change kernels.
        extra = {"fuse_qkv": True} if self.fuse_qkv else {}  # only when set: older cache keys stay valid
        return {"name": self.name, "channels_last": bool(self.channels_last), **extra}

    def torch_dtype(self):
        """The torch dtype of a resolved config (imports torch)."""
        import torch

        if self.dtype == "auto":
            raise ValueError("resolve(device) the config before asking for its torch dtype")
        return getattr(torch, DTYPES[self.dtype])
