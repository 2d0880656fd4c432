"""The registry of sample-selection peers: functions `selector(task, ...) -> Selection` that pick the
training samples they believe clean (implemented in `baselines/selection.py`). Lazy entries, so that
listing them imports nothing heavy."""

from __future__ import annotations

from echobench.registry import Registry

SELECTORS: Registry = Registry("selector")
SELECTORS.add("small-loss", "echobench.baselines.selection:small_loss")
SELECTORS.add("bltm", "echobench.baselines.selection:bltm")
SELECTORS.add("simifeat", "echobench.baselines.selection:simifeat")
SELECTORS.add("confident-learning", "echobench.baselines.selection:confident_learning")
