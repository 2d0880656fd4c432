"""A Markdown table of training curves: per cell of one or more results directories, the test accuracy at
its peak epoch and at the last epoch, the drop between them, and the training accuracy (on the noisy
labels) at the last epoch. Used to choose a protocol from CE's behaviour (reports/shapes-protocol/).

    python scripts/curve_summary.py reports/shapes-protocol/probes/r*
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def rows(results: Path):
    for path in sorted(results.glob("cells/*/result.json")):
        spec = json.loads((path.parent / "config.json").read_text())["spec"]
        curves = json.loads(path.read_text())["curves"]
        test = [c["test_acc"] for c in curves]
        peak = max(range(len(test)), key=test.__getitem__)
        p = spec["protocol"]
        protocol = (f"{p['model']}, {p['optimizer']} lr {p['lr']:g}, wd {p['weight_decay']:g}, crop {p['crop_padding']}, "
                    f"{p['epochs']} ep, milestones {p['milestones']}")
        data = ", ".join(f"{k} {v}" for k, v in spec["dataset_options"].items() if k != "world")
        yield [results.name, data, protocol, spec["noise"], f"{100 * test[peak]:.1f} @ {peak + 1}",
               f"{100 * test[-1]:.1f}", f"{100 * (test[peak] - test[-1]):.1f}", f"{100 * curves[-1]['train_acc']:.1f}"]


def main() -> None:
    from tabulate import tabulate

    table = [row for arg in sys.argv[1:] for row in rows(Path(arg))]
    print(tabulate(table, ["run", "data", "protocol", "noise", "peak test % @ epoch", "last test %", "drop",
                           "train acc % (last)"], tablefmt="pipe", disable_numparse=True))


if __name__ == "__main__":
    main()
