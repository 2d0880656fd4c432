"""Settings of the ONNX Runtime engine, importable without torch or onnxruntime.

`provider` chooses the execution provider (onnxruntime's "Execution Providers" documentation):
"auto" is, by availability, TensorRT, then CUDA, then the CPU on a GPU device (onnxruntime itself
falls back to the next provider when one fails to initialise, e.g. when the TensorRT libraries are
missing; the provider that actually runs is reported in the engine's config), and the CPU on a CPU
device; "tensorrt", "cuda" and "cpu" ask for one. The CUDA and TensorRT providers come with the
`onnxruntime-gpu` package, which replaces `onnxruntime` (both install the same module).

`threads`: onnxruntime's intra-op threads; 0 uses torch's setting (`torch.get_num_threads()`), so
that the engines are compared on the same number of cores. `exporter`/`opset`: how the graph is
exported (see `echobench.engines.export`). `cache_dir`: where graphs and TensorRT engine/timing caches go
(default: `echobench.engines.export.engine_cache_root()`).

`providers(device, available)` decides which providers a session gets from the ones an onnxruntime
has (pure logic, testable without a GPU); the first of them is the provider in the engine's part of
EchoMod's cache key, known before anything is built (`engine_config`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from echobench.errors import EchobenchError
from echobench.engines.export import DEFAULT_OPSET, EXPORTERS
from echobench.engines.options import EngineSettings, is_gpu, missing_runtime

PROVIDERS = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}


@dataclass(frozen=True)
class OnnxRuntimeConfig(EngineSettings):
    name = "onnxruntime"
    implementation = "echobench.engines.onnxruntime.engine:OnnxRuntimeEngine"

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

    def providers(self, device: str, available: Iterable[str]) -> list[str]:
        """The providers (short names) to hand onnxruntime, best first, given the `available` ones
        (`onnxruntime.get_available_providers()`); EchobenchErrors for a provider that is asked for
        and missing, a GPU provider on a CPU device, and a GPU device with no GPU provider."""
        available = set(available)
        wanted = self.provider_preference(device)
        usable = [p for p in wanted if PROVIDERS[p] in available]
        if self.provider != "auto" and not usable:
            gpu = (" (it comes with the onnxruntime-gpu package, which replaces onnxruntime)"
                   if wanted[0] != "cpu" else "")
            raise EchobenchError(f"onnxruntime engine: the {wanted[0]} execution provider is not available in "
                                 f"this onnxruntime{gpu}; available: {', '.join(sorted(available))}")
        if not usable:
            usable = ["cpu"]
        if usable[0] != "cpu" and not is_gpu(device):
            raise EchobenchError(f"onnxruntime engine: the {usable[0]} execution provider needs a CUDA device "
                                 f"(device is {str(device)!r})")
        if usable[0] == "cpu" and is_gpu(device) and self.provider == "auto":
            raise no_gpu_provider(device, available)
        # Nodes TensorRT cannot take go to CUDA, as onnxruntime's TensorRT documentation recommends;
        # the CPU provider is the last resort of every session.
        if usable[0] == "tensorrt" and "cuda" not in usable and PROVIDERS["cuda"] in available:
            usable.insert(1, "cuda")
        if "cpu" not in usable:
            usable.append("cpu")
        return usable

    def engine_config(self, device: str) -> dict[str, Any]:
        """The provider is the one the session will be asked for first (onnxruntime falls back only
        when a provider fails to start; the engine reports the one that runs once it is loaded)."""
        provider = self.providers(device, import_onnxruntime().get_available_providers())[0]
        return {"name": self.name, "provider": provider, "exporter": self.exporter, "opset": self.opset}


def import_onnxruntime():
    """The onnxruntime module, or an EchobenchError naming the extra to install."""
    try:
        import onnxruntime
    except ImportError as error:
        raise missing_runtime("onnxruntime", "onnxruntime", "onnx", str(error)) from None
    return onnxruntime


def no_gpu_provider(device: str, available: Iterable[str]) -> EchobenchError:
    """A GPU device, but an onnxruntime without a GPU provider: the CPU provider would run there, and
    its numbers would pass for a GPU measurement."""
    return EchobenchError(
        f"onnxruntime engine: device {device!r} is a GPU, but this onnxruntime has no CUDA or TensorRT "
        f"execution provider (available: {', '.join(sorted(available))}); install the onnx-gpu extra "
        "(pip uninstall onnxruntime && pip install 'echobench[onnx-gpu]'), or use --device cpu")
