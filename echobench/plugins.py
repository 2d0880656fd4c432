"""Plugins: user code that registers methods, datasets, noise kinds, selectors and EchoMod engines
without editing echobench (docs/plugin-api.md is the user's guide; this module is the mechanism).

Three ways in, each following a convention users know:

- `--include PATH` (lm-evaluation-harness's `--include_path`) and `include:` in a suite file: a `.py`
  file or a folder of them, imported by path (`load_includes`). A file is imported once per process
  as the top-level module named after it (`gce.py` → `gce`), its folder appended to `sys.path` so that
  it may import its siblings; its decorators (`register_method`, `register_dataset`, `register_noise`,
  `register_selector`, `register_engine`: timm's `register_model`) register its names. The include
  list travels in the `RunContext`, so local worker processes and Ray tasks import the same files.
- Entry points of installed distributions (pytest's plugins), in the groups of `ENTRY_POINT_GROUPS`:
  `echobench.methods`, `echobench.datasets`, `echobench.noises`, `echobench.selectors`,
  `echobench.engines`. `echobench.registry.Registry` reads them on first use as lazy `module:attr`
  entries: listing names imports no plugin code.
- A suite naming a method `module:Class` (imported by module name, like an entry point).

Attribution. Whatever a plugin registers while its code runs is attributed to it (`PluginSource`,
set through `loading`), so that a name clash names both sources, a broken plugin gets one line that
names its file, and a cell records the version and source digest of the plugins whose names it uses
(`PluginSource.provenance`): provenance, like echobench's own git revision, never identity (a cell's
run id does not change when its plugin's code does).

This module is foundation: it imports nothing of echobench's wings.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import importlib.util
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from echobench.errors import EchobenchError

# registry kind → entry point group
ENTRY_POINT_GROUPS = {"method": "echobench.methods", "dataset": "echobench.datasets", "noise": "echobench.noises",
                      "selector": "echobench.selectors", "engine": "echobench.engines"}
MAX_DIGEST_FILES = 2000  # a package with more source files than this is hashed over its first ones (sorted)


_DIGESTS: dict[tuple, str] = {}  # (file, mtime, size)... → digest, this process


@dataclass(frozen=True)
class PluginSource:
    """Where registrations come from: an included file or folder, an entry point, or a module named in a
    suite. `label` names it for people; `paths` are hashed into its digest (for entry points and
    modules, the files of `module`'s top-level package, found when it is imported)."""

    label: str
    paths: tuple[str, ...] = ()
    module: str | None = None  # entry points, module:Class: whose top-level package is hashed
    version: str | None = None  # a distribution's version (entry points)

    def files(self) -> list[tuple[str, Path]]:
        """(name, path) of each source file: names relative to the plugin's folder (or the file's name),
        so that the digest does not depend on where the plugin sits."""
        roots = [Path(p) for p in self.paths]
        if not roots and self.module:
            top = sys.modules.get(self.module.split(".")[0])
            if top is not None:
                roots = [Path(p) for p in getattr(top, "__path__", [])] or (
                    [Path(top.__file__)] if getattr(top, "__file__", None) else [])
        files: dict[str, Path] = {}
        for root in roots:
            if root.is_dir():
                for p in root.rglob("*.py"):
                    if "__pycache__" not in p.parts:
                        files[f"{root.name}/{p.relative_to(root).as_posix()}"] = p
            elif root.is_file():
                files[root.name] = root
        return sorted(files.items())[:MAX_DIGEST_FILES]

    def digest(self) -> str:
        """sha256 over the plugin's source files (relative names and contents), 16 hex digits."""
        files = self.files()
        try:
            stamp = tuple((name, str(path), path.stat().st_mtime_ns, path.stat().st_size) for name, path in files)
        except OSError:
            stamp = None
        if stamp is not None and stamp in _DIGESTS:
            return _DIGESTS[stamp]
        h = hashlib.sha256()
        for name, path in files:
            try:
                data = path.read_bytes()
            except OSError:
                data = b"(unreadable)"
            h.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
        digest = h.hexdigest()[:16]
        if stamp is not None:
            _DIGESTS[stamp] = digest
        return digest

    def provenance(self, obj: object = None) -> dict:
        """What a cell records about the plugin: its label, version and source digest. The version is
        the distribution's, else the `__version__` of the module that defines `obj`, if any."""
        version = self.version
        if version is None and obj is not None:
            module = sys.modules.get(getattr(obj, "__module__", "") or "")
            version = getattr(module, "__version__", None)
        return {"source": self.label, "version": None if version is None else str(version), "digest": self.digest()}


_CURRENT: contextvars.ContextVar[PluginSource | None] = contextvars.ContextVar("echobench_plugin", default=None)


@contextlib.contextmanager
def loading(source: PluginSource) -> Iterator[None]:
    """Attribute the registrations made inside the block to `source`."""
    token = _CURRENT.set(source)
    try:
        yield
    finally:
        _CURRENT.reset(token)


def current_source() -> PluginSource | None:
    """The plugin whose code is running (None: echobench itself, or a program registering directly)."""
    return _CURRENT.get()


def error_line(exc: BaseException, path: str | None = None) -> str:
    """`exc` in one line, with the line of `path` (a plugin file) where it was raised when known."""
    where = ""
    if isinstance(exc, SyntaxError) and exc.lineno:
        where = f" (line {exc.lineno})"
    elif path is not None:
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename) == Path(path)]
        if frames:
            where = f" (line {frames[-1].lineno})"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, SyntaxError):
        text = exc.msg
    return f"{type(exc).__name__}{': ' + text if text else ''}{where}"


