"""`echobench run`: a suite of cells through the harness's one path, then its report."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from echobench.cli.options import add_device, add_include, add_json, add_paths, add_progress, add_threads, context, seed_arg

EXAMPLES = """examples:
  echobench run                                   # the demo suite on the embedded `shapes` world (CPU, minutes)
  echobench run --suite smoke --out /tmp/smoke    # a few seconds of the real pipeline
  echobench run --suite my_suite.yaml --seeds 1 2 3 --device cuda
  echobench run --suite demo --dry-run            # list the cells without running them
  echobench run --suite paper --dry-run --json    # cells, EchoMod pairs, projected GPU-hours per stage
  echobench run --suite shapes --workers 4        # 4 worker processes, pinned to the GPUs (on CPU: cores/4 threads each)
  echobench run --suite shapes --workers 2 --threads 1 --device cpu
  echobench run --suite paper --cells-per-gpu 4                    # 4 cells side by side on each visible GPU
  echobench run --suite paper --cells-per-gpu auto                 # K from a measured per-cell peak memory
  echobench run --suite paper --executor ray --address auto        # one Ray task per cell on the cluster of `ray start`
  echobench run --suite smoke --executor ray --address local       # a Ray instance for this run only
  echobench run --suite examples/gce_suite.yaml                    # a plugin method (its suite has `include:`)
  echobench run --suite my_suite.yaml --include my_methods/        # plugins from a folder (docs/plugin-api.md)"""


def add_parser(add) -> None:
    run = add("run", "Run a suite of cells (dataset × noise × method × seed × protocol), resuming finished ones.",
              EXAMPLES, cmd_run)
    run.add_argument("--suite", default="demo", help="a registered suite name or a YAML file (default: demo)")
    run.add_argument("--out", help="results directory (default: runs/SUITE)")
    run.add_argument("--seeds", type=seed_arg, nargs="+", help="replace the suite's seeds")
    add_device(run)
    add_paths(run)
    add_include(run)
    run.add_argument("--force", action="store_true",
                     help="recompute cells that already have a result (the old result is kept until the new one "
                          "replaces it, and kept if the recompute fails); also those whose plugin changed since")
    run.add_argument("--include-stale", action="store_true",
                     help="the report also tabulates stale cells (those the directory's current suite no longer "
                          "contains, e.g. after editing it), as rows of their own")
    run.add_argument("--metric", default="best_val", choices=["best_val", "last", "oracle"], help="accuracy to tabulate")
    run.add_argument("--dry-run", action="store_true",
                     help="list the cells, count EchoMod's distinct pairs and project GPU-hours per stage "
                          "(EchoMod, EchoSelect, training per method; projections), then exit; never downloads")
    add_json(run, "print a JSON summary instead of the table")
    add_threads(run, "torch CPU threads of each process computing cells (default: 1 per worker when --workers is "
                     "left out, else cores / workers; given alone on CPU, one process runs every cell with N threads)")
    add_progress(run)
    run.add_argument("--executor", default="local", choices=["local", "ray"],
                     help="local (default): --workers processes on this machine; ray: one Ray task per cell "
                          "(EchoMod's pairs generated first, in shard tasks) on a Ray cluster; needs "
                          "pip install 'echobench[ray]'")
    run.add_argument("--workers", type=int,
                     help="local executor: worker processes, each pinned to one GPU (CUDA_VISIBLE_DEVICES) or, on "
                          "CPU, running --threads torch threads (default: cores / workers); they take the pending "
                          "cells of one results store. Default: the number of visible GPUs; on CPU one per core, "
                          "one torch thread each (but 1 when --threads is given); 1 runs the cells one by one "
                          "in this process")
    run.add_argument("--cells-per-gpu", metavar="K|auto",
                     help="K cells side by side on each GPU: the local executor runs K workers per visible GPU "
                          "(--workers then defaults to GPUs × K), Ray gives each task 1/K of a GPU; on CPU, K "
                          "workers share the cores. auto: the largest K whose cells fit the free memory, from a "
                          "measured per-cell peak. Recorded in each cell's config.json (provenance: results and "
                          "run ids do not depend on it)")
    run.add_argument("--address",
                     help="ray executor: auto (default; the cluster started with `ray start --head`), HOST:PORT or "
                          "ray://HOST:PORT of a cluster, or local (a Ray instance for this run only)")


