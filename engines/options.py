"""What the engines share, importable without torch: dtype names and devices, option parsing, and
`EngineSettings`, the base of every engine's settings and the engine registry's entry.

The paper runs EchoMod in mixed precision on V100 and RTX 4090 GPUs (appendix C, Tables 6/7). "auto"
means float16 on a GPU, where the tensor cores need it, and float32 on a CPU, where float16 kernels
are slow or missing. Every engine runs the components in this one dtype, so that engines are compared
on the same numbers.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, ClassVar

from echobench.errors import EchobenchError
from echobench.registry import closest

# Accepted spellings → the torch attribute name.
DTYPES = {
    "float16": "float16", "fp16": "float16", "half": "float16",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float32": "float32", "fp32": "float32", "float": "float32",
}


def is_gpu(device: str) -> bool:
    """True for CUDA devices ("cuda", "cuda:1")."""
    return str(device).startswith("cuda")


def resolve_dtype(dtype: str, device: str) -> str:
    """"auto" → float16 on a GPU, float32 on a CPU; other names → their canonical torch name."""
    if dtype == "auto":
        return "float16" if is_gpu(device) else "float32"
    if dtype not in DTYPES:
        raise EchobenchError(f"unknown dtype {dtype!r}; use auto or one of {', '.join(sorted(DTYPES))}")
    return DTYPES[dtype]


def torch_dtype(name: str):
    """The torch dtype called `name` (a key of `DTYPES`; imports torch)."""
    import torch

    return getattr(torch, DTYPES[name])


def missing_runtime(engine: str, module: str, extra: str, detail: str = "") -> EchobenchError:
    """The error for an engine whose Python runtime cannot be imported: names the extra to install."""
    more = f" ({detail})" if detail else ""
    return EchobenchError(
        f"the {engine} engine needs the Python module {module!r}, which cannot be imported{more}: "
        f"pip install 'echobench[{extra}]'"
    )


# ------------------------------------------------------------------------- options and registry entry


def check_option_names(options: dict[str, Any], known: dict[str, Any]) -> None:
    """EchobenchError for option names not in `known`, with suggestions and the full list."""
    unknown = [name for name in options if name not in known]
    if not unknown:
        return
    hints = [h for name in unknown for h in closest(name, list(known), n=1)]
    did_you_mean = f" Did you mean {', '.join(repr(h) for h in hints)}?" if hints else ""
    raise EchobenchError(
        f"unknown EchoMod engine option(s) {', '.join(repr(u) for u in unknown)}.{did_you_mean} "
        f"Known options: {', '.join(sorted(known))}."
    )


def coerce_option(name: str, value: Any, default: Any) -> Any:
    """`value` as the type of `default` (bool/int/float/str); None defaults (tri-state booleans)
    accept true/false/auto. Command-line options arrive as strings."""
    try:
        if default is None or isinstance(default, bool):
            return _parse_bool(value, allow_auto=default is None)
        if isinstance(default, int):
            number = float(value)
            if not number.is_integer():
                raise ValueError
            return int(number)
        if isinstance(default, float):
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        kind = "true/false/auto" if default is None else type(default).__name__
        raise EchobenchError(f"EchoMod engine option {name}: expected {kind}, got {value!r}") from None


def _parse_bool(value: Any, allow_auto: bool) -> bool | None:
    if isinstance(value, bool) or (value is None and allow_auto):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    if allow_auto and text in ("auto", "none", ""):
        return None
    raise ValueError(value)


class EngineSettings:
    """Base of every engine's settings (the frozen dataclass in its `config.py`): the one thing the
    engine registry (`echobench.engines.registry.ENGINES`) holds per engine name. It imports nothing
    heavy, so listing engines and checking their options import no runtime, and EchoMod's cache key
    is computed without building an engine or loading a model.

    Each engine sets three class attributes:
    - `name`: the engine's name (its registry name, and "name" in its part of the cache key);
    - `diffusion`: True for an engine that computes the denoising step of EchoMod's diffusion loop
      (`echobench.echoalign.diffusion`); False for an engine that is a whole generator (`procedural`).
      The one place that says which engines are diffusion engines;
    - `implementation`: "module:attr" of what runs it, imported only when an engine is built. For a
      diffusion engine, a `echobench.engines.base.DenoiserEngine` subclass, constructed as
      `cls(settings, shapes, device)` (settings resolved for `device`; `shapes` a
      `echobench.engines.step_shapes.StepShapes`, which engines that build nothing ignore); otherwise
      a generator factory `make(dataset, class_names, image_size, options, device) -> Modifier`.
    """

    name: ClassVar[str] = ""
    diffusion: ClassVar[bool] = True
    implementation: ClassVar[str] = ""

    @classmethod
    def option_defaults(cls) -> dict[str, Any]:
        """The engine's options (its fields but `dtype`, which is EchoMod's setting) with their defaults."""
        return {f.name: f.default for f in dataclasses.fields(cls) if f.name != "dtype"}

    @classmethod
    def from_options(cls, options: dict[str, Any] | None = None, device: str = "cpu", dtype: str = "auto"):
        """The defaults overridden by `options` (option → value; strings from a command line are
        converted to the field's type), resolved for `device`; bad names or values are
        EchobenchErrors. `dtype` is EchoMod's dtype setting, recorded by settings that have a `dtype`."""
        options = dict(options or {})
        defaults = cls.option_defaults()
        check_option_names(options, defaults)
        values = {name: coerce_option(name, value, defaults[name]) for name, value in options.items()}
        if any(f.name == "dtype" for f in dataclasses.fields(cls)):
            values["dtype"] = str(dtype).removeprefix("torch.")
        return cls(**values).resolve(device)

    def resolve(self, device: str):
        """The same settings with "auto" values replaced by the concrete choice for `device`."""
        del device
        return self

    def engine_config(self, device: str) -> dict[str, Any]:
        """The engine's part of EchoMod's cache key (what can change its numbers), from the resolved
        settings alone: no engine is constructed, no model loaded. The engine's `config()` returns
        the same."""
        del device
        return {"name": self.name}

    @classmethod
    def load_implementation(cls) -> Any:
        """The object `implementation` names (imports the engine's runtime module)."""
        module, _, attr = cls.implementation.partition(":")
        return getattr(importlib.import_module(module), attr)
