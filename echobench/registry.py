"""One generic registry for datasets, noises, methods, suites, engines, ...

Modelled on EleutherAI/lm-evaluation-harness `lm_eval/api/registry.py`: entries may be objects or
lazy ``"module:attr"`` strings (so listing names imports nothing heavy), a second registration under
a taken name is an error, and an unknown name answers with the closest names.
"""

from __future__ import annotations

import difflib
import importlib
import traceback
import weakref
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


class RegistryClash(EchobenchError, ValueError):
    """A name registered twice by different sources (built-in, plugin file, entry point, module)."""


_REGISTRIES: "weakref.WeakSet[Registry]" = weakref.WeakSet()
_ENTRY_POINTS: dict[str, list] = {}  # group → its installed entry points, read once per process


def _installed_entry_points(group: str) -> list:
    """The entry points of `group` (reading the distributions' metadata imports no plugin code)."""
    if group not in _ENTRY_POINTS:
        from importlib.metadata import entry_points

        _ENTRY_POINTS[group] = list(entry_points(group=group))
    return _ENTRY_POINTS[group]


def refresh_entry_points() -> None:
    """Read the installed entry points again (after a distribution was installed in this process)."""
    _ENTRY_POINTS.clear()
    for registry in list(_REGISTRIES):
        registry._forget_entry_points()


def callable_check(what: str) -> Callable[[Any, str, Any], None]:
    """A registry `check` for entries that must be functions (dataset loaders, noise kinds, selectors):
    a plugin registering anything else gets one line naming its source."""

    def check(obj: Any, name: str, source: Any) -> None:
        if not callable(obj):
            raise EchobenchError(f"{getattr(source, 'label', 'a plugin')}: {what} {name!r} is {obj!r}, not a function")

    return check