def cmd_run(args) -> int:
    from echobench.harness.executors import check_executor_args, make_executor
    from echobench.harness.suite import load_suite

    ctx = context(args)
    if args.dry_run:  # the options are checked, but no executor is set up: a named device need not be at hand
        check_executor_args(args.executor, args.workers, args.address, args.cells_per_gpu)
        suite = load_suite(args.suite)
        return _dry_run(args, ctx, suite, Path(args.out or Path("runs") / suite.name))
    executor = make_executor(args.executor, ctx, workers=args.workers, address=args.address,
                             cells_per_gpu=args.cells_per_gpu)
    suite = load_suite(args.suite)
    out = Path(args.out or Path("runs") / suite.name)
    from echobench.harness.runner import run_suite
    from echobench.reporting.tables import write_reports

    started = time.perf_counter()
    outcome = run_suite(suite, out, ctx, executor, seeds=args.seeds, argv=args.argv)
    cells, failed = outcome.cells, len(outcome.failed)
    wall = time.perf_counter() - started
    doc = write_reports(out, args.metric, include_stale=args.include_stale) if failed < len(cells) else None
    summary = {"suite": suite.name, "out": str(out), "device": outcome.device, "cells": len(cells),
               "computed": len(outcome.computed), "skipped": len(outcome.skipped), "busy": len(outcome.busy),
               "failed": outcome.failed, "wall_s": round(wall, 1), "plugins_changed": outcome.plugins_changed}
    if args.json:
        print(json.dumps({**summary, "report": {k: v for k, v in (doc or {}).items() if k != "markdown"}}, indent=2))
    else:
        if doc:
            print(doc["markdown"])
        print(f"{len(cells)} cells: {len(outcome.computed)} computed, {len(outcome.skipped)} already done, "
              f"{len(outcome.busy)} busy in another runner, {failed} failed; {wall:.0f} s on {outcome.device}. "
              + (f"Results and {', '.join(doc['written'])} in {out}/ (start at index.md)" if doc else
                 f"Results in {out}/ (no report: every cell failed)"))
        for rid, msg in outcome.failed.items():
            print(f"  failed {rid}: {msg} (traceback in {out}/cells/{rid}/error.json)", file=sys.stderr)
    for line in plugin_change_lines(outcome.plugins_changed):
        print(line, file=sys.stderr)
    return 1 if failed else 0


def plugin_change_lines(changes: dict[str, dict]) -> list[str]:
    """One line per plugin that changed since some finished cells were computed (they were kept)."""
    lines = []
    for key, change in sorted(changes.items()):
        now = change["now"]
        was = ", ".join(f"{w['digest'] or 'unrecorded'}" + (f" (version {w['version']})" if w["version"] else "")
                        for w in change["was"])
        lines.append(f"echobench: note: {key} ({change['source']}) changed since {len(change['cells'])} finished "
                     f"cell(s) were computed (source digest {was} → {now['digest']}"
                     + (f", version {now['version']}" if now["version"] else "") + "); their results were kept and "
                     "the report marks rows that mix versions (†); run again with --force to recompute them")
    return lines


def _dry_run(args, ctx, suite, out: Path) -> int:
    from echobench.harness.runner import dry_run_rows, plan_cells
    from echobench.reporting.dry_run import dry_run_summary, format_dry_run

    # runtime cells are those of the device's variant; a named device need not be at hand for a dry run
    device = ctx.resolved_device if ctx.device == "auto" else ctx.device
    selection, train, runtime = plan_cells(suite, args.seeds, device)
    summary = dry_run_summary(train, ctx.data_root, selection=selection, runtime=runtime)
    rows = dry_run_rows(selection, train, runtime)
    if args.json:
        print(json.dumps({"suite": suite.name, "out": str(out), **summary, "device": device, "cells": rows}, indent=2))
        return 0
    from tabulate import tabulate

    for kind in ("train", "selection", "runtime"):
        table = [{k: v for k, v in r.items() if k != "kind"} for r in rows if r["kind"] == kind]
        if table:
            print(tabulate(table, headers="keys") + "\n")
    print(f"{format_dry_run(summary)}\nResults would go to {out}")
    return 0
