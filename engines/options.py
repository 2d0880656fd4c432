"""Settings shared by the diffusion engines, importable without torch: dtype names and devices.

The paper runs EchoMod in mixed precision on V100 and RTX 4090 GPUs (appendix C, Tables 6/7). "auto"
means float16 on a GPU, where the tensor cores need it, and float32 on a CPU, where float16 kernels
are slow or missing. Every engine runs the components in this one dtype, so that engines are compared
on the same numbers.
"""

from __future__ import annotations

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


def resolve_dtype(dtype: str, device: str) -> str:
    """"auto" → float16 on a GPU, float32 on a CPU; other names → their canonical torch name."""
    if dtype == "auto":
        return "float16" if is_gpu(device) else "float32"
    if dtype not in DTYPES:
        raise EchobenchError(f"unknown dtype {dtype!r}; use auto or one of {', '.join(sorted(DTYPES))}")
    return DTYPES[dtype]


def torch_dtype(name: str):
    """The torch dtype called `name` (a key of `DTYPES`; imports torch)."""
    import torch

    return getattr(torch, DTYPES[name])


def missing_runtime(engine: str, module: str, extra: str, detail: str = "") -> EchobenchError:
    """The error for an engine whose Python runtime cannot be imported: names the extra to install."""
    more = f" ({detail})" if detail else ""
    return EchobenchError(
        f"the {engine} engine needs the Python module {module!r}, which cannot be imported{more}: "
        f"pip install 'echobench[{extra}]'"
    )
