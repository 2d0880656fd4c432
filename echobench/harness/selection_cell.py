"""A `selection` cell (the paper's Table 4, §5.3 "Sensitivity Analysis"; Figures 3 and 4b).

`echobench select` on the cell's setting: EchoMod's pairs through the shared cache, EchoSelect's
similarity S, precision and recall at τ, AUROC and KS test, how many samples EchoSelect and each peer
keep at the fixed precisions (ranking by each selector's own score), the τ sweep, and the figures
`similarity_hist.png`, `tau_sweep.png` plus `select.md` in its cell directory.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from echobench.harness.context import RunContext
from echobench.harness.suite import SelectionSpec

SELECTION_FILES = {"histogram": "similarity_hist.png", "tau_sweep": "tau_sweep.png", "report": "select.md"}


def selection_files(cell_dir: Path) -> dict[str, bytes]:
    """The figure and report files a selection cell wrote into `cell_dir` (for executors whose tasks
    compute in a scratch directory and hand the files to the driver)."""
    return {name: (Path(cell_dir) / name).read_bytes() for name in SELECTION_FILES.values()
            if (Path(cell_dir) / name).exists()}


def run_selection_cell(spec: SelectionSpec, cell_dir: Path, ctx: RunContext) -> dict[str, Any]:
    """One Table 4 cell: `select_report` on the cell's setting, figures and select.md into `cell_dir`."""
    from echobench.echoalign.methods import EchoAlignParams
    from echobench.harness.setting import select_report, setting_task

    started = time.perf_counter()
    task, clean = setting_task(spec.dataset, spec.dataset_options, spec.noise, spec.seed, protocol=spec.protocol,
                               ctx=ctx)
    doc = select_report(task, clean, EchoAlignParams(**spec.params), peers=list(spec.peers),
                        peer_params=spec.peers, precisions=tuple(spec.precisions), out_dir=cell_dir,
                        progress=ctx.progress)
    doc["files"] = dict(SELECTION_FILES)  # relative to the cell directory
    doc["timings"] = {"total_s": round(time.perf_counter() - started, 3)}
    return doc
