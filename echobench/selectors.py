"""The registry of sample-selection peers: functions `selector(task, ...) -> Selection` that pick the
training samples they believe clean (implemented in `baselines/selection.py`). Lazy entries, so that
listing them imports nothing heavy."""

from __future__ import annotations

from .registry import Registry

SELECTORS: Registry = Registry("selector")
SELECTORS.add("small-loss", "baselines.selection:small_loss")
SELECTORS.add("bltm", "baselines.selection:bltm")
SELECTORS.add("simifeat", "baselines.selection:simifeat")
SELECTORS.add("confident-learning", "baselines.selection:confident_learning")