class Registry(Generic[T]):
    """Name → object, with lazy "module:attr" entries resolved on first use.

    Plugins (`echobench.plugins`): a registry whose kind has an entry point group there reads that
    group's entry points on first use, as lazy entries (nothing imported until a name is used). Every
    entry remembers its source (None: echobench itself), so that a clash names both sources; a plugin's
    entry is checked with `check(obj, name, source)` when it is registered or resolved (a method class
    without `Params`, a loss of the wrong signature: one EchobenchError naming the file). With
    `import_names`, a name `module:attr` that is not registered is imported and registered (a suite
    naming a method `module:Class`)."""

    def __init__(self, kind: str, *, check: Callable[[Any, str, Any], None] | None = None, import_names: bool = False):
        self.kind = kind
        self.check = check
        self.import_names = import_names
        self._entries: dict[str, Any] = {}
        self._sources: dict[str, Any] = {}  # name → PluginSource, or None (echobench)
        self._entry_points_read = False
        _REGISTRIES.add(self)

    def add(self, name: str, obj: T | str, source: Any = None) -> None:
        """Register `obj` (or a lazy "module:attr" string) under `name`; `source` defaults to the plugin
        whose code is running (`echobench.plugins.loading`), else echobench."""
        from echobench.plugins import current_source

        if source is None and not (obj if isinstance(obj, str) else _target(obj)).startswith("echobench."):
            source = current_source()  # echobench's own modules are echobench's, whoever imports them
        current = self._entries.get(name)
        if current is not None and current is not obj:
            # Importing the module a lazy entry points at registers the same object again: allowed.
            if not (isinstance(current, str) and not isinstance(obj, str) and _target(obj) == current):
                raise RegistryClash(f"{self.kind} {name!r} is already registered by {self.describe_source(name)}; "
                                    f"{_label(source, obj)} registers it again: rename one of them")
            source = self._sources.get(name)  # the entry point (or built-in) that named it keeps it
        if source is not None and not isinstance(obj, str) and self.check is not None:
            self.check(obj, name, source)
        self._entries[name] = obj
        self._sources[name] = source

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of `add`."""

        def deco(obj: T) -> T:
            self.add(name, obj)
            return obj

        return deco

    def get(self, name: str) -> T:
        self._read_entry_points()
        if name not in self._entries:
            if self.import_names and isinstance(name, str) and ":" in name:
                return self._import_name(name)
            raise unknown_name_error(self.kind, name, list(self._entries))
        obj = self._entries[name]
        if isinstance(obj, str):
            source = self._sources.get(name)
            if source is None:  # echobench's own lazy entry: a failure is a bug, with its traceback
                module_name, _, attr = obj.partition(":")
                obj = getattr(importlib.import_module(module_name), attr)
            else:
                obj = self._resolve_plugin(name, obj, source)
            self._entries[name] = obj
        return obj

    def _resolve_plugin(self, name: str, target: str, source: Any) -> Any:
        """Import a plugin's lazy entry: one EchobenchError naming the plugin for any failure."""
        from echobench.plugins import error_line, loading

        module_name, _, attr = target.partition(":")
        if not module_name or not attr:
            raise EchobenchError(f"{source.label}: {self.kind} {name!r} points at {target!r}, not at module:attr")
        try:
            with loading(source):
                module = importlib.import_module(module_name)
        except EchobenchError as exc:
            raise EchobenchError(f"{source.label}: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - a broken plugin is one line, not a traceback
            file = _failing_file(exc)
            raise EchobenchError(f"{source.label}: cannot import {module_name}"
                                 f"{' (' + file + ')' if file else ''}: {error_line(exc, file)}") from None
        obj = getattr(module, attr, None)
        if obj is None:
            raise EchobenchError(f"{source.label}: module {module_name} ({getattr(module, '__file__', '?')}) "
                                 f"has no {attr!r}")
        if self.check is not None:
            self.check(obj, name, source)
        return obj

    def _import_name(self, name: str) -> T:
        from echobench.plugins import PluginSource

        module_name = name.partition(":")[0]
        source = PluginSource(f"module {module_name} (named in a suite)", module=module_name)
        obj = self._resolve_plugin(name, name, source)
        self._entries[name] = obj
        self._sources[name] = source
        return obj

    def source(self, name: str) -> Any:
        """The `PluginSource` of `name`, or None when echobench registers it (or it is unknown)."""
        self._read_entry_points()
        return self._sources.get(name)

    def describe_source(self, name: str) -> str:
        return _label(self._sources.get(name), self._entries.get(name))

    def names(self) -> list[str]:
        self._read_entry_points()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self._read_entry_points()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    # --- entry points ------------------------------------------------------------------------------
    def _read_entry_points(self) -> None:
        if self._entry_points_read:
            return
        self._entry_points_read = True
        from echobench.plugins import ENTRY_POINT_GROUPS, PluginSource

        group = ENTRY_POINT_GROUPS.get(self.kind)
        if group is None:
            return
        for ep in _installed_entry_points(group):
            dist = getattr(ep, "dist", None)
            dist_text = f" of distribution {dist.name} {dist.version}" if dist is not None else ""
            source = PluginSource(f"entry point {ep.name} = {ep.value} in group {group}{dist_text}",
                                  module=ep.value.partition(":")[0],
                                  version=getattr(dist, "version", None))
            if self._entries.get(ep.name) == ep.value and self._sources.get(ep.name) is not None:
                continue  # the same entry point seen twice (one distribution on two sys.path entries)
            try:
                self.add(ep.name, ep.value, source)
            except RegistryClash:
                self._entry_points_read = False  # say it again next time, not half a registry
                raise

    def _forget_entry_points(self) -> None:
        for name, source in list(self._sources.items()):
            if source is not None and source.label.startswith("entry point "):
                del self._entries[name], self._sources[name]
        self._entry_points_read = False

    def snapshot(self) -> tuple[dict, dict, bool]:
        """The registry's state, for `restore` (tests that register plugins)."""
        return dict(self._entries), dict(self._sources), self._entry_points_read

    def restore(self, state: tuple[dict, dict, bool]) -> None:
        self._entries, self._sources, self._entry_points_read = dict(state[0]), dict(state[1]), state[2]


def all_registries() -> list["Registry"]:
    """Every registry created so far (tests snapshot and restore them)."""
    return list(_REGISTRIES)


def _label(source: Any, obj: Any) -> str:
    if source is not None:
        return source.label
    where = obj if isinstance(obj, str) else _target(obj)
    return f"echobench ({where})" if where.startswith("echobench.") else f"module {where}"


def _failing_file(exc: BaseException) -> str | None:
    """The last file of the traceback outside the import machinery (the plugin's own file, usually)."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return exc.filename
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if "importlib" not in f.filename and not f.filename.startswith("<") and f.filename != __file__]
    return frames[-1].filename if frames else None


def _target(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '')}:{getattr(obj, '__qualname__', '')}"
