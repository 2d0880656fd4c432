"""The eager engine: the diffusers ControlNet and UNet called directly (the reference engine).

`EagerConfig` imports nothing heavy; `EagerEngine` (in `engine.py`) imports torch and is loaded on
first access.
"""

from __future__ import annotations

from typing import Any

from .config import EagerConfig

__all__ = ["EagerConfig", "EagerEngine"]


def __getattr__(name: str) -> Any:
    if name == "EagerEngine":
        from .engine import EagerEngine

        return EagerEngine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
