"""The registry of sample-selection peers: functions `selector(task, ...) -> Selection` that pick the
training samples they believe clean (implemented in `baselines/selection.py`). Lazy entries, so that
listing them imports nothing heavy."""

from __future__ import annotations

from echobench.registry import Registry, callable_check


SELECTORS: Registry = Registry("selector", check=callable_check("selector"))
SELECTORS.add("small-loss", "echobench.baselines.selection:small_loss")
SELECTORS.add("bltm", "echobench.baselines.selection:bltm")
SELECTORS.add("simifeat", "echobench.baselines.selection:simifeat")
SELECTORS.add("confident-learning", "echobench.baselines.selection:confident_learning")


def register_selector(name: str):
    """Decorator: register a selector `fn(task, ...) -> Selection` (a plugin's too)."""
    return SELECTORS.register(name)
