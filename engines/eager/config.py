"""Settings of the eager engine (plain diffusers modules), importable without torch or diffusers.

The paper runs EchoMod in mixed precision on V100 and RTX 4090 GPUs (appendix C, Tables 6/7). Here
"auto" means float16 on a GPU, where the tensor cores need it, and float32 on a CPU, where float16
kernels are slow or missing. channels_last is the memory layout that cuDNN's fastest convolution
kernels use on GPUs; on CPUs it brings nothing measurable for these shapes, so "auto" leaves it off.
"""

from __future__ import annotations

from dataclasses import dataclass

from echobench.errors import EchobenchError

# Accepted spellings → the torch attribute name.
DTYPES = {
    "float16": "float16", "fp16": "float16", "half": "float16",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float32": "float32", "fp32": "float32", "float": "float32",
}


def is_gpu(device: str) -> bool:
    """True for CUDA devices ("cuda", "cuda:1")."""
    return str(device).startswith("cuda")


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
        gpu = is_gpu(device)
        dtype = ("float16" if gpu else "float32") if self.dtype == "auto" else DTYPES[self.dtype]
        channels_last = gpu if self.channels_last is None else bool(self.channels_last)
        return EagerConfig(dtype=dtype, channels_last=channels_last)

    def torch_dtype(self):
        """The torch dtype of a resolved config (imports torch)."""
        import torch

        if self.dtype == "auto":
            raise ValueError("resolve(device) the config before asking for its torch dtype")
        return getattr(torch, DTYPES[self.dtype])
