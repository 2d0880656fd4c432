"""Where echobench keeps files by default: the one module that reads echobench's environment variables.

The command line resolves these once into a `echobench.harness.context.RunContext`, which travels to
every worker process and Ray task as a value; library code given an explicit path never looks here,
and library code given none (a notebook, a test) falls back to the same defaults.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

DATA_ENV = "ECHOBENCH_DATA"  # where datasets are downloaded and cached
CACHE_ENV = "ECHOBENCH_CACHE"  # EchoMod's cache of modified images
ENGINE_CACHE_ENV = "ECHOBENCH_ENGINE_CACHE"  # exported ONNX graphs and TensorRT plans
ENV_VARS = (DATA_ENV, CACHE_ENV, ENGINE_CACHE_ENV)


def _env(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if environ is None else environ


def data_root(explicit: str | os.PathLike | None = None, environ: Mapping[str, str] | None = None) -> Path:
    """Datasets: `explicit` (--data-root), else $ECHOBENCH_DATA, else ~/.cache/echobench."""
    chosen = explicit or _env(environ).get(DATA_ENV)
    return Path(chosen).expanduser() if chosen else Path.home() / ".cache" / "echobench"


def echomod_cache(explicit: str | os.PathLike | None = None, data: str | os.PathLike | None = None,
                  environ: Mapping[str, str] | None = None) -> Path:
    """EchoMod's image cache: `explicit` (--cache-dir), else $ECHOBENCH_CACHE, else <data root>/echomod."""
    chosen = explicit or _env(environ).get(CACHE_ENV)
    return Path(chosen).expanduser() if chosen else data_root(data, environ) / "echomod"


def engine_cache(explicit: str | os.PathLike | None = None, environ: Mapping[str, str] | None = None) -> Path:
    """What engines build (ONNX graphs, TensorRT plans): `explicit` (an engine's `cache_dir` option),
    else $ECHOBENCH_ENGINE_CACHE, else an `_engines` folder under EchoMod's image cache, so that a test
    that points that cache at a temporary directory never writes to the user's."""
    chosen = explicit or _env(environ).get(ENGINE_CACHE_ENV)
    return Path(chosen).expanduser() if chosen else echomod_cache(environ=environ) / "_engines"


def settings(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """echobench's environment variables that are set (for `echobench doctor`)."""
    environ = _env(environ)
    return {name: environ[name] for name in ENV_VARS if environ.get(name)}
