"""Settings of the eager engine (plain diffusers modules), importable without torch or diffusers.

`dtype` "auto" is float16 on a GPU and float32 on a CPU (see `engines.options`). channels_last (the
memory layout of cuDNN's NHWC kernels) is off unless asked for: measured in one run of `echobench
bench engines --config sd15 --random-init --batch-sizes 16 --engines eager "eager[channels_last=false]"`
on an H200 (float16, 512², 20 steps; reports/gpu/tuned/), eager with channels_last made 4.76 images/s
and without it 5.13, the stock pipeline 5.02. The layout converts back and forth around the UNet's
attention and normalisation layers in eager mode; torch.compile plans the layout once, so the compile
engine keeps channels_last on a GPU. On CPUs it brings nothing measurable for these shapes.

`fuse_qkv`: one matmul for each attention layer's projections (`engines.base.fuse_qkv_projections`).
Off by default: it has not been timed on a GPU yet.
"""

from __future__ import annotations

from dataclasses import dataclass

from echobench.errors import EchobenchError
from engines.options import DTYPES, is_gpu, resolve_dtype

__all__ = ["DTYPES", "EagerConfig", "is_gpu"]


@dataclass(frozen=True)
class EagerConfig:
    """`dtype`: "auto" (float16 on GPU, float32 on CPU) or a name in `DTYPES`;
    `channels_last`: None or False (off: see the module docstring) or True; `fuse_qkv`: fused
    attention projections."""

    dtype: str = "auto"
    channels_last: bool | None = None
    fuse_qkv: bool = False

    def __post_init__(self) -> None:
        if self.dtype != "auto" and self.dtype not in DTYPES:
            raise EchobenchError(
                f"eager engine: unknown dtype {self.dtype!r}; use auto or one of {', '.join(sorted(DTYPES))}"
            )

    def resolve(self, device: str) -> "EagerConfig":
        """The same settings with "auto"/None replaced by the concrete choice for `device`."""
        dtype = resolve_dtype(self.dtype, device)
        return EagerConfig(dtype=dtype, channels_last=bool(self.channels_last), fuse_qkv=bool(self.fuse_qkv))

    def torch_dtype(self):
        """The torch dtype of a resolved config (imports torch)."""
        import torch

        if self.dtype == "auto":
            raise ValueError("resolve(device) the config before asking for its torch dtype")
        return getattr(torch, DTYPES[self.dtype])
