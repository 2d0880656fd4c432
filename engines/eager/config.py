"""Settings of the eager engine (plain diffusers modules), importable without torch or diffusers.

`dtype` "auto" is float16 on a GPU and float32 on a CPU (see `engines.options`). channels_last is the
memory layout that cuDNN's fastest convolution kernels use on GPUs; on CPUs it brings nothing
measurable for these shapes, so "auto" leaves it off.
"""

from __future__ import annotations

from dataclasses import dataclass

from echobench.errors import EchobenchError
from engines.options import DTYPES, is_gpu, resolve_dtype

__all__ = ["DTYPES", "EagerConfig", "is_gpu"]


@dataclass(frozen=True)
class EagerConfig:
    """`dtype`: "auto" (float16 on GPU, float32 on CPU) or a name in `DTYPES`;
    `channels_last`: None (on GPU only), True or False."""

    dtype: str = "auto"
    channels_last: bool | None = None

    def __post_init__(self) -> None:
        if self.dtype != "auto" and self.dtype not in DTYPES:
            raise EchobenchError(
                f"eager engine: unknown dtype {self.dtype!r}; use auto or one of {', '.join(sorted(DTYPES))}"
            )

    def resolve(self, device: str) -> "EagerConfig":
        """The same settings with "auto"/None replaced by the concrete choice for `device`."""
        dtype = resolve_dtype(self.dtype, device)
        channels_last = is_gpu(device) if self.channels_last is None else bool(self.channels_last)
        return EagerConfig(dtype=dtype, channels_last=channels_last)

    def torch_dtype(self):
        """The torch dtype of a resolved config (imports torch)."""
        import torch

        if self.dtype == "auto":
            raise ValueError("resolve(device) the config before asking for its torch dtype")
        return getattr(torch, DTYPES[self.dtype])
