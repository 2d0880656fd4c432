"""The TensorRT engine: a plan built from the fused ControlNet + UNet ONNX graph, run on torch's stream.

This is the TensorRT Stable Diffusion demo's approach (`UNet2DConditionControlNetModel` exported to
ONNX, built into one engine) written against the TensorRT 10 Python API ("TensorRT Python API",
`IBuilder` / `IBuilderConfig` / `IOptimizationProfile` / `IExecutionContext`):

- build: `OnnxParser.parse_from_file` (it follows external weight files beside the graph), FP16
  kernels allowed (`BuilderFlag.FP16`), one optimisation profile on the batch axis from one image to a
  full batch, and a timing cache kept on disk (`create_timing_cache` / `set_timing_cache`) so that
  later builds on the same GPU and TensorRT skip most kernel timing; the serialised plan is cached
  (see `config.py` for the key and the rebuild message);
- run: tensors addressed by name (`set_input_shape`, `set_tensor_address`) and `execute_async_v3` on
  torch's current CUDA stream, so the step is ordered with the scheduler's torch ops without a host
  synchronisation.

A step outside the profile is an EchobenchError. TensorRT is imported only when the engine loads; its
absence is an EchobenchError naming the extra to install. The VAE decode stays in torch.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import torch

from echobench.errors import EchobenchError
from echobench.files import atomic_write_bytes
from echobench.engines.base import Components, DenoiserEngine
from echobench.engines.export import engine_cache_root, export_fused_onnx, model_digest
from echobench.engines.fused import step_inputs
from echobench.engines.options import missing_runtime
from echobench.engines.step_shapes import (BATCHED_INPUTS, INPUT_NAMES, OUTPUT_NAME, StepShapes, check_rows,
                                           require_shapes)
from echobench.engines.tensorrt.config import TensorRTConfig, find_plan, plan_digest, plan_key, profile_rows, timing_cache_name


def import_tensorrt():
    """The tensorrt module, or an EchobenchError naming the extra to install."""
    try:
        import tensorrt
    except ImportError as error:
        raise missing_runtime("tensorrt", "tensorrt", "tensorrt", str(error)) from None
    return tensorrt


class TensorRTEngine(DenoiserEngine):
    """The fused step as a TensorRT engine; steps of `profile_rows(shapes)` min..max rows."""

    name = TensorRTConfig.name

    def __init__(self, settings: TensorRTConfig, shapes: StepShapes | None = None, device: str = "cuda"):
        self.settings = settings
        self.shapes = require_shapes(self.name, shapes)
        self.device = torch.device(device)
        self.build_info: dict[str, Any] = {}
        self._runtime = self._engine = self._context = None
        self._dtypes: dict[str, torch.dtype] = {}

    @staticmethod
    def require_runtime(device: str) -> None:
        """EchobenchError naming the extra when TensorRT is missing, or when `device` is not a GPU."""
        import_tensorrt()
        if torch.device(device).type != "cuda" or not torch.cuda.is_available():
            raise EchobenchError(f"the tensorrt engine needs a CUDA device (device is {str(device)!r})")

    def load(self, components: Components) -> None:
        self.require_runtime(str(self.device))
        trt = import_tensorrt()
        s = self.settings
        unet = components.unet
        model = model_digest(components.controlnet, unet)
        graph = export_fused_onnx(components, self.shapes, exporter=s.exporter, opset=s.opset,
                                  cache_dir=s.cache_dir or None, model=model)
        index = self.device.index if self.device.index is not None else torch.cuda.current_device()
        gpu = torch.cuda.get_device_name(index)
        capability = "{}.{}".format(*torch.cuda.get_device_capability(index))
        fields = plan_key(graph.key, self.shapes, s, gpu, capability, trt.__version__)
        root = engine_cache_root(s.cache_dir or None) / "tensorrt"
        folder = root / f"{model[:20]}-{str(unet.dtype).removeprefix('torch.')}"
        folder.mkdir(parents=True, exist_ok=True)
        plan_path, message = find_plan(folder, fields)
        logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(logger)
        start = time.perf_counter()
        built = False
        with torch.cuda.device(index):
            if plan_path is not None:
                self._engine = self._runtime.deserialize_cuda_engine(plan_path.read_bytes())
                if self._engine is None:
                    message = f"the cached TensorRT plan {plan_path} could not be loaded; building it again"
            if self._engine is None:
                if message:
                    warnings.warn(message, stacklevel=2)
                plan = _build(trt, logger, graph.path, self.shapes, s, root / timing_cache_name(
                    gpu, capability, trt.__version__))
                plan_path = folder / f"{plan_digest(fields)}.plan"
                atomic_write_bytes(plan_path, plan)
                atomic_write_bytes(plan_path.with_suffix(".json"), _json(fields))
                self._engine = self._runtime.deserialize_cuda_engine(plan)
                built = True
            if self._engine is None:
                raise EchobenchError(f"TensorRT could not load the plan it just built ({plan_path})")
            self._context = self._engine.create_execution_context()
        self._dtypes = {name: _torch_dtype(trt, self._engine.get_tensor_dtype(name))
                        for name in (*INPUT_NAMES, OUTPUT_NAME)}
        self.components = components
        self.build_info = {
            "onnx_path": str(graph.path), "onnx_reused": graph.reused, "export_seconds": round(graph.seconds, 3),
            "plan_path": str(plan_path), "plan_built": built,
            ("build_seconds" if built else "load_seconds"): round(time.perf_counter() - start, 3),
            "gpu": gpu, "tensorrt": trt.__version__, "profile_rows": list(profile_rows(self.shapes)),
        }

    @torch.inference_mode()
    def denoise(self, latents: Any, t: Any, text_emb: Any, control: Any, scale: float) -> Any:
        rows = latents.shape[0]
        low, _, high = profile_rows(self.shapes)
        check_rows(self.name, rows, low, high, self.shapes, "its optimisation profile")
        inputs = {name: tensor.to(self.device, self._dtypes[name]).contiguous()
                  for name, tensor in step_inputs(latents, t, text_emb, control, scale).items()}
        context = self._context
        for name in INPUT_NAMES:
            if name in BATCHED_INPUTS:
                context.set_input_shape(name, tuple(inputs[name].shape))
            context.set_tensor_address(name, inputs[name].data_ptr())
        out = torch.empty(tuple(context.get_tensor_shape(OUTPUT_NAME)), dtype=self._dtypes[OUTPUT_NAME],
                          device=self.device)
        context.set_tensor_address(OUTPUT_NAME, out.data_ptr())
        # On torch's stream: the inputs are ready when the step starts, and the caller's next torch op
        # waits for the output, with no host synchronisation. Inputs freed on return are only handed
        # to later work on the same stream (torch's caching allocator is stream-ordered).
        if not context.execute_async_v3(torch.cuda.current_stream(self.device).cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed (see TensorRT's messages above)")
        return out.to(latents.dtype)

    @torch.inference_mode()
    def decode(self, latents: Any) -> Any:
        return super().decode(latents)

    def config(self) -> dict[str, Any]:
        return self.settings.engine_config(str(self.device))

    def close(self) -> None:
        # The context must go before the engine, and the engine before the runtime.
        self._context = None
        self._engine = None
        self._runtime = None
        super().close()


def _build(trt, logger, onnx_path: Path, shapes: StepShapes, settings: TensorRTConfig, timing_path: Path) -> bytes:
    """Parse the graph and build a serialised plan with one optimisation profile and the timing cache."""
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: networks are always explicit-batch
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EchobenchError(f"TensorRT could not parse the ONNX graph {onnx_path}: {errors}")
    config = builder.create_builder_config()
    if settings.fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    config.builder_optimization_level = int(settings.optimization_level)
    if settings.workspace_gb > 0:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(settings.workspace_gb * 2**30))
    low, opt, high = profile_rows(shapes)
    sizes = {rows: shapes.input_shapes(rows) for rows in (low, opt, high)}
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        name = network.get_input(i).name
        if name in BATCHED_INPUTS:
            profile.set_shape(name, sizes[low][name], sizes[opt][name], sizes[high][name])
    config.add_optimization_profile(profile)
    cache = config.create_timing_cache(timing_path.read_bytes() if timing_path.exists() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EchobenchError(
            f"TensorRT could not build an engine from {onnx_path} (see its messages above); building the "
            "SD 1.5 UNet + ControlNet needs tens of GB of host memory and most of the GPU's: try "
            "workspace_gb, a smaller batch_size or optimization_level"
        )
    atomic_write_bytes(timing_path, bytes(memoryview(config.get_timing_cache().serialize())))
    return bytes(memoryview(plan))


def _torch_dtype(trt, dtype) -> torch.dtype:
    table = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16,
             trt.DataType.INT32: torch.int32, trt.DataType.INT64: torch.int64}
    if hasattr(trt.DataType, "BF16"):
        table[trt.DataType.BF16] = torch.bfloat16
    if dtype not in table:
        raise EchobenchError(f"tensorrt engine: unsupported I/O tensor type {dtype}")
    return table[dtype]


def _json(fields: dict[str, Any]) -> bytes:
    import json

    return json.dumps(fields, indent=1, sort_keys=True).encode()