# --- --include ---------------------------------------------------------------------------------------

_LOADED: dict[str, str] = {}  # resolved file → the include (file or folder) it was loaded from, this process


def resolve_includes(paths: Iterable[str | Path], base: str | Path | None = None, what: str = "--include") -> tuple[str, ...]:
    """Absolute paths of the includes (relative ones taken from `base`, default the working directory);
    EchobenchError for one that is neither a .py file nor a folder holding some."""
    out: list[str] = []
    for raw in paths:
        if not isinstance(raw, (str, Path)) or not str(raw).strip():
            raise EchobenchError(f"{what} must name a .py file or a folder of them, got {raw!r}")
        path = Path(raw).expanduser()
        if not path.is_absolute() and base is not None:
            path = Path(base) / path
        path = path.resolve()
        if path.is_dir():
            if not _folder_files(path):
                raise EchobenchError(f"{what} {raw}: the folder {path} holds no .py file")
        elif not path.is_file():
            raise EchobenchError(f"{what} {raw}: no such file or folder ({path})")
        elif path.suffix != ".py":
            raise EchobenchError(f"{what} {raw}: not a .py file")
        if str(path) not in out:
            out.append(str(path))
    return tuple(out)


def _folder_files(folder: Path) -> list[Path]:
    """The .py files of an included folder (not its subfolders, nor names starting with _ or .)."""
    return sorted(p for p in folder.glob("*.py") if p.is_file() and not p.name.startswith(("_", ".")))


def load_includes(includes: Iterable[str]) -> None:
    """Import every file of `includes` (absolute paths from `resolve_includes`) once in this process.
    A file that fails to import, or whose registrations are refused, is one EchobenchError naming the
    file and the problem."""
    for include in includes:
        root = Path(include)
        if not root.exists():
            raise EchobenchError(f"included plugin {include} does not exist (on host {_host()})")
        files = _folder_files(root) if root.is_dir() else [root]
        source = PluginSource(f"plugin {'folder' if root.is_dir() else 'file'} {root}", (str(root),))
        for file in files:
            key = str(file)
            if key in _LOADED:
                continue
            _import_file(file, source)
            _LOADED[key] = include


def _host() -> str:
    import platform

    return platform.node()


def _import_file(file: Path, source: PluginSource) -> None:
    name = file.stem
    present = sys.modules.get(name)
    if present is not None:
        present_file = getattr(present, "__file__", None)
        if present_file and Path(present_file).resolve() == file:
            return  # imported already (e.g. by a sibling plugin)
        raise EchobenchError(f"plugin file {file}: it is imported as module {name!r}, a name already taken by "
                             f"{present_file or 'a built-in module'}; rename the file")
    folder = str(file.parent)
    if folder not in sys.path:
        sys.path.append(folder)  # siblings importable; appended, so it shadows no installed module
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        with loading(source):
            spec.loader.exec_module(module)
    except EchobenchError as exc:
        sys.modules.pop(name, None)
        message = str(exc)
        raise EchobenchError(message if str(file) in message else f"plugin file {file}: {message}") from None
    except Exception as exc:  # noqa: BLE001 - any failure of the user's code is one line naming the file
        sys.modules.pop(name, None)
        raise EchobenchError(f"plugin file {file}: cannot import it: {error_line(exc, str(file))}") from None


def loaded_files() -> list[str]:
    """The plugin files imported in this process (for tests and `echobench ls`)."""
    return list(_LOADED)


def forget_loaded() -> None:
    """Forget which files were imported (tests that restore the registries call it)."""
    for file in list(_LOADED):
        module = sys.modules.get(Path(file).stem)
        if module is not None and getattr(module, "__file__", None) and Path(module.__file__).resolve() == Path(file):
            sys.modules.pop(Path(file).stem, None)
    _LOADED.clear()
