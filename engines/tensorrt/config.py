"""Settings of the TensorRT engine and its plan cache, importable without torch or TensorRT.

A TensorRT plan (serialised engine) is specific to the GPU model, the TensorRT version, the graph it
was built from and its optimisation profile; loading one built elsewhere fails or, worse, runs kernels
tuned for another device. Building one for the SD 1.5 UNet + ControlNet takes minutes and a lot of
host and GPU memory (TensorRT diffusion demo), so plans are cached:

    <engine cache>/tensorrt/<model digest>-<dtype>/<plan digest>.plan   the serialised engine
    <engine cache>/tensorrt/<model digest>-<dtype>/<plan digest>.json   the fields of its key
    <engine cache>/tensorrt/timing-<gpu>-<capability>-trt<version>.cache  TensorRT's timing cache

The plan key (`plan_key`) holds the ONNX graph's key (model identity, per-row shapes, dtype, opset,
exporter, torch version), the optimisation profile in rows, the precision flags, the GPU's name and
compute capability and the TensorRT version. A model's folder can hold plans for several keys; when
none matches, the plans that are there are described in the message that announces the rebuild
(`find_plan`), e.g. a plan built on another GPU or with another TensorRT.

`fp16`: allow FP16 kernels (the demo's default; the graph itself is in EchoMod's dtype, float16 on a
GPU by default). `optimization_level`: TensorRT's builder optimisation level (0–5, default 3).
`workspace_gb`: limit of the builder's workspace memory pool (0: TensorRT's default, the device's
memory). `exporter`, `opset`, `cache_dir`: as for the ONNX Runtime engine.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from echobench.errors import EchobenchError
from echobench.engines.export import DEFAULT_OPSET, EXPORTERS
from echobench.engines.options import EngineSettings
from echobench.engines.step_shapes import StepShapes


@dataclass(frozen=True)
class TensorRTConfig(EngineSettings):
    name = "tensorrt"
    implementation = "echobench.engines.tensorrt.engine:TensorRTEngine"

    fp16: bool = True
    exporter: str = "dynamo"
    opset: int = DEFAULT_OPSET
    optimization_level: int = 3
    workspace_gb: float = 0.0
    cache_dir: str = ""

    def __post_init__(self) -> None:
        problems = []
        if self.exporter not in EXPORTERS:
            problems.append(f"unknown exporter {self.exporter!r}; use one of {', '.join(EXPORTERS)}")
        if not 0 <= self.optimization_level <= 5:
            problems.append(f"optimization_level must lie in 0..5 (got {self.optimization_level})")
        if self.workspace_gb < 0:
            problems.append(f"workspace_gb must be >= 0 (got {self.workspace_gb})")
        if problems:
            raise EchobenchError("tensorrt engine: " + "; ".join(problems))

    def engine_config(self, device: str) -> dict[str, Any]:
        return {"name": self.name, "fp16": self.fp16, "optimization_level": self.optimization_level,
                "exporter": self.exporter, "opset": self.opset}


def profile_rows(shapes: StepShapes) -> tuple[int, int, int]:
    """(min, opt, max) rows of the one optimisation profile: one image to a full batch, tuned for the
    full batch (all batches but a run's last are full)."""
    return shapes.min_rows, shapes.max_rows, shapes.max_rows


def plan_key(onnx_key: str, shapes: StepShapes, settings: TensorRTConfig, gpu: str, capability: str,
             tensorrt_version: str) -> dict[str, Any]:
    """The fields that decide whether a cached plan can be used (see the module docstring)."""
    return {
        "format": 1, "onnx": onnx_key, "rows": list(profile_rows(shapes)), "row_shapes": shapes.row_shapes(),
        "fp16": bool(settings.fp16), "optimization_level": int(settings.optimization_level),
        "gpu": gpu, "compute_capability": capability, "tensorrt": tensorrt_version,
    }


def plan_digest(fields: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:20]


# Key fields worth naming when a plan has to be rebuilt, in the order they are reported.
_DESCRIBED = {
    "gpu": "GPU", "compute_capability": "compute capability", "tensorrt": "TensorRT",
    "rows": "profile rows (min, opt, max)", "row_shapes": "shapes", "fp16": "fp16",
    "optimization_level": "optimization level", "onnx": "ONNX graph",
}


def plan_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between the key of a cached plan and the wanted one, for people."""
    out = []
    for name, label in _DESCRIBED.items():
        if old.get(name) != new.get(name):
            if name == "row_shapes":
                changed = sorted(k for k in set(old.get(name) or {}) | set(new.get(name) or {})
                                 if (old.get(name) or {}).get(k) != (new.get(name) or {}).get(k))
                out.append(f"shapes ({', '.join(changed)})")
            else:
                out.append(f"{label} {old.get(name)!r} → {new.get(name)!r}")
    return out


def find_plan(folder: Path, fields: dict[str, Any]) -> tuple[Path | None, str | None]:
    """(the cached plan for exactly `fields`, None), or (None, a message saying why the plans in
    `folder` do not fit, or None when there are none)."""
    digest = plan_digest(fields)
    plan, meta = folder / f"{digest}.plan", folder / f"{digest}.json"
    if plan.exists() and _read_json(meta) == fields:
        return plan, None
    others = []
    for path in sorted(folder.glob("*.json")):
        old = _read_json(path)
        if old is None or not (folder / f"{path.stem}.plan").exists():
            continue
        differences = plan_differences(old, fields)
        others.append(f"{path.stem}.plan: {'; '.join(differences) or 'unreadable key'}")
    if not others:
        return None, None
    return None, (f"building a new TensorRT plan: none of the {len(others)} plan(s) cached in {folder} fits "
                  f"this GPU ({fields['gpu']}), TensorRT {fields['tensorrt']} and these shapes — "
                  + " | ".join(others) + ". Building takes minutes; the new plan is cached beside them.")


def timing_cache_name(gpu: str, capability: str, tensorrt_version: str) -> str:
    """TensorRT's timing cache is only valid for one device type and TensorRT version."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", gpu).strip("-").lower() or "gpu"
    return f"timing-{slug}-sm{capability.replace('.', '')}-trt{tensorrt_version}.cache"


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None
