"""Why a row says what it says: the report's "Diagnostics" section, from what the cells recorded.

Two kinds of entries, per training cell (row, column, seed):

- **skipped stages** — a multi-stage method skipped a stage that could not act at the protocol's length
  (`echobench.training.stages`, rule 3); the cell's `diagnostics.skipped_stages` says why.
- **near chance** — the cell's accuracy (the report's metric) is below `NEAR_CHANCE` (25%). Its own
  curves tell which failure it is: a network that never fitted its (noisy) training labels better than
  `STUCK_TRAIN` (15%, chance is 10% for ten classes) is *stuck* — its optimisation never left the
  label-independent start, as bounded losses can on a flat start; one that fitted more of its training
  labels than their clean share (1 − the realised noise rate) *learnt the noise*; anything between is
  *still learning* when the protocol ends (it had not fitted even the clean labels).

So a reader sees an explained 10%, never an unexplained one.
"""

from __future__ import annotations

import json
from typing import Any

NEAR_CHANCE = 0.25
STUCK_TRAIN = 0.15


def cell_entries(read: dict[str, Any], metric_key: str) -> list[dict[str, Any]]:
    """One entry per finding, over the training cells of `read` (`index_page.read_results`)."""
    out = []
    for cell, stale in read["cells"]:
        if cell.kind != "train" or cell.result is None:
            continue
        spec, result = cell.config["spec"], cell.result
        where = {"dataset": spec["dataset"], "method": spec["method"], "noise": spec["noise"], "seed": spec["seed"],
                 "run_id": cell.run_id, "stale": stale,
                 "experiment": json.dumps({k: v for k, v in spec.items() if k not in ("seed", "noise", "dataset")},
                                          sort_keys=True, default=str)}
        for stage, why in (result.get("diagnostics") or {}).get("skipped_stages", {}).items():
            out.append({**where, "kind": "skipped stage", "text": f"{stage} skipped: {why}"})
        accuracy = (result.get("metrics") or {}).get(metric_key)
        if accuracy is None or accuracy >= NEAR_CHANCE:
            continue
        train = [c["train_acc"] for c in result.get("curves", []) if "train_acc" in c]
        best_train = max(train, default=float("nan"))
        clean_share = 1.0 - float((result.get("noise") or {}).get("realized_rate_train", 0.0))
        if best_train < STUCK_TRAIN:
            text = (f"{100 * accuracy:.1f}%: stuck — its training accuracy on the noisy labels never passed "
                    f"{100 * best_train:.1f}%: the optimisation did not leave the label-independent start")
        elif best_train > clean_share:
            text = (f"{100 * accuracy:.1f}%: it fitted up to {100 * best_train:.1f}% of its noisy training labels, more "
                    f"than their clean share ({100 * clean_share:.1f}%), but tests near chance: it learnt the noise")
        else:
            text = (f"{100 * accuracy:.1f}%: still learning — its training accuracy reached {100 * best_train:.1f}%, "
                    f"below the clean share of its labels ({100 * clean_share:.1f}%), when the protocol ended")
        out.append({**where, "kind": "near chance", "text": text})
    return out


def diagnostics_markdown(entries: list[dict[str, Any]], labels: dict[tuple[str, str, bool], str]) -> str:
    """The section; `labels` maps (dataset, experiment JSON, stale) to the row label the tables use."""
    from tabulate import tabulate

    from echobench.data.noise import NoiseSpec

    rows = []
    for e in sorted(entries, key=lambda e: (e["dataset"], e["method"], NoiseSpec.parse(e["noise"]).sort_key(), e["seed"])):
        rows.append([e["dataset"], labels.get((e["dataset"], e["experiment"], e["stale"]), e["method"]),
                     NoiseSpec.parse(e["noise"]).label(), e["seed"], e["text"]])
    return ("## Diagnostics\n\n"
            f"Cells that skipped a stage, and cells below {100 * NEAR_CHANCE:.0f}% with what their curves say "
            f"(`echobench.reporting.cell_diagnostics`).\n\n"
            + tabulate(rows, ["dataset", "row", "column", "seed", "finding"], tablefmt="pipe",
                       disable_numparse=True) + "\n")
