"""One generic registry for datasets, noises, methods, suites, engines, ...

Modelled on EleutherAI/lm-evaluation-harness `lm_eval/api/registry.py`: entries may be objects or
lazy ``"module:attr"`` strings (so listing names imports nothing heavy), a second registration under
a taken name is an error, and an unknown name answers with the closest names.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any, Callable, Generic, Iterator, TypeVar

from echobench.errors import EchobenchError

T = TypeVar("T")


def closest(name: str, choices: list[str], n: int = 3) -> list[str]:
    """Names in `choices` that look like `name` (case-insensitive), best first."""
    lowered = {c.lower(): c for c in choices}
    hits = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.5)
    return [lowered[h] for h in hits]


def unknown_name_error(kind: str, name: str, choices: list[str]) -> EchobenchError:
    """An error for an unknown `kind` name that suggests the closest known ones."""
    hint = closest(name, choices)
    did_you_mean = f" Did you mean {' or '.join(repr(h) for h in hint)}?" if hint else ""
    return EchobenchError(
        f"unknown {kind} {name!r}.{did_you_mean} Known {kind}s: {', '.join(sorted(choices))} "
        f"(`echobench ls {kind}s` lists them)."
    )


class Registry(Generic[T]):
    """Name → object, with lazy "module:attr" entries resolved on first use."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Any] = {}

    def add(self, name: str, obj: T | str) -> None:
        """Register `obj` (or a lazy "module:attr" string) under `name`."""
        current = self._entries.get(name)
        if current is not None and current is not obj:
            # Importing the module a lazy entry points at registers the same object again: allowed.
            if not (isinstance(current, str) and not isinstance(obj, str) and _target(obj) == current):
                raise ValueError(f"{self.kind} {name!r} is already registered ({current!r})")
        self._entries[name] = obj

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of `add`."""

        def deco(obj: T) -> T:
            self.add(name, obj)
            return obj

        return deco

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise unknown_name_error(self.kind, name, list(self._entries))
        obj = self._entries[name]
        if isinstance(obj, str):
            module_name, _, attr = obj.partition(":")
            obj = getattr(importlib.import_module(module_name), attr)
            self._entries[name] = obj
        return obj

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def _target(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '')}:{getattr(obj, '__qualname__', '')}"
