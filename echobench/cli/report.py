"""`echobench report`: the report of a results directory, or EchoMod's runtime report."""

from __future__ import annotations

import json
from pathlib import Path

from echobench.checks import check_output_folder
from echobench.cli.options import add_include, add_json, context
from echobench.errors import EchobenchError

EXAMPLES = """examples:
  echobench report runs/demo                      # writes report.{md,tex,csv,json} there, prints Markdown
  echobench report runs/demo --metric oracle --json
  echobench report runs/paper                     # Tables 1-4 beside the paper, runtime.md, figures, index.md
  echobench report --runtime                      # EchoMod GPU-hours: the paper's appendix D, compute model, floors
  echobench report --runtime measured.json --out runs/runtime   # plus our measurement and its projections"""


def add_parser(add) -> None:
    report = add("report", "Tabulate a results directory (methods × noise settings, mean ± std over seeds; Table 4 "
                           "from selection cells, the runtime report from runtime cells; index.md links it all), "
                           "or with --runtime EchoMod's GPU-hours beside the paper's appendix D.", EXAMPLES, cmd_report)
    report.add_argument("dir", nargs="?", help="a results directory written by `echobench run` (not with --runtime)")
    report.add_argument("--metric", default="best_val", choices=["best_val", "last", "oracle"])
    report.add_argument("--include-stale", action="store_true",
                        help="also tabulate stale cells (those the directory's current suite no longer contains, "
                             "e.g. after editing it), as rows of their own; by default they are left out and counted")
    report.add_argument("--runtime", nargs="*", metavar="MEASUREMENT.json",
                        help="the runtime report instead: the paper's Tables 6/7, the compute model, floors and "
                             "projections, plus the measurements in these files (schema: echobench/reporting/runtime.py)")
    report.add_argument("--out", help="where --runtime writes runtime.md and runtime.json (default: runs/runtime)")
    add_json(report, "print the JSON report instead of Markdown")
    add_include(report)


def cmd_report(args) -> int:
    if args.include:
        context(args)  # imports the plugins: a plugin noise kind must be known to order the columns
    if args.runtime is not None:
        return _runtime_report(args)
    if args.dir is None:
        raise EchobenchError("report needs DIR, a results directory written by `echobench run` "
                             "(or --runtime [MEASUREMENT.json ...] for the EchoMod runtime report)")
    if args.out is not None:
        raise EchobenchError("--out goes with --runtime; the accuracy report is written into DIR itself")
    from echobench.reporting.tables import write_reports

    doc = write_reports(args.dir, args.metric, include_stale=args.include_stale)
    return _show(doc, args.json, f"cells: {doc['cells']}; wrote {', '.join(doc['written'])} in {args.dir}/ "
                                 "(start at index.md)")


def _show(doc: dict, as_json: bool, summary: str) -> int:
    """A report document: its JSON (without the Markdown), or its Markdown and a summary line."""
    print(json.dumps({k: v for k, v in doc.items() if k != "markdown"}, indent=2) if as_json
          else f"{doc['markdown']}\n{summary}")
    return 0


def _runtime_report(args) -> int:
    from echobench.reporting.runtime import load_measurements, write_runtime_report

    if args.dir is not None:
        raise EchobenchError(f"--runtime takes measurement files, not a results directory ({args.dir!r}); "
                             f"list the files after it: `echobench report --runtime {args.dir}`")
    out = Path(args.out or Path("runs") / "runtime")
    check_output_folder(out, "--out")  # only runtime.md and runtime.json are written there
    measurements = load_measurements(args.runtime)
    doc = write_runtime_report(out, measurements or None)
    return _show(doc, args.json, f"wrote runtime.md and runtime.json in {out}/")
