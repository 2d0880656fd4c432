"""The TensorRT engine: a TensorRT plan built from the fused ControlNet + UNet ONNX graph.

`TensorRTConfig` and the plan-cache logic (`config.py`) import nothing heavy and are testable without
TensorRT; `TensorRTEngine` (in `engine.py`) imports torch and is loaded on first access; tensorrt
itself is imported when the engine loads.
"""

from __future__ import annotations

from typing import Any

from .config import TensorRTConfig

__all__ = ["TensorRTConfig", "TensorRTEngine"]


def __getattr__(name: str) -> Any:
    if name == "TensorRTEngine":
        from .engine import TensorRTEngine

        return TensorRTEngine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
