"""The executor interface, and the executor that computes cells in this process.

An executor only maps "compute this cell" over the pending cells the runner found: it yields
`(spec, status, error)` per cell as each finishes, computing every cell through
`echobench.harness.cells` (under the cell's lock, into the one results store). The other executors,
`echobench.harness.local_workers.LocalWorkers` and `echobench.harness.ray_tasks.RayExecutor`, do
the same in worker processes or Ray tasks; `echobench.harness.executors` chooses one.
"""

from __future__ import annotations

import abc
import sys
from typing import Iterator

from echobench.harness.context import RunContext
from echobench.harness.store import Store
from echobench.harness.suite import CellSpec

Outcome = tuple[CellSpec, str, "str | None"]  # (cell, status, error line or None)


class Executor(abc.ABC):
    """Maps the computation of a cell over pending cells."""

    @abc.abstractmethod
    def map(self, store: Store, suite_name: str, cells: list[CellSpec], ctx: RunContext) -> Iterator[Outcome]:
        """Compute `cells` into `store`; yield each cell's outcome as it finishes (any order)."""

    @abc.abstractmethod
    def describe(self, ctx: RunContext) -> str:
        """What computes the cells, for the run's summary line: e.g. "cpu" or "2 workers on cpu"."""


class InlineExecutor(Executor):
    """One cell after another in this process, with a progress bar per cell's epochs on a terminal.

    `provenance` (e.g. `--cells-per-gpu 1`'s packing factor) goes into each cell's config.json as its
    `executor`; without it nothing is recorded there, as before."""

    def __init__(self, provenance: dict | None = None):
        self.provenance = provenance

    def describe(self, ctx: RunContext) -> str:
        return ctx.resolved_device

    def map(self, store: Store, suite_name: str, cells: list[CellSpec], ctx: RunContext) -> Iterator[Outcome]:
        from tqdm.auto import tqdm

        from echobench.environment import environment
        from echobench.harness.cells import compute_cell

        if not cells:
            return
        ctx = ctx.replace(device=ctx.resolved_device)
        env = environment(ctx.device)
        for spec in cells:
            epochs = tqdm(total=spec.protocol["epochs"] if spec.kind == "train" else 0, desc=spec.label(),
                          unit="epoch", leave=False, disable=not (ctx.progress and spec.kind == "train"
                                                                  and sys.stderr.isatty()), file=sys.stderr)

            def on_epoch(r, epochs=epochs):
                epochs.update(1)
                epochs.set_postfix(test=f"{r.test_acc:.3f}", val=f"{r.val_acc:.3f}")

            try:
                status, message = compute_cell(store, suite_name, spec, env, ctx, on_epoch=on_epoch,
                                               executor={"name": "inline", **self.provenance} if self.provenance else None)
            finally:
                epochs.close()
            yield spec, status, message
