"""The run context: paths, device, threads, progress, force and plugins, resolved once and passed as one value.

The command line (or a test, or a worker process) resolves a `RunContext` once, from its flags and
the environment (read in one place, `echobench.paths`). Every function below the command line takes
the context (or the plain values in it), never an environment variable, so a local worker process or
a Ray task computes exactly what the driver asked for: the context travels to them as one dict
(`to_dict` / `from_dict`). `includes` are the plugin files and folders (`--include`, a suite's
`include:`; absolute paths): every process that computes cells imports them (`load_plugins`) before
it resolves a name, so a plugin's method, dataset, noise kind, selector or engine exists in local
worker processes and Ray tasks as it does in the driver.
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
    includes: tuple[str, ...] = ()  # plugin files and folders, absolute (`echobench.plugins`)

    @classmethod
    def resolve(cls, *, device: str = "auto", threads: int | None = None, data_root: str | os.PathLike | None = None,
                cache_dir: str | os.PathLike | None = None, progress: bool = False, force: bool = False,
                includes: tuple[str, ...] | list[str] = (), environ: Mapping[str, str] | None = None) -> "RunContext":
        """Flags first, then the environment variables, then the defaults; bad values are refused here.
        `includes` (relative to the working directory) must exist; they are imported by `load_plugins`."""
        from echobench.plugins import resolve_includes

        check_threads(threads)
        includes = resolve_includes(includes or ())
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
                   progress=bool(progress), force=bool(force), includes=includes)

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

    def with_includes(self, includes) -> "RunContext":
        """The context with `includes` (absolute paths) added after its own, each once."""
        return self.replace(includes=tuple(dict.fromkeys([*self.includes, *includes])))

    def load_plugins(self) -> None:
        """Import the plugin files of `includes` in this process (once each; see `echobench.plugins`)."""
        if self.includes:
            from echobench.plugins import load_includes

            load_includes(self.includes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["includes"] = list(self.includes)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RunContext":
        values = {f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d}
        if "includes" in values:
            values["includes"] = tuple(values["includes"] or ())
        return cls(**values)


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
