"""The compile engine: the fused ControlNet + UNet step through `torch.compile`.

`CompileConfig` imports nothing heavy; `CompileEngine` (in `engine.py`) imports torch and is loaded
on first access.
"""

from __future__ import annotations

from typing import Any

from .config import CompileConfig

__all__ = ["CompileConfig", "CompileEngine"]


def __getattr__(name: str) -> Any:
    if name == "CompileEngine":
        from .engine import CompileEngine

        return CompileEngine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
