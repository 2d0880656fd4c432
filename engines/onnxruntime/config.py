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

`providers(device, available, tensorrt_libraries)` decides which providers a session gets from the
ones an onnxruntime has and whether TensorRT's libraries can be loaded (pure logic, testable without a
GPU); the first of them is the provider in the engine's part of EchoMod's cache key, known before
anything is built (`engine_config`), and the one the engine's session must run (issue 19).

Why the libraries: onnxruntime-gpu lists the TensorRT provider whenever it was built with it, but the
provider needs TensorRT's own libraries (libnvinfer) at session creation; without them onnxruntime's
Python wrapper prints an "EP Error", falls back to CUDA and drops every provider option (the CUDA
provider's `device_id` included). The key used to say "tensorrt" before the engine loaded and "cuda"
after, so a run looked its pairs up under one key and stored them under the other, and every later
run reloaded SD 1.5. Now "auto" skips TensorRT when its libraries cannot be loaded
(`tensorrt_libraries`), the session is created with onnxruntime's fallback off and every provider's
options given explicitly, and a session that does not run the resolved provider is an error rather
than a silent change of provider (`OnnxRuntimeEngine.load`).
"""

from __future__ import annotations

import functools
import os
import sys
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

    def providers(self, device: str, available: Iterable[str], tensorrt_libraries: bool = True) -> list[str]:
        """The providers (short names) to hand onnxruntime, best first, given the `available` ones
        (`onnxruntime.get_available_providers()`) and whether TensorRT's libraries can be loaded
        (`tensorrt_libraries()`): "auto" skips TensorRT without them. EchobenchErrors for a provider
        that is asked for and missing (TensorRT without its libraries included), a GPU provider on a
        CPU device, and a GPU device with no GPU provider."""
        available = set(available)
        if not tensorrt_libraries:
            if self.provider == "tensorrt" and PROVIDERS["tensorrt"] in available:
                raise EchobenchError(
                    "onnxruntime engine: this onnxruntime has the TensorRT execution provider, but TensorRT's "
                    f"libraries (libnvinfer) cannot be loaded ({TENSORRT_LIBRARY_HINT}); onnxruntime would "
                    "silently run the CUDA provider instead. Install them (pip install 'echobench[tensorrt]') "
                    "or use provider=cuda")
            available.discard(PROVIDERS["tensorrt"])
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

    def resolved_providers(self, device: str) -> list[str]:
        """`providers` for this machine: onnxruntime's available providers and TensorRT's libraries."""
        available = import_onnxruntime().get_available_providers()
        libraries = tensorrt_libraries() if PROVIDERS["tensorrt"] in available and is_gpu(device) else False
        return self.providers(device, available, libraries)

    def engine_config(self, device: str) -> dict[str, Any]:
        """The provider is the one the session runs: resolved before anything is loaded, from what
        this machine has (`resolved_providers`), and checked when the session starts."""
        provider = self.resolved_providers(device)[0]
        return {"name": self.name, "provider": provider, "exporter": self.exporter, "opset": self.opset}


TENSORRT_LIBRARY_HINT = "looked for libnvinfer.so.10/.so.8 on the loader's path and in the tensorrt_libs package"


@functools.lru_cache(maxsize=None)
def tensorrt_libraries() -> bool:
    """Whether TensorRT's runtime library can be loaded, as onnxruntime's TensorRT provider loads it
    (dlopen of libnvinfer.so.<major>, or nvinfer_<major>.dll): from the loader's path, or from the
    `tensorrt_libs` package that the tensorrt wheels install (onnxruntime ≥ 1.21 preloads from it)."""
    import ctypes
    import importlib.util

    names = (["nvinfer_10.dll", "nvinfer.dll"] if sys.platform == "win32"
             else ["libnvinfer.so.10", "libnvinfer.so.8", "libnvinfer.so"])
    folders = [""]
    spec = importlib.util.find_spec("tensorrt_libs")
    if spec is not None and spec.submodule_search_locations:
        folders += list(spec.submodule_search_locations)
    for folder in folders:
        for name in names:
            try:
                ctypes.CDLL(os.path.join(folder, name) if folder else name)
                return True
            except OSError:
                continue
    return False


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
