"""Checks of user input, shared by every place that reads it (suite files, command-line options).

One generic check of a value against a type annotation (`check_value`), used to check a mapping of
options against a dataclass's fields (`check_fields`: a method's `Params`, the `Protocol`) or against
a function's keyword parameters (`check_options`: a dataset loader). The rules are those a suite
file's author expects: an `int` is accepted where a `float` is expected, a boolean must be a real
boolean (YAML `true`/`false`, never the string "no"), `X | None` also takes null, a `tuple[int, ...]`
takes a list, a `Path` takes a string. Fields whose name ends in `seed` are seeds: non-negative
integers (`check_seed`).

Also here: `safe_name`, for names that become a folder (a suite's name under `runs/`).

Every check raises `EchobenchError` with one line that names the value, says what was expected and
what was given.
"""

from __future__ import annotations

import dataclasses
import inspect
import numbers
import os
import re
import types
import typing
from pathlib import PurePath
from typing import Any, Callable, Mapping

from echobench.errors import EchobenchError

_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string", dict: "a mapping",
          list: "a list", type(None): "null"}
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}")


def describe(annotation: Any) -> str:
    """What a value of `annotation` looks like, in words ("a number or null")."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(a) for a in args)
    if origin in (tuple, list):
        return f"a list of {describe(args[0]).removeprefix('an ').removeprefix('a ')}s" if args else "a list"
    if origin is dict:
        return "a mapping"
    if isinstance(annotation, type) and issubclass(annotation, PurePath):
        return "a path"
    return _NAMES.get(annotation, getattr(annotation, "__name__", str(annotation)))


def matches(value: Any, annotation: Any) -> bool:
    """Whether `value` is a valid value of `annotation` under the rules above (`Any` takes anything)."""
    if annotation is Any or annotation is inspect.Parameter.empty:
        return True
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, a) for a in args)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            return False
        item = args[0] if args else Any
        return all(matches(v, item) for v in value)
    if origin is dict or annotation is dict:
        return isinstance(value, dict)
    if annotation is None or annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:  # numbers.Integral: numpy integers too (library callers)
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if isinstance(annotation, type) and issubclass(annotation, PurePath):
        return isinstance(value, (str, os.PathLike))
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True  # an annotation these rules do not know (a TypeVar, a Literal...): not checked here


def check_value(value: Any, annotation: Any, what: str) -> Any:
    """`value` if it is a valid `annotation` value, else EchobenchError naming `what` (e.g. "method
    apl: alpha"). A name ending in `seed` must also be a non-negative integer."""
    if not matches(value, annotation):
        raise EchobenchError(f"{what} must be {describe(annotation)}, got {value!r}"
                             + (" (a string: remove the quotes)" if isinstance(value, str) and _unquoted_ok(value, annotation) else ""))
    if what.rsplit(" ", 1)[-1].endswith("seed") and value is not None:
        check_seed(value, what)
    return value


def _unquoted_ok(text: str, annotation: Any) -> bool:
    """Whether `text` would be a valid value once unquoted (so the message can say so)."""
    from echobench.yamlsafe import load_yaml

    try:
        value = load_yaml(text, "a value")
    except EchobenchError:
        return False
    return not isinstance(value, str) and matches(value, annotation)


def check_fields(cls: type, values: Mapping[str, Any], what: str) -> None:
    """EchobenchError unless every key of `values` is a field of dataclass `cls` and every value
    matches its field's annotation. `what` names the owner in messages ("method 'apl'")."""
    if not isinstance(values, Mapping):
        raise EchobenchError(f"{what}: options must be a mapping of field: value, got {values!r}")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    _check_known(values, known, what)
    for key, value in values.items():
        check_value(value, hints.get(key, Any), f"{what}: {key}")


def check_options(func: Callable, options: Mapping[str, Any], what: str, skip: tuple[str, ...] = ()) -> None:
    """EchobenchError unless `options` are valid keyword arguments of `func` (names and annotated
    types); parameters in `skip` (a loader's `root`) are not options. A `**kwargs` takes any name."""
    if not isinstance(options, Mapping):
        raise EchobenchError(f"{what}: options must be a mapping of option: value, got {options!r}")
    params = {n: p for n, p in inspect.signature(func).parameters.items() if n not in skip
              and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    if not any(p.kind is p.VAR_KEYWORD for p in inspect.signature(func).parameters.values()):
        _check_known(options, list(params), what)
    try:
        hints = typing.get_type_hints(func)
    except Exception:  # annotations that do not resolve: names are checked, types are not
        hints = {}
    for key, value in options.items():
        if key in params:
            check_value(value, hints.get(key, Any), f"{what}: {key}")


def _check_known(values: Mapping[str, Any], known: list[str], what: str) -> None:
    unknown = sorted(str(k) for k in values if k not in known)
    if unknown:
        raise EchobenchError(f"{what} has no option(s) {unknown}; known: {', '.join(sorted(known)) or 'none'}")


def check_seed(value: Any, what: str = "seed") -> int:
    """A seed: a non-negative integer (numpy's seed sequences take no negative numbers)."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 0:
        raise EchobenchError(f"{what} must be a non-negative integer, got {value!r}")
    return value


def check_seeds(values: Any, what: str = "seeds") -> list[int]:
    """A non-empty list of seeds (a single seed is a list of one)."""
    values = values if isinstance(values, list) else [values]
    if not values:
        raise EchobenchError(f"{what} is empty; give at least one seed, e.g. [1]")
    for v in values:
        check_seed(v, what)
    return values


def safe_name(value: Any, what: str) -> str:
    """A name that is safe as one folder name: letters, digits, `.`, `_`, `+`, `-`, not starting
    with a dot or a dash, at most 100 characters (no path separators, no `..`)."""
    if not isinstance(value, str) or not SAFE_NAME.fullmatch(value):
        raise EchobenchError(f"{what} must be a plain name (letters, digits, '.', '_', '+', '-'; no '/' and no "
                             f"leading '.'; at most 100 characters), got {value!r}")
    return value


def check_output_folder(path: Any, what: str) -> None:
    """EchobenchError unless `path` can be a folder that a command writes its own files into: it is a
    directory, or it does not exist yet and its nearest existing ancestor is a writable directory.
    Checked before any expensive work; the folder itself is created when the files are written."""
    from pathlib import Path

    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise EchobenchError(f"{what} {folder} is a file, not a folder; choose a folder (new or existing)")
    ancestor = folder
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise EchobenchError(f"{what} {folder}: {ancestor} is a file, so no folder can be made under it; choose another folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise EchobenchError(f"{what} {folder}: {ancestor} is not writable; choose a folder you can write to")


def physical_memory() -> int | None:
    """This machine's memory in bytes (None where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(nbytes: float, what: str) -> None:
    """EchobenchError when `nbytes` (a lower bound of what `what` allocates) exceeds this machine's
    memory: a size option that cannot possibly fit is refused up front, not by a MemoryError later."""
    total = physical_memory()
    if total is not None and nbytes > total:
        raise EchobenchError(f"{what} would need at least {nbytes / 2**30:,.1f} GiB of memory, more than this "
                             f"machine's {total / 2**30:,.1f} GiB; choose smaller values")
