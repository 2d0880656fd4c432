"""The run context: paths, device, threads, progress and force, resolved once and passed as one value.

The command line (or a test, or a worker process) resolves a `RunContext` once, from its flags and
the environment: this module is the one place that reads echobench's environment variables. Every
function below the command line takes the context (or the plain values in it), never an environment
variable, so a local worker process or a Ray task computes exactly what the driver asked for: the
context travels to them as one dict (`to_dict` / `from_dict`).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from echobench.errors import EchobenchError

DATA_ENV = "ECHOBENCH_DATA"  # where datasets are downloaded and cached
CACHE_ENV = "ECHOBENCH_CACHE"  # EchoMod's cache of modified images
ENGINE_CACHE_ENV = "ECHOBENCH_ENGINE_CACHE"  # exported ONNX graphs and TensorRT plans
DEFAULT_DATA_ROOT = Path("~/.cache/echobench")
MAX_THREADS_PER_CORE = 4  # --threads above cores × this is a typo, not a choice (torch segfaults far above it)


@dataclass(frozen=True)
class RunContext:
    """Where and how cells compute. `device` is what the user asked for (auto, cpu, cuda, cuda:N);
    `resolved_device` what it means in this process."""

    device: str = "auto"
    threads: int | None = None  # torch intra-op threads of each computing process (None: torch's default)
    data_root: str = str(DEFAULT_DATA_ROOT.expanduser())
    cache_dir: str = str(DEFAULT_DATA_ROOT.expanduser() / "echomod")
    engine_cache_dir: str | None = None  # None: <cache_dir>/../engines (see echobench.engines.export)
    progress: bool = False
    force: bool = False

    @classmethod
    def resolve(cls, *, device: str = "auto", threads: int | None = None, data_root: str | os.PathLike | None = None,
                cache_dir: str | os.PathLike | None = None, progress: bool = False, force: bool = False,
                environ: Mapping[str, str] | None = None) -> "RunContext":
        """Flags first, then the environment variables, then the defaults; bad values are refused here."""
        environ = os.environ if environ is None else environ
        check_threads(threads)
        data = Path(data_root or environ.get(DATA_ENV) or DEFAULT_DATA_ROOT).expanduser()
        cache = Path(cache_dir or environ.get(CACHE_ENV) or data / "echomod").expanduser()
        engines = environ.get(ENGINE_CACHE_ENV)
        for label, path in (("--data-root", data), ("--cache-dir", cache)):
            if path.exists() and not path.is_dir():
                raise EchobenchError(f"{label} {path} is a file, not a directory; choose a directory")
        return cls(device=str(device), threads=threads, data_root=str(data), cache_dir=str(cache),
                   engine_cache_dir=str(Path(engines).expanduser()) if engines else None,
                   progress=bool(progress), force=bool(force))

    @property
    def resolved_device(self) -> str:
        from echobench.environment import resolve_device

        return resolve_device(self.device)

    def replace(self, **changes: Any) -> "RunContext":
        return dataclasses.replace(self, **changes)

    def apply_threads(self) -> None:
        """Set torch's thread count in the process that computes (once per process)."""
        if self.threads:
            import torch

            torch.set_num_threads(int(self.threads))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RunContext":
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})


def check_threads(threads: int | None) -> None:
    if threads is None:
        return
    cores = os.cpu_count() or 1
    if not isinstance(threads, int) or isinstance(threads, bool) or not 1 <= threads <= cores * MAX_THREADS_PER_CORE:
        raise EchobenchError(f"--threads must be an integer from 1 to {cores * MAX_THREADS_PER_CORE} "
                             f"({cores} cores here), got {threads!r}")


def environment_settings(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """echobench's environment variables that are set (for `echobench doctor`)."""
    environ = os.environ if environ is None else environ
    return {name: environ[name] for name in (DATA_ENV, CACHE_ENV, ENGINE_CACHE_ENV) if environ.get(name)}


def default_context(**changes: Any) -> RunContext:
    """The context of a library call that was given none (tests, notebooks): resolved from the environment."""
    return RunContext.resolve(**changes)
