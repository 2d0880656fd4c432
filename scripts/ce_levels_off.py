"""The epoch by which CE's noisy-validation accuracy has levelled off, from a results directory of CE
cells (the `ce_levels_off` field of a protocol; see echobench/training/stages.py, rule 2).

Definition: average the noisy-validation accuracy of every CE cell per epoch; the answer is the first
epoch at which that mean reaches `--share` (default 0.95) of its maximum over the protocol. Only CE's
own curves are read: no other method, no test accuracy.

    python scripts/ce_levels_off.py reports/shapes-protocol/ce-levels-off
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def levels_off(results: Path, share: float) -> tuple[int, list[float], int]:
    curves = []
    for path in sorted(results.glob("cells/*/result.json")):
        config = json.loads((path.parent / "config.json").read_text())
        if config["spec"]["method"] != "ce":
            continue
        curves.append([epoch["val_acc"] for epoch in json.loads(path.read_text())["curves"]])
    if not curves or len({len(c) for c in curves}) != 1:
        raise SystemExit(f"{results}: need CE cells of one protocol (found {len(curves)} curves)")
    mean = np.mean(curves, axis=0)
    first = int(np.argmax(mean >= share * mean.max())) + 1
    return first, [round(float(v), 4) for v in mean], len(curves)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--share", type=float, default=0.95)
    args = parser.parse_args()
    epoch, mean, n = levels_off(args.results, args.share)
    print(json.dumps({"ce_levels_off": epoch, "share": args.share, "cells": n, "mean_val_acc_per_epoch": mean}))


if __name__ == "__main__":
    main()
