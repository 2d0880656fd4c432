"""The fused ControlNet + UNet step as an ONNX graph, exported once and cached on disk.

Used by the ONNX Runtime engine (which runs the graph) and the TensorRT engine (which builds a plan
from it). The graph is `echobench.engines.fused.FusedControlNetUNet`, the TensorRT diffusion demo's
`UNet2DConditionControlNetModel`, with a dynamic batch axis on sample, encoder_hidden_states and
controlnet_cond, so one export serves every batch size.

Exporters (`torch.onnx.export`, see the PyTorch "torch.onnx" documentation):
- "dynamo" (default): the `torch.export`-based exporter, PyTorch's default since 2.9; it needs
  `onnxscript`. Almost all of its time is tracing.
- "torchscript": the legacy tracing exporter the TensorRT demo uses; deprecated by PyTorch but much
  faster to export (export times: reports/bench/README.md, "EchoMod engines"). diffusers' upsampler
  checks `numel() * 2 > 2**31` in Python, which tracing bakes in as a constant: true for the shapes
  here (`EXPORT_MAX_ROWS` bounds them).

The cache key is everything that changes the graph: the model's identity (a digest of both modules'
configs and of every weight's bytes, so a fine-tuned checkpoint under the same name is not mistaken
for the original), the per-row shapes, the dtype, the device type, the opset, the exporter, and the
torch (and onnxscript) versions. Each key has its own folder, written under a temporary name and
renamed into place, so a concurrent or interrupted export never leaves a half-written graph behind.
ONNX protobufs cannot exceed 2 GB: graphs with more weights than `EXTERNAL_DATA_BYTES` keep them in
a side file (the fused SD 1.5 UNet + ControlNet is ≈ 2.4 GB even in float16).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from echobench import paths
from echobench.errors import EchobenchError

from echobench.engines.step_shapes import BATCHED_INPUTS, INPUT_NAMES, OUTPUT_NAME, StepShapes

EXPORTERS = ("dynamo", "torchscript")
DEFAULT_OPSET = 18  # supported by onnxruntime ≥ 1.14 and TensorRT 10's ONNX parser
GRAPH_FILE = "fused.onnx"
META_FILE = "meta.json"
# The largest step an exported graph accepts (rows; 2 per image with guidance). Bounded so that the
# exporter can decide diffusers' `numel() * 2 > 2**31` upsampling check: at SD 1.5's 64×64 latents
# that check turns true only beyond 1,638 rows.
EXPORT_MAX_ROWS = 512
# Leave room below protobuf's 2 GiB for the graph itself.
EXTERNAL_DATA_BYTES = 2**31 - 2**27


def engine_cache_root(explicit: str | os.PathLike | None = None) -> Path:
    """Where engines keep what they build: `explicit` (the caller's choice, e.g. an engine's
    `cache_dir` option), else $ECHOBENCH_ENGINE_CACHE, else an `_engines` folder under EchoMod's image
    cache (see `echobench.paths`), so that tests, which point that cache at a temporary directory,
    never write to the user's."""
    return paths.engine_cache(explicit)


def model_digest(*modules: Any) -> str:
    """sha256 of the modules' classes, configs and state dicts (names, dtypes, shapes and bytes).

    Hashing every byte costs about a second per GB (most of it the device-to-host copy for GPU
    weights); an export costs minutes, and a stale graph would silently run other weights.
    """
    import torch

    h = hashlib.sha256()
    for module in modules:
        config = dict(getattr(module, "config", {}) or {})
        h.update(type(module).__name__.encode())
        h.update(json.dumps(config, sort_keys=True, default=str).encode())
        for name, tensor in module.state_dict().items():
            h.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
            data = tensor.detach().reshape(-1).contiguous().cpu()
            h.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return h.hexdigest()


@dataclass(frozen=True)
class OnnxGraph:
    """An exported graph on disk: `path` (with its weights beside it when external), the cache `key`
    and its fields `meta`, whether it came from the cache (`reused`), and the export time in seconds
    (0 when reused)."""

    path: Path
    key: str
    meta: dict[str, Any] = field(default_factory=dict)
    reused: bool = False
    seconds: float = 0.0


def graph_key(model: str, shapes: StepShapes, dtype: str, device_type: str, opset: int,
              exporter: str) -> dict[str, Any]:
    """The fields that identify an exported graph (see the module docstring)."""
    import torch

    fields: dict[str, Any] = {
        "format": 1, "graph": "controlnet+unet", "inputs": list(INPUT_NAMES), "output": OUTPUT_NAME,
        "model": model, "row_shapes": shapes.row_shapes(), "max_rows": EXPORT_MAX_ROWS, "dtype": dtype,
        "device_type": device_type, "opset": int(opset), "exporter": exporter, "torch": torch.__version__,
    }
    if exporter == "dynamo":
        import onnxscript

        fields["onnxscript"] = onnxscript.__version__
    return fields


def key_digest(fields: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:20]


