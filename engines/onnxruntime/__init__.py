"""The ONNX Runtime engine: the fused ControlNet + UNet step exported to ONNX and run by onnxruntime.

`OnnxRuntimeConfig` imports nothing heavy; `OnnxRuntimeEngine` (in `engine.py`) imports torch and is
loaded on first access; onnxruntime itself is imported when the engine loads.
"""

from __future__ import annotations

from typing import Any

from .config import OnnxRuntimeConfig

__all__ = ["OnnxRuntimeConfig", "OnnxRuntimeEngine"]


def __getattr__(name: str) -> Any:
    if name == "OnnxRuntimeEngine":
        from .engine import OnnxRuntimeEngine

        return OnnxRuntimeEngine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
