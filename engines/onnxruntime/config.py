"""Settings of the ONNX Runtime engine, importable without torch or onnxruntime.

`provider` chooses the execution provider (onnxruntime's "Execution Providers" documentation):
"auto" is, by availability, TensorRT, then CUDA, then the CPU on a GPU device (onnxruntime itself
falls back to the next provider when one fails to initialise, e.g. when the TensorRT libraries are
missing; the provider that actually runs is reported in the engine's config), and the CPU on a CPU
device; "tensorrt", "cuda" and "cpu" ask for one. The CUDA and TensorRT providers come with the
`onnxruntime-gpu` package, which replaces `onnxruntime` (both install the same module).

`threads`: onnxruntime's intra-op threads; 0 uses torch's setting (`torch.get_num_threads()`), so
that the engines are compared on the same number of cores. `exporter`/`opset`: how the graph is
exported (see `engines.export`). `cache_dir`: where graphs and TensorRT engine/timing caches go
(default: `engines.export.engine_cache_root()`).
"""

from __future__ import annotations

from dataclasses import dataclass

from echobench.errors import EchobenchError
from engines.export import DEFAULT_OPSET, EXPORTERS
from engines.options import is_gpu

PROVIDERS = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}


@dataclass(frozen=True)
class OnnxRuntimeConfig:
    provider: str = "auto"
    exporter: str = "dynamo"
    opset: int = DEFAULT_OPSET
    threads: int = 0
    cache_dir: str = ""

    def __post_init__(self) -> None:
        problems = []
        if self.provider != "auto" and self.provider not in PROVIDERS:
            problems.append(f"unknown provider {self.provider!r}; use auto or one of {', '.join(PROVIDERS)}")
        if self.exporter not in EXPORTERS:
            problems.append(f"unknown exporter {self.exporter!r}; use one of {', '.join(EXPORTERS)}")
        if self.threads < 0:
            problems.append(f"threads must be >= 0 (got {self.threads})")
        if problems:
            raise EchobenchError("onnxruntime engine: " + "; ".join(problems))

    def provider_preference(self, device: str) -> list[str]:
        """Provider short names to try, best first (before checking what onnxruntime has)."""
        if self.provider != "auto":
            return [self.provider]
        return ["tensorrt", "cuda", "cpu"] if is_gpu(device) else ["cpu"]