def export_fused_onnx(components: Any, shapes: StepShapes, *, exporter: str = "dynamo",
                      opset: int = DEFAULT_OPSET, cache_dir: str | os.PathLike | None = None,
                      model: str | None = None) -> OnnxGraph:
    """The fused step of `components` as an ONNX graph in the cache, exported when not there yet.

    `model` is the model digest when the caller has it already (`model_digest(controlnet, unet)`).
    """
    import torch

    if exporter not in EXPORTERS:
        raise EchobenchError(f"unknown ONNX exporter {exporter!r}; use one of {', '.join(EXPORTERS)}")
    if shapes.max_rows > EXPORT_MAX_ROWS:
        raise EchobenchError(f"a step of {shapes.max_rows} rows exceeds the exported graph's limit of "
                             f"{EXPORT_MAX_ROWS} rows: use a smaller batch_size")
    _require_exporter(exporter)
    unet = components.unet
    dtype = str(unet.dtype).removeprefix("torch.")
    fields = graph_key(model or model_digest(components.controlnet, unet), shapes, dtype,
                       unet.device.type, opset, exporter)
    key = key_digest(fields)
    root = engine_cache_root(cache_dir) / "onnx"
    folder = root / key
    if _complete(folder, fields):
        return OnnxGraph(folder / GRAPH_FILE, key, fields, reused=True)

    from echobench.engines.fused import FusedControlNetUNet, example_inputs

    root.mkdir(parents=True, exist_ok=True)
    fused = FusedControlNetUNet(components.controlnet, unet).eval()
    weight_bytes = sum(t.numel() * t.element_size() for t in fused.state_dict().values())
    external = weight_bytes > EXTERNAL_DATA_BYTES
    # Two rows per example: torch.export specialises dimensions of size 0 and 1.
    inputs = example_inputs(shapes, max(2, shapes.min_rows), unet.device, unet.dtype)
    staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=root))
    try:
        start = time.perf_counter()
        with torch.no_grad(), warnings.catch_warnings():
            # Tracing warnings about Python-side checks (see the module docstring) and the dynamo
            # exporter's note that the batch axis names coincide are expected.
            warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", message=".*axis name.*will not be used.*")
            if exporter == "torchscript":  # its deprecation notices: the choice was deliberate
                warnings.simplefilter("ignore", category=DeprecationWarning)
            _export(fused, inputs, staging / GRAPH_FILE, exporter, int(opset), external)
        seconds = time.perf_counter() - start
        meta = {**fields, "external_data": external, "export_seconds": round(seconds, 3)}
        (staging / META_FILE).write_text(json.dumps(meta, indent=1, sort_keys=True))
        _install(staging, folder, fields)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return OnnxGraph(folder / GRAPH_FILE, key, fields, reused=False, seconds=seconds)


def _require_exporter(exporter: str) -> None:
    import importlib

    needed = ["onnx"] + (["onnxscript"] if exporter == "dynamo" else [])
    for module in needed:
        try:
            importlib.import_module(module)
        except ImportError:
            raise EchobenchError(f"exporting the fused step to ONNX needs the Python module {module!r} "
                                 f"(torch.onnx's {exporter} exporter uses it): pip install 'echobench[onnx]'") from None


def _export(fused, inputs: dict, path: Path, exporter: str, opset: int, external: bool) -> None:
    import torch

    args = tuple(inputs[name] for name in INPUT_NAMES)
    if exporter == "dynamo":
        batch = torch.export.Dim("batch", min=1, max=EXPORT_MAX_ROWS)
        dynamic = {name: ({0: batch} if name in BATCHED_INPUTS else None) for name in INPUT_NAMES}
        program = torch.onnx.export(fused, args, dynamo=True, opset_version=opset, input_names=list(INPUT_NAMES),
                                    output_names=[OUTPUT_NAME], dynamic_shapes=dynamic, verbose=False)
        program.save(str(path), external_data=external)
    else:
        axes = {name: {0: "batch"} for name in (*BATCHED_INPUTS, OUTPUT_NAME)}
        # The legacy exporter moves weights to external files by itself above 2 GB.
        torch.onnx.export(fused, args, str(path), dynamo=False, opset_version=opset,
                          input_names=list(INPUT_NAMES), output_names=[OUTPUT_NAME], dynamic_axes=axes)


def _complete(folder: Path, fields: dict[str, Any]) -> bool:
    """A finished export for exactly these key fields (the digest could collide in principle)."""
    try:
        meta = json.loads((folder / META_FILE).read_text())
    except (OSError, ValueError):
        return False
    return (folder / GRAPH_FILE).exists() and all(meta.get(k) == v for k, v in fields.items())


def _install(staging: Path, folder: Path, fields: dict[str, Any]) -> None:
    """Rename the staged export into place; a complete export that another process renamed there
    first wins, an incomplete leftover (no meta) is replaced."""
    if folder.exists():
        if _complete(folder, fields):
            return
        shutil.rmtree(folder)
    try:
        os.replace(staging, folder)
    except OSError:
        if not _complete(folder, fields):
            raise
