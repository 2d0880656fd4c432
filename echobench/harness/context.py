"""The run context: paths, device, threads, progress and force, resolved once and passed as one value.

The command line (or a test, or a worker process) resolves a `RunContext` once, from its flags and
the environment (read in one place, `echobench.paths`). Every function below the command line takes
the context (or the plain values in it), never an environment variable, so a local worker process or
a Ray task computes exactly what the driver asked for: the context travels to them as one dict
(`to_dict` / `from_dict`).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Mapping

from echobench import paths
from echobench.errors import EchobenchError

MAX_THREADS_PER_CORE = 4  # --threads above cores × this is a typo, not a choice (torch segfaults far above it)


@dataclass(frozen=True)
class RunContext:
    """Where and how cells compute. `device` is what the user asked for (auto, cpu, cuda, cuda:N);
    `resolved_device` what it means in this process."""

    data_root: str  # datasets
    cache_dir: str  # EchoMod's cache of modified images
    device: str = "auto"
    threads: int | None = None  # torch intra-op threads of each computing process (None: torch's default)
    progress: bool = False
    force: bool = False

    @classmethod
    def resolve(cls, *, device: str = "auto", threads: int | None = None, data_root: str | os.PathLike | None = None,
                cache_dir: str | os.PathLike | None = None, progress: bool = False, force: bool = False,
                environ: Mapping[str, str] | None = None) -> "RunContext":
        """Flags first, then the environment variables, then the defaults; bad values are refused here."""
        check_threads(threads)
        data = paths.data_root(data_root, environ)
        cache = paths.echomod_cache(cache_dir, data, environ)
        for label, path in (("--data-root", data), ("--cache-dir", cache)):
            try:
                is_file = path.exists() and not path.is_dir()
            except OSError:  # e.g. a default under another user's home: the stage that uses it says so
                is_file = False
            if is_file:
                raise EchobenchError(f"{label} {path} is a file, not a directory; choose a directory")
        return cls(data_root=str(data), cache_dir=str(cache), device=str(device), threads=threads,
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


def default_context(**changes: Any) -> RunContext:
    """The context of a library call that was given none (tests, notebooks): resolved from the environment."""
    return RunContext.resolve(**changes)
