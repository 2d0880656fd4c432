"""The ONNX Runtime engine: the fused ControlNet + UNet graph (`echobench.engines.export`) in an InferenceSession.

The graph is the TensorRT diffusion demo's `UNet2DConditionControlNetModel` with a dynamic batch axis,
exported once per (model, shapes, dtype, opset, exporter, torch version) and reused from the disk cache
afterwards; the VAE decode stays in torch. Inputs and outputs are bound to the torch tensors' memory
with onnxruntime's I/O binding ("I/O Binding" in the onnxruntime Python API documentation), so a GPU
step copies nothing through the host.

Providers (onnxruntime's execution provider documentation):
- CPU: `intra_op_num_threads` follows torch's thread count unless set, one inter-op thread (the graph
  is one long chain).
- CUDA: on the torch device's GPU.
- TensorRT: builds a TensorRT engine on the first run, which takes minutes for SD 1.5, so its engine
  cache and timing cache are enabled (`trt_engine_cache_enable`, `trt_timing_cache_enable`, both
  under the engine cache folder), with one optimisation profile from one image to a full batch
  (`trt_profile_min/opt/max_shapes`) so that the last, smaller batch does not trigger a rebuild, and
  FP16 kernels allowed when the graph is float16.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from echobench.errors import EchobenchError
from echobench.engines.base import Components, DenoiserEngine
from echobench.engines.export import engine_cache_root, export_fused_onnx
from echobench.engines.fused import step_inputs
from echobench.engines.options import is_gpu, missing_runtime
from echobench.engines.onnxruntime.config import PROVIDERS, OnnxRuntimeConfig, import_onnxruntime, no_gpu_provider
from echobench.engines.step_shapes import (BATCHED_INPUTS, INPUT_NAMES, OUTPUT_NAME, StepShapes, check_rows,
                                           require_shapes)

# ONNX element types as onnxruntime reports them → torch dtypes.
ONNX_TYPES = {"tensor(float)": torch.float32, "tensor(float16)": torch.float16, "tensor(int64)": torch.int64}


class OnnxRuntimeEngine(DenoiserEngine):
    """The fused step as an ONNX graph run by onnxruntime; steps of 1 to `shapes.max_rows` rows."""

    name = OnnxRuntimeConfig.name

    def __init__(self, settings: OnnxRuntimeConfig, shapes: StepShapes | None = None, device: str = "cpu"):
        self.settings = settings
        self.shapes = require_shapes(self.name, shapes)
        self.device = torch.device(device)
        self.session = None
        self.provider = ""
        self.build_info: dict[str, Any] = {}
        self._inputs: dict[str, torch.dtype] = {}
        self._output_dtype = torch.float32

    @staticmethod
    def require_runtime(device: str) -> None:
        """EchobenchError naming the extra when onnxruntime (or onnx, for the export) is missing, or
        when `device` is a GPU and this onnxruntime has no GPU execution provider: the CPU provider
        would run there, and its numbers would pass for a GPU measurement."""
        import importlib

        ort = import_onnxruntime()
        try:
            importlib.import_module("onnx")  # the exporters write the graph with it
        except ImportError as error:
            raise missing_runtime("onnxruntime", "onnx", "onnx", str(error)) from None
        available = set(ort.get_available_providers())
        if is_gpu(device) and not available & {PROVIDERS["cuda"], PROVIDERS["tensorrt"]}:
            raise no_gpu_provider(device, available)

    def load(self, components: Components) -> None:
        ort = import_onnxruntime()
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())  # I/O binding needs the index
        if components.unet.dtype not in (torch.float32, torch.float16):
            # I/O binding describes buffers with NumPy dtypes, and NumPy has no bfloat16.
            raise EchobenchError(f"onnxruntime engine: dtype {components.unet.dtype} is not supported; "
                                 "use float32 or float16")
        providers = self._providers(ort)
        graph = export_fused_onnx(components, self.shapes, exporter=self.settings.exporter,
                                  opset=self.settings.opset, cache_dir=self.settings.cache_dir or None)
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.settings.threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: the exported graph triggers harmless notes
        dtype = components.unet.dtype
        start = time.perf_counter()
        wanted = [(PROVIDERS[p], self._provider_options(p, graph.key, dtype)) for p in providers]
        try:
            # enable_fallback=0: onnxruntime's wrapper would retry a failed provider with the next one
            # and no provider options at all (no device_id); here every provider's options are given.
            self.session = ort.InferenceSession(str(graph.path), options, providers=wanted, enable_fallback=0)
        except (RuntimeError, ValueError) as error:
            raise self._not_started(providers, f"{type(error).__name__}: {str(error).splitlines()[0][:300]}") from error
        session_seconds = time.perf_counter() - start
        self.provider = _short_name(self.session.get_providers()[0])
        if self.provider != providers[0]:
            started = self.provider
            self.session = None
            raise self._not_started(providers, f"the session runs the {started} provider")
        self._inputs = {i.name: ONNX_TYPES[i.type] for i in self.session.get_inputs()}
        self._output_dtype = ONNX_TYPES[self.session.get_outputs()[0].type]
        self.components = components
        self.build_info = {"onnx_path": str(graph.path), "onnx_key": graph.key, "onnx_reused": graph.reused,
                           "export_seconds": round(graph.seconds, 3), "session_seconds": round(session_seconds, 3),
                           "provider": self.provider,
                           "provider_options": _jsonable(self.session.get_provider_options().get(
                               PROVIDERS.get(self.provider, self.provider), {}))}

    def _providers(self, ort) -> list[str]:
        """The providers to hand onnxruntime, best first: those of the cache key (`engine_config`),
        from what this onnxruntime and machine have."""
        del ort
        return self.settings.resolved_providers(str(self.device))

    def _not_started(self, providers: list[str], what: str) -> EchobenchError:
        """The session does not run the provider the cache key names: an error, never a silent switch."""
        others = [p for p in ("cuda", "cpu") if p != providers[0]]
        return EchobenchError(
            f"onnxruntime engine: the {providers[0]} execution provider did not start ({what}). EchoMod's cache "
            f"key names the provider, resolved before loading, so the engine does not run another one in its "
            f"place; choose one that works here explicitly, e.g. --engine-option provider={others[0]}")

    def _provider_options(self, provider: str, key: str, dtype: torch.dtype) -> dict[str, Any]:
        if provider == "cpu":
            return {}
        device_id = self.device.index
        if provider == "cuda":
            return {"device_id": device_id}
        folder = engine_cache_root(self.settings.cache_dir or None) / "onnxruntime-tensorrt" / key
        folder.mkdir(parents=True, exist_ok=True)
        low, high = self.shapes.input_shapes(self.shapes.min_rows), self.shapes.input_shapes(self.shapes.max_rows)

        def profile(shapes: dict[str, tuple[int, ...]]) -> str:
            return ",".join(f"{name}:{'x'.join(map(str, shapes[name]))}" for name in BATCHED_INPUTS)

        return {
            "device_id": device_id,
            "trt_fp16_enable": dtype == torch.float16,
            "trt_engine_cache_enable": True, "trt_engine_cache_path": str(folder),
            "trt_timing_cache_enable": True, "trt_timing_cache_path": str(folder),
            "trt_profile_min_shapes": profile(low), "trt_profile_opt_shapes": profile(high),
            "trt_profile_max_shapes": profile(high),
        }

    @torch.inference_mode()
    def denoise(self, latents: Any, t: Any, text_emb: Any, control: Any, scale: float) -> Any:
        rows = latents.shape[0]
        check_rows(self.name, rows, self.shapes.min_rows, self.shapes.max_rows, self.shapes,
                   "the batch it was built for")
        on_gpu = self.provider != "cpu"
        where = self.device if on_gpu else torch.device("cpu")
        inputs = {name: tensor.to(where, self._inputs[name]).contiguous()
                  for name, tensor in step_inputs(latents, t, text_emb, control, scale).items()}
        out = torch.empty(inputs["sample"].shape, dtype=self._output_dtype, device=where)
        binding = self.session.io_binding()
        kind, index = ("cuda", where.index) if on_gpu else ("cpu", 0)
        for name in INPUT_NAMES:
            tensor = inputs[name]
            binding.bind_input(name, kind, index, _numpy_dtype(tensor.dtype), tuple(tensor.shape), tensor.data_ptr())
        binding.bind_output(OUTPUT_NAME, kind, index, _numpy_dtype(out.dtype), tuple(out.shape), out.data_ptr())
        if on_gpu:
            # onnxruntime runs on its own CUDA stream: the inputs torch wrote must be complete first.
            torch.cuda.current_stream(where).synchronize()
        self.session.run_with_iobinding(binding)
        return out.to(self.device, latents.dtype)

    @torch.inference_mode()
    def decode(self, latents: Any) -> Any:
        return super().decode(latents)

    def config(self) -> dict[str, Any]:
        # The same before and after loading: `load` makes sure the session runs the key's provider.
        return self.settings.engine_config(str(self.device))

    def close(self) -> None:
        self.session = None
        super().close()


def _jsonable(options: dict) -> dict:
    return {str(k): (v if isinstance(v, (int, float, str, bool, type(None))) else str(v)) for k, v in options.items()}


def _short_name(provider: str) -> str:
    return next((short for short, full in PROVIDERS.items() if full == provider), provider)


def _numpy_dtype(dtype: torch.dtype):
    import numpy as np

    return {torch.float32: np.float32, torch.float16: np.float16, torch.int64: np.int64}[dtype]
