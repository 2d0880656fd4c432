"""echobench: a benchmark harness for learning with noisy labels, built around EchoAlign."""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from pathlib import Path

__version__ = "0.1.0"

# The repository keeps `engines/` and `baselines/` at its top (the layout users asked for) while they
# are installed as `echobench.engines` and `echobench.baselines` (setuptools `package-dir` in
# pyproject.toml). An install maps them; a bare checkout on PYTHONPATH (local worker processes,
# tests, scripts/gpu_check.sh) is mapped here, the same way, by a finder for exactly those two names.
_CHECKOUT = Path(__file__).resolve().parent.parent
_SIBLINGS = {f"{__name__}.{name}": _CHECKOUT / name for name in ("engines", "baselines")}


class _CheckoutSiblings(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        folder = _SIBLINGS.get(fullname)
        if folder is None:
            return None
        return importlib.util.spec_from_file_location(
            fullname, folder / "__init__.py", submodule_search_locations=[str(folder)])


if all((folder / "__init__.py").is_file() for folder in _SIBLINGS.values()) and (
        _CHECKOUT / "pyproject.toml").is_file() and not (Path(__file__).parent / "engines").exists():
    sys.meta_path.append(_CheckoutSiblings())
