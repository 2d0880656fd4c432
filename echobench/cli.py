"""The `echobench` command line. Heavy libraries are imported inside the commands that need them,
so `echobench --help` and `echobench ls` answer at once."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from .errors import EchobenchError

EXAMPLES = {
    "run": """examples:
  echobench run                                   # the demo suite on the embedded `shapes` world (CPU, minutes)
  echobench run --suite smoke --out /tmp/smoke    # a few seconds of the real pipeline
  echobench run --suite my_suite.yaml --seeds 1 2 3 --device cuda
  echobench run --suite demo --dry-run            # list the cells without running them
  echobench run --suite paper --dry-run --json    # cells, EchoMod pairs, projected GPU-hours per stage
  echobench run --suite shapes --workers 4        # 4 worker processes, pinned to the GPUs (on CPU: cores/4 threads each)
  echobench run --suite shapes --workers 2 --threads 1 --device cpu
  echobench run --suite paper --executor ray --address auto        # one Ray task per cell on the cluster of `ray start`
  echobench run --suite smoke --executor ray --address local       # a Ray instance for this run only""",
    "ls": """examples:
  echobench ls methods
  echobench ls suites""",
    "report": """examples:
  echobench report runs/demo                      # writes report.{md,tex,csv,json} there, prints Markdown
  echobench report runs/demo --metric oracle --json
  echobench report runs/paper                     # Tables 1-4 beside the paper, runtime.md, figures, index.md
  echobench report --runtime                      # EchoMod GPU-hours: the paper's appendix D, compute model, floors
  echobench report --runtime measured.json --out runs/runtime   # plus our measurement and its projections""",
    "noise": """examples:
  echobench noise shapes --kind instance --rate 0.3 --seed 1
  echobench noise cifar10 --kind pairflip --rate 0.45 --seed 2 --json
  echobench noise cifar10n --kind worst --labels-file CIFAR-10_human.pt""",
    "bench": """examples:
  echobench bench knn                             # 50,000 × 512 random features, k = 10, faiss vs torch
  echobench bench knn --n 2000 --dim 32 --json
  echobench bench echoselect --n 128              # batched EchoSelect vs the released per-image loop
  echobench bench train --device cuda             # one epoch of the paper's ResNet-18 on 50,000 random CIFAR images
  echobench bench train --n 512 --device cpu --json
  echobench bench approx shapes --noise instance:0.3 --engine eager --engine-option model=tiny --variant steps=10""",
    "modify": """examples:
  echobench modify shapes --noise instance:0.5 --seed 1           # procedural EchoMod, cached
  echobench modify cifar10 --noise symmetric:0.3 --seed 1 --device cuda --shard 0/4
  echobench modify cifar10 --noise pairflip:0.45 --seed 2 --engine-option base_model=/models/sd15 --json""",
    "select": """examples:
  echobench select shapes --noise instance:0.5 --seed 1           # separation, Table 4 view, τ sweep, histograms
  echobench select shapes --noise instance:0.3 --seed 1 --peers small-loss bltm simifeat confident-learning
  echobench select cifar10 --noise instance:0.3 --seed 1 --device cuda --extractor-option pretrained=openai --json""",
    "train-echomod": """examples:
  echobench train-echomod --out runs/echomod-shapes            # SD + canny ControlNet + tiny VAE for shapes (CPU, ~45 min)
  echobench train-echomod --out /tmp/em --unet-steps 100 --controlnet-steps 50 --vae-steps 50 --tiny-vae-steps 50
  echobench select shapes --noise instance:0.3 --dataset-option n_train=1000 --engine eager \
      --engine-option model=sd15 --engine-option resolution=32 \
      --engine-option base_model=runs/echomod-shapes/stable-diffusion --engine-option controlnet=runs/echomod-shapes/controlnet""",
    "eval-echomod": """examples:
  echobench eval-echomod runs/echomod-shapes                  # does the trained UNet draw the class its prompt names?
  echobench eval-echomod runs/echomod-shapes --n 1000 --timesteps 200 400 600 800 --json""",
    "doctor": """examples:
  echobench doctor
  echobench doctor --json""",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="echobench",
        description="A benchmark harness for learning with noisy labels, built around EchoAlign.",
        epilog="Run `echobench COMMAND --help` for a command's options and examples.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__import__('echobench').__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, description=help_text, epilog=EXAMPLES[name],
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    run = add("run", "Run a suite of cells (dataset × noise × method × seed × protocol), resuming finished ones.")
    run.add_argument("--suite", default="demo", help="a registered suite name or a YAML file (default: demo)")
    run.add_argument("--out", help="results directory (default: runs/SUITE)")
    run.add_argument("--seeds", type=int, nargs="+", help="replace the suite's seeds")
    run.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    run.add_argument("--data-root", help="dataset cache directory (default: $ECHOBENCH_DATA or ~/.cache/echobench)")
    run.add_argument("--cache-dir", help="EchoMod's cache of modified images (default: $ECHOBENCH_CACHE or DATA_ROOT/echomod)")
    run.add_argument("--force", action="store_true", help="recompute cells that already have a result")
    run.add_argument("--metric", default="best_val", choices=["best_val", "last", "oracle"], help="accuracy to tabulate")
    run.add_argument("--dry-run", action="store_true",
                     help="list the cells, count EchoMod's distinct pairs and project GPU-hours per stage "
                          "(EchoMod, EchoSelect, training per method; projections), then exit; never downloads")
    run.add_argument("--json", action="store_true", help="print a JSON summary instead of the table")
    run.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice; 1 is often fastest for small CPU models on a busy machine)")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.add_argument("--executor", default="local", choices=["local", "ray"],
                     help="local (default): --workers processes on this machine; ray: one Ray task per cell "
                          "(EchoMod's pairs generated first, in shard tasks) on a Ray cluster; needs "
                          "pip install 'echobench[ray]'")
    run.add_argument("--workers", type=int,
                     help="local executor: worker processes, each pinned to one GPU (CUDA_VISIBLE_DEVICES) or, on "
                          "CPU, running --threads torch threads (default: cores / workers); they take the pending "
                          "cells of one results store. Default: the number of visible GPUs, or 1 on CPU; 1 runs "
                          "the cells one by one in this process")
    run.add_argument("--address",
                     help="ray executor: auto (default; the cluster started with `ray start --head`), HOST:PORT or "
                          "ray://HOST:PORT of a cluster, or local (a Ray instance for this run only)")

    ls = add("ls", "List registered datasets, noises, methods, selectors, suites, protocols, models, engines, extractors or gpus.")
    ls.add_argument("what", choices=["datasets", "noises", "methods", "selectors", "suites", "protocols", "models",
                                     "engines", "extractors", "gpus"])
    ls.add_argument("--json", action="store_true")

    report = add("report", "Tabulate a results directory (methods × noise settings, mean ± std over seeds; Table 4 "
                           "from selection cells, the runtime report from runtime cells; index.md links it all), "
                           "or with --runtime EchoMod's GPU-hours beside the paper's appendix D.")
    report.add_argument("dir", nargs="?", help="a results directory written by `echobench run` (not with --runtime)")
    report.add_argument("--metric", default="best_val", choices=["best_val", "last", "oracle"])
    report.add_argument("--runtime", nargs="*", metavar="MEASUREMENT.json",
                        help="the runtime report instead: the paper's Tables 6/7, the compute model, floors and "
                             "projections, plus the measurements in these files (schema: echobench/runtime_report.py)")
    report.add_argument("--out", help="where --runtime writes runtime.md and runtime.json (default: runs/runtime)")
    report.add_argument("--json", action="store_true", help="print the JSON report instead of Markdown")

    noise = add("noise", "Generate noisy labels for a dataset and report the realized rate and confusion.")
    noise.add_argument("dataset")
    noise.add_argument("--kind", required=True, help="symmetric, pairflip, instance, human; for cifar10n/cifar100n also a label set (aggre, random1, worst, noisy)")
    noise.add_argument("--rate", type=float, default=0.0, help="nominal noise rate in [0, 1)")
    noise.add_argument("--seed", type=int, default=1)
    noise.add_argument("--labels-file", help="a local CIFAR-N label file (CIFAR-10_human.pt / CIFAR-100_human.pt)")
    noise.add_argument("--data-root")
    noise.add_argument("--json", action="store_true")

    bench = add("bench", "Micro-benchmarks of echobench's building blocks (kNN backends, EchoSelect, EchoMod's "
                         "engines and approximate settings, a training epoch: time and peak memory).")
    bench_sub = bench.add_subparsers(dest="bench_what", metavar="WHAT", required=True)
    knn = bench_sub.add_parser("knn", help="faiss vs torch cosine kNN: seconds, peak MiB, agreement")
    knn.add_argument("--n", type=int, default=50_000, help="points (default: 50000)")
    knn.add_argument("--dim", type=int, default=512, help="feature dimension (default: 512)")
    knn.add_argument("--k", type=int, default=10, help="neighbours per point (default: 10)")
    knn.add_argument("--backends", nargs="+", default=["faiss", "torch"], choices=["faiss", "torch"])
    knn.add_argument("--repeats", type=int, default=1)
    knn.add_argument("--seed", type=int, default=0)
    knn.add_argument("--threads", type=int, help="torch/faiss CPU threads in each child (default: their own)")
    knn.add_argument("--json", action="store_true", help="print the JSON result instead of the table")

    def setting(cmd: argparse.ArgumentParser) -> None:
        cmd.add_argument("dataset", help="a registered dataset (shapes, cifar10, cifar100, cifar10n, cifar100n)")
        cmd.add_argument("--noise", required=True, help="KIND:RATE (symmetric:0.5, pairflip:0.45, instance:0.3) or human:SET")
        cmd.add_argument("--seed", type=int, default=1, help="the run seed: noisy labels and split (default: 1)")
        cmd.add_argument("--dataset-option", action="append", default=[], metavar="KEY=VALUE",
                         help="a dataset loader option, e.g. n_train=4000 (default for shapes: the demo's n_train=4000 n_test=1000)")
        cmd.add_argument("--protocol", default="demo", help="the protocol whose validation split is used (default: demo)")
        cmd.add_argument("--engine", default="", help="EchoMod engine (default: procedural for shapes, eager elsewhere)")
        cmd.add_argument("--engine-option", action="append", default=[], metavar="KEY=VALUE",
                         help="an engine option, e.g. base_model=/path/to/sd15 or steps=20")
        cmd.add_argument("--base-seed", type=int, default=0, help="EchoMod's own seed (part of the cache key; default 0)")
        cmd.add_argument("--batch-size", type=int, default=64, help="images per generation batch (default: 64)")
        cmd.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
        cmd.add_argument("--data-root", help="dataset cache directory (default: $ECHOBENCH_DATA or ~/.cache/echobench)")
        cmd.add_argument("--cache-dir", help="EchoMod cache (default: $ECHOBENCH_CACHE or DATA_ROOT/echomod)")
        cmd.add_argument("--json", action="store_true", help="print JSON instead of text")
        cmd.add_argument("--no-progress", action="store_true", help="no progress bar")

    modify = add("modify", "Run EchoMod alone: generate (or find cached) the modified training images of a setting.")
    setting(modify)
    modify.add_argument("--shard", help="i/n: only the cache shards with number %% n == i (split generation over n workers)")

    select = add("select", "Run EchoSelect alone and measure it: precision, recall, AUROC, KS, Table 4 view, τ sweep, histograms.")
    setting(select)
    select.add_argument("--extractor", default="", help="feature extractor (default: shapes-hog for shapes, open_clip elsewhere)")
    select.add_argument("--extractor-option", action="append", default=[], metavar="KEY=VALUE",
                        help="an extractor option, e.g. pretrained=openai")
    select.add_argument("--tau", type=float, help="threshold in [-1, 1] (default: 0.4 at 30%% noise, 0.52 at 45-50%%)")
    select.add_argument("--strict", action="store_true", help="keep S > τ (the released code) instead of S ≥ τ")
    select.add_argument("--peers", nargs="*", default=[], help="peer selectors for the Table 4 view (`echobench ls selectors`)")
    select.add_argument("--out", help="directory for select.json, select.md and the PNG figures (default: runs/select/DATASET-NOISE-seedS)")

    eng = bench_sub.add_parser("engines", help="EchoMod engines vs diffusers' stock ControlNet pipeline: images/s, "
                                               "s/step, peak memory, parity")
    eng.add_argument("--config", default="tiny", choices=["tiny", "sd15"], help="model configuration (default: tiny)")
    eng.add_argument("--random-init", action="store_true",
                     help="random weights (no download; same compute). tiny is always random")
    eng.add_argument("--engines", nargs="+", default=["eager", "compile", "onnxruntime"],
                     help="engines to time (default: eager compile onnxruntime); NAME[option=value,...] sets "
                          "engine options (`echobench ls engines`), e.g. 'compile[vae=true]', so that settings of "
                          "one engine are compared in one run")
    eng.add_argument("--batch-sizes", type=int, nargs="+", default=[4], help="images per batch (default: 4)")
    eng.add_argument("--resolution", type=int, help="generation resolution (default: 32 for tiny, 512 for sd15)")
    eng.add_argument("--steps", type=int, default=20, help="denoising steps (default: 20)")
    eng.add_argument("--vae", default="", help="an approximate tiny decoder for every row (an AutoencoderTiny hub id "
                                               "or directory, e.g. madebyollin/taesd); default: the checkpoint's VAE")
    eng.add_argument("--repeats", type=int, default=1, help="timed runs after the warm-up; the fastest counts")
    eng.add_argument("--device", default="auto")
    eng.add_argument("--threads", type=int, help="torch CPU threads")
    eng.add_argument("--seed", type=int, default=0)
    eng.add_argument("--json", action="store_true")
    eng.add_argument("--out", help="also write the JSON document to this file, rewritten (atomically) after every "
                                   "row, so a run cut short keeps what it measured (\"complete\": false)")

    sel = bench_sub.add_parser("echoselect", help="EchoSelect (batched) vs the released code's per-image CLIP loop")
    sel.add_argument("--n", type=int, default=128, help="image pairs (default: 128)")
    sel.add_argument("--size", type=int, default=32, help="image side in pixels (default: 32, CIFAR)")
    sel.add_argument("--batch-size", type=int, default=64)
    sel.add_argument("--pretrained", default="none", help="open_clip tag; none = random weights, same compute (default)")
    sel.add_argument("--device", default="auto")
    sel.add_argument("--threads", type=int, help="torch CPU threads")
    sel.add_argument("--seed", type=int, default=0)
    sel.add_argument("--json", action="store_true")

    train = bench_sub.add_parser("train", help="one epoch of the paper protocol's ResNet-18 through the trainer: "
                                               "images/s, seconds per epoch, peak memory")
    train.add_argument("--n", type=int, default=50_000, help="random 32×32×3 uint8 training images (default: 50000)")
    train.add_argument("--batch-size", type=int, help="images per step (default: the paper protocol's 128)")
    train.add_argument("--warmup-steps", type=int, default=3,
                       help="untimed steps first, plus one of the last partial batch's size (default: 3)")
    train.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    train.add_argument("--threads", type=int, help="torch CPU threads")
    train.add_argument("--seed", type=int, default=0, help="seed of the random images, labels and weights (default: 0)")
    train.add_argument("--json", action="store_true", help="print the JSON result instead of the text")

    approx = bench_sub.add_parser(
        "approx", help="EchoSelect after exact and approximate EchoMod (fewer steps, lower resolution, a tiny VAE) on "
                       "the same setting and seeds: speedup, precision, recall, AUROC, agreement with exact, and "
                       "each variant minus exact with a paired-bootstrap 95%% interval",
        epilog="""examples:
  echobench bench approx shapes --noise instance:0.3 --dataset-option n_train=1000 --dataset-option n_test=200 \\
      --engine eager --engine-option model=sd15 --engine-option resolution=32 \\
      --engine-option base_model=runs/echomod-shapes/stable-diffusion --engine-option controlnet=runs/echomod-shapes/controlnet \\
      --variant steps=10 --variant resolution=24 --variant vae=runs/echomod-shapes/tiny-vae
  (runs/echomod-shapes: `echobench train-echomod --out runs/echomod-shapes`)""",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    setting(approx)
    approx.add_argument("--variant", action="append", default=[], metavar="KEY=VALUE[,KEY=VALUE]",
                        help="an approximate setting: engine options overriding the exact row's, e.g. steps=10, "
                             "resolution=16, vae=PATH (repeatable; one row each)")
    approx.add_argument("--extractor", default="", help="feature extractor (default: shapes-hog for shapes, open_clip elsewhere)")
    approx.add_argument("--extractor-option", action="append", default=[], metavar="KEY=VALUE")
    approx.add_argument("--tau", type=float, help="EchoSelect's threshold for every row (default: the extractor's)")
    approx.add_argument("--strict", action="store_true", help="keep S > τ instead of S ≥ τ")
    approx.add_argument("--threads", type=int, help="torch CPU threads")
    approx.add_argument("--out", help="also write the JSON document to this file (atomically)")
    approx.add_argument("--grid", help="a PNG of the first samples with a wrong label: originals, then one row per variant")

    trainer = add("train-echomod", "Train EchoMod's diffusion model for the embedded shapes world: a small SD + canny "
                                   "ControlNet and a tiny VAE, on an independent shapes world (CPU, no download).")
    trainer.add_argument("--out", required=True, help="new folder for stable-diffusion/, controlnet/, tiny-vae/, training.json")
    trainer.add_argument("--init-from", help="a folder this command wrote: continue training its models (stages with "
                                             "0 steps keep theirs; --vae-steps 0 keeps the latent scaling)")
    from .echomod_training import TrainingConfig

    for field in dataclasses.fields(TrainingConfig):
        flag = "--" + field.name.replace("_", "-")
        trainer.add_argument(flag, type=type(field.default), default=field.default, help=f"(default: {field.default})")
    trainer.add_argument("--threads", type=int, help="torch CPU threads (the losses depend on it in the last bits)")
    trainer.add_argument("--json", action="store_true", help="print training.json instead of a summary")
    trainer.add_argument("--no-progress", action="store_true", help="no progress bars")

    evaluate = add("eval-echomod", "Prompt accuracy of a model `echobench train-echomod` wrote: classify held-out shapes "
                                   "images by which class prompt lets its UNet predict the noise best (a diffusion "
                                   "classifier; chance is one in ten).")
    from .prompt_accuracy import DEFAULT_N, DEFAULT_TIMESTEPS, DEFAULT_WORLD_SEED

    evaluate.add_argument("folder", help="a folder `echobench train-echomod` wrote")
    evaluate.add_argument("--n", type=int, default=DEFAULT_N, help=f"held-out images (default: {DEFAULT_N})")
    evaluate.add_argument("--world-seed", type=int, default=DEFAULT_WORLD_SEED,
                          help=f"the held-out shapes world (default: {DEFAULT_WORLD_SEED}; training uses 777, runs 0)")
    evaluate.add_argument("--timesteps", type=int, nargs="+", default=list(DEFAULT_TIMESTEPS),
                          help="noise levels of SD's 1000 whose ε errors are summed (default: "
                               f"{' '.join(map(str, DEFAULT_TIMESTEPS))})")
    evaluate.add_argument("--seed", type=int, default=0, help="seed of the noise (default: 0)")
    evaluate.add_argument("--threads", type=int, help="torch CPU threads")
    evaluate.add_argument("--json", action="store_true")

    doctor = add("doctor", "Show installed extras, devices and cache locations.")
    doctor.add_argument("--json", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded by `run` in OUT/commands/
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return COMMANDS[args.command](args)
    except EchobenchError as exc:
        print(f"echobench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("echobench: interrupted; finished cells are kept, re-run the same command to resume", file=sys.stderr)
        return 130


def cmd_run(args) -> int:
    from .environment import resolve_device
    from .executors import check_executor_args

    check_executor_args(args.executor, args.workers, args.address)
    from .suite import load_suite

    suite = load_suite(args.suite)
    cells = suite.expand(args.seeds)
    out = Path(args.out or Path("runs") / suite.name)
    if args.dry_run:
        from .dry_run import dry_run_summary, format_dry_run
        from .kinds import kind_cells, kind_rows

        rows = [{"run_id": c.run_id, "dataset": c.dataset, "noise": c.noise, "method": c.method, "seed": c.seed,
                 "protocol": c.protocol["name"]} for c in cells]
        # selection (Table 4) and runtime (Tables 6/7) cells; runtime cells are those of the device's variant
        dry_device = resolve_device("auto") if args.device == "auto" else args.device
        selection, runtime = kind_cells(suite, args.seeds, dry_device)
        summary = dry_run_summary(cells, args.data_root, selection=selection, runtime=runtime)
        if args.json:
            print(json.dumps({"suite": suite.name, "out": str(out), **summary, "device": dry_device,
                              "cells": [{"kind": "train", **r} for r in rows] + kind_rows(selection, runtime)}, indent=2))
        else:
            from tabulate import tabulate

            for table in (rows, *([r for r in kind_rows(selection, runtime) if r["kind"] == k] for k in ("selection", "runtime"))):
                if table:
                    print(tabulate(table, headers="keys") + "\n")
            print(f"{format_dry_run(summary)}\nResults would go to {out}")
        return 0
    from .report import write_reports
    from .executors import run_suite_with

    device = resolve_device(args.device)
    if args.threads is not None:
        if args.threads < 1:
            raise EchobenchError(f"--threads must be at least 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    # The run claims OUT and records this command first. Selection cells (Table 4) go to the executor with
    # the training cells; runtime cells (Tables 6/7) run last, here, with the device to themselves.
    from .kinds import prepare_run, run_kind_cells

    selection, runtime = prepare_run(suite, out, device=device, seeds=args.seeds, argv=args.argv,
                                     train_cells=len(cells))
    outcome = run_suite_with(args.executor, suite, out, device=args.device, workers=args.workers, address=args.address,
                             threads=args.threads, seeds=args.seeds, force=args.force, data_root=args.data_root,
                             progress=not args.no_progress, cache_dir=args.cache_dir, selection=selection)
    timed = run_kind_cells(runtime, suite.name, out, device=device, force=args.force, data_root=args.data_root,
                           cache_dir=args.cache_dir, progress=not args.no_progress)
    outcome = outcome.absorb(timed)
    cells = outcome.cells
    device = outcome.device or device  # e.g. "2 workers on cpu, 1 thread(s) each"
    wall = time.perf_counter() - started
    failed = len(outcome.failed)
    doc = write_reports(out, args.metric) if len(outcome.failed) < len(cells) else None
    summary = {"suite": suite.name, "out": str(out), "device": device, "cells": len(cells),
               "computed": len(outcome.computed), "skipped": len(outcome.skipped), "busy": len(outcome.busy),
               "failed": outcome.failed, "wall_s": round(wall, 1)}
    if args.json:
        print(json.dumps({**summary, "report": {k: v for k, v in (doc or {}).items() if k != "markdown"}}, indent=2))
    else:
        if doc:
            print(doc["markdown"])
        print(f"{len(cells)} cells: {len(outcome.computed)} computed, {len(outcome.skipped)} already done, "
              f"{len(outcome.busy)} busy in another runner, {failed} failed; {wall:.0f} s on {device}. "
              + (f"Results and {', '.join(doc['written'])} in {out}/ (start at index.md)" if doc else
                 f"Results in {out}/ (no report: every cell failed)"))
        for rid, msg in outcome.failed.items():
            print(f"  failed {rid}: {msg} (traceback in {out}/cells/{rid}/error.json)", file=sys.stderr)
    return 1 if failed else 0


def cmd_ls(args) -> int:
    from .datasets import DATASETS
    from .echomod import ENGINES
    from .features import EXTRACTORS
    from .methods import METHODS
    from .models import MODELS
    from .noise import NOISES
    from .protocols import PROTOCOLS
    from .runtime_report import GPUS
    from .selectors import SELECTORS
    from .suite import SUITES, load_suite

    registry = {"datasets": DATASETS, "noises": NOISES, "methods": METHODS, "selectors": SELECTORS,
                "suites": SUITES, "protocols": PROTOCOLS, "models": MODELS, "engines": ENGINES,
                "extractors": EXTRACTORS, "gpus": GPUS}[args.what]
    names = registry.names()
    details = {n: load_suite(n).description for n in names} if args.what == "suites" else {}
    if args.what == "gpus":
        details = {n: f"{GPUS.get(n).peak_tflops:g} TFLOP/s dense {GPUS.get(n).precision}: {GPUS.get(n).name}" for n in names}
    if args.json:
        print(json.dumps([{"name": n, **({"description": details[n]} if n in details else {})} for n in names], indent=2))
    else:
        for n in names:
            print(f"{n:12s} {details.get(n, '')}".rstrip())
    return 0


def cmd_report(args) -> int:
    if args.runtime is not None:
        return _runtime_report(args)
    if args.dir is None:
        raise EchobenchError("report needs DIR, a results directory written by `echobench run` "
                             "(or --runtime [MEASUREMENT.json ...] for the EchoMod runtime report)")
    if args.out is not None:
        raise EchobenchError("--out goes with --runtime; the accuracy report is written into DIR itself")
    from .report import write_reports

    doc = write_reports(args.dir, args.metric)
    if args.json:
        print(json.dumps({k: v for k, v in doc.items() if k != "markdown"}, indent=2))
    else:
        print(doc["markdown"])
        print(f"cells: {doc['cells']}; wrote {', '.join(doc['written'])} in {args.dir}/ (start at index.md)")
    return 0


def _runtime_report(args) -> int:
    from .runtime_report import load_measurements, write_runtime_report

    if args.dir is not None:
        raise EchobenchError(f"--runtime takes measurement files, not a results directory ({args.dir!r}); "
                             f"list the files after it: `echobench report --runtime {args.dir}`")
    out = Path(args.out or Path("runs") / "runtime")
    measurements = load_measurements(args.runtime)
    doc = write_runtime_report(out, measurements or None)
    if args.json:
        print(json.dumps({k: v for k, v in doc.items() if k != "markdown"}, indent=2))
    else:
        print(doc["markdown"])
        print(f"wrote runtime.md and runtime.json in {out}/")
    return 0


def cmd_noise(args) -> int:
    from .noise_report import noise_report

    doc = noise_report(args.dataset, args.kind, args.rate, args.seed, labels_file=args.labels_file, data_root=args.data_root)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        from .noise_report import format_noise_report

        print(format_noise_report(doc))
    return 0


def cmd_bench(args) -> int:
    if args.bench_what == "engines":
        return _bench_engines(args)
    if args.bench_what == "echoselect":
        return _bench_echoselect(args)
    if args.bench_what == "train":
        return _bench_train(args)
    if args.bench_what == "approx":
        return _bench_approx(args)
    from .bench import bench_knn, format_bench_knn

    if min(args.n, args.dim, args.k, args.repeats) < 1 or args.k >= args.n:
        raise EchobenchError("--n, --dim, --k and --repeats must be positive and --k smaller than --n")
    doc = bench_knn(n=args.n, dim=args.dim, k=args.k, backends=tuple(args.backends), repeats=args.repeats,
                    seed=args.seed, threads=args.threads)
    print(json.dumps(doc, indent=2) if args.json else format_bench_knn(doc))
    return 1 if any("error" in r for r in doc["backends"].values()) else 0


def _key_values(items: list[str], what: str) -> dict:
    """KEY=VALUE strings → a dict; values parsed as YAML scalars (numbers, booleans, strings)."""
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise EchobenchError(f"{what} must look like KEY=VALUE, got {item!r}")
        out[key.strip()] = yaml.safe_load(value) if value else ""
    return out


def _setting(args):
    from .echoalign import EchoAlignParams
    from .environment import resolve_device
    from .selection_report import setting_task

    options = _key_values(args.dataset_option, "--dataset-option")
    if args.dataset == "shapes" and not options:
        options = {"n_train": 4000, "n_test": 1000}
    if args.batch_size < 1:
        raise EchobenchError(f"--batch-size must be at least 1, got {args.batch_size}")
    task, clean = setting_task(args.dataset, options, args.noise, args.seed, protocol=args.protocol,
                               device=resolve_device(args.device), data_root=args.data_root, cache_dir=args.cache_dir)
    extra = {}
    if getattr(args, "extractor", None) is not None:
        extra = {"extractor": args.extractor, "extractor_options": _key_values(args.extractor_option, "--extractor-option"),
                 "tau": args.tau, "strict": args.strict}
    params = EchoAlignParams(engine=args.engine, engine_options=_key_values(args.engine_option, "--engine-option"),
                             base_seed=args.base_seed, generation_batch_size=args.batch_size, **extra)
    return task, clean, params


def cmd_modify(args) -> int:
    from .selection_report import modify_setting, parse_shard

    shard = parse_shard(args.shard)
    task, _, params = _setting(args)
    doc = modify_setting(task, params, shard=shard, progress=not args.no_progress)
    doc = {"dataset": args.dataset, "noise": args.noise, "seed": args.seed, **doc}
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        rate = f", {doc['new_per_second']} new pairs/s" if doc["new_per_second"] else ""
        print(f"EchoMod {args.dataset} {args.noise} seed {args.seed} (shard {doc['shard']}): {doc['pairs']} pairs, "
              f"{doc['new']} new, {doc['from_cache']} from the cache, in {doc['seconds']:.1f} s{rate}. Cache: {doc['cache_dir']}")
    return 0


def cmd_select(args) -> int:
    from .echoselect import check_tau
    from .selection_report import dump, format_select_report, select_report
    from .selectors import SELECTORS

    if args.tau is not None:
        check_tau(args.tau)
    for name in args.peers:
        SELECTORS.get(name)  # unknown names fail before any work
    out = Path(args.out or Path("runs") / "select" / f"{args.dataset}-{args.noise.replace(':', '')}-seed{args.seed}")
    task, clean, params = _setting(args)
    doc = select_report(task, clean, params, peers=args.peers, out_dir=out, progress=not args.no_progress)
    print(dump(doc) if args.json else format_select_report(doc))
    return 0


def _bench_engines(args) -> int:
    from .bench_engines import bench_engines, check_rows, failed_rows, format_bench_engines
    from .environment import resolve_device
    from .store import atomic_write_json

    if min(args.batch_sizes + [args.steps, args.repeats]) < 1 or (args.resolution is not None and args.resolution < 8):
        raise EchobenchError("--batch-sizes, --steps and --repeats must be positive and --resolution at least 8")
    if args.config == "sd15" and not args.random_init:
        print("echobench: sd15 with real weights loads the public checkpoints (download on first use)", file=sys.stderr)
    if args.threads is not None:
        import torch

        torch.set_num_threads(max(1, args.threads))
    check_rows(tuple(args.engines), resolve_device(args.device))
    doc = bench_engines(config=args.config, random_init=args.random_init or args.config == "tiny",
                        engines=tuple(args.engines), batch_sizes=tuple(sorted(set(args.batch_sizes))),
                        resolution=args.resolution, steps=args.steps, repeats=args.repeats,
                        device=resolve_device(args.device), seed=args.seed, vae=args.vae,
                        progress=None if not args.out else (lambda d: atomic_write_json(Path(args.out), d)))
    print(json.dumps(doc, indent=2) if args.json else format_bench_engines(doc))
    failed = failed_rows(doc)
    for line in failed:
        print(f"echobench: bench engines: {line}", file=sys.stderr)
    return 1 if failed else 0


def _bench_approx(args) -> int:
    from .bench_approx import bench_approx, format_bench_approx, parse_variant
    from .echoselect import check_tau
    from .store import atomic_write_json

    if args.tau is not None:
        check_tau(args.tau)
    if not args.variant:
        raise EchobenchError("give at least one approximate variant, e.g. --variant steps=10")
    for text in args.variant:
        parse_variant(text)  # a malformed variant fails before any work
    if args.threads is not None:
        import torch

        torch.set_num_threads(max(1, args.threads))
    task, clean, params = _setting(args)
    doc = bench_approx(task, clean, params, args.variant, cache_dir=args.cache_dir, progress=not args.no_progress,
                       grid=args.grid)
    if args.out:
        atomic_write_json(Path(args.out), doc)
    print(json.dumps(doc, indent=2, default=float) if args.json else format_bench_approx(doc))
    return 0


def _bench_echoselect(args) -> int:
    from .bench_echoselect import bench_echoselect, format_bench_echoselect
    from .environment import resolve_device

    if min(args.n, args.size, args.batch_size) < 1:
        raise EchobenchError("--n, --size and --batch-size must be positive")
    if args.threads is not None:
        import torch

        torch.set_num_threads(max(1, args.threads))
    doc = bench_echoselect(n=args.n, size=args.size, pretrained=args.pretrained, batch_size=args.batch_size,
                           device=resolve_device(args.device), seed=args.seed)
    print(json.dumps(doc, indent=2) if args.json else format_bench_echoselect(doc))
    return 0


def _bench_train(args) -> int:
    from .bench_train import bench_train, format_bench_train
    from .environment import resolve_device

    if args.threads is not None:
        if args.threads < 1:
            raise EchobenchError(f"--threads must be at least 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    doc = bench_train(n=args.n, device=resolve_device(args.device), warmup_steps=args.warmup_steps,
                      batch_size=args.batch_size, seed=args.seed)
    print(json.dumps(doc, indent=2) if args.json else format_bench_train(doc))
    return 0


def cmd_train_echomod(args) -> int:
    from .echomod_training import TrainingConfig, train_shapes_echomod

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    config = TrainingConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainingConfig)})
    log = (lambda _: None) if args.json else print
    summary = train_shapes_echomod(args.out, config, init_from=args.init_from, progress=not args.no_progress, log=log)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        final = ", ".join(f"{stage} {curve[-1][1]:.4f}" for stage, curve in summary["losses"].items() if curve)
        print(f"trained in {summary['seconds']:.0f} s; final losses: {final}. Saved under {args.out} "
              f"(base_model={args.out}/stable-diffusion, controlnet={args.out}/controlnet, vae={args.out}/tiny-vae)")
    return 0


def cmd_eval_echomod(args) -> int:
    from .prompt_accuracy import folder_prompt_accuracy, format_prompt_accuracy

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    doc = folder_prompt_accuracy(args.folder, n=args.n, world_seed=args.world_seed, timesteps=args.timesteps,
                                 seed=args.seed, progress=True)
    print(json.dumps(doc, indent=2) if args.json else format_prompt_accuracy(doc))
    return 0


def cmd_doctor(args) -> int:
    from .doctor import doctor_report, format_doctor

    doc = doctor_report()
    print(json.dumps(doc, indent=2) if args.json else format_doctor(doc))
    return 0


COMMANDS = {"run": cmd_run, "ls": cmd_ls, "report": cmd_report, "noise": cmd_noise, "bench": cmd_bench,
            "modify": cmd_modify, "select": cmd_select, "train-echomod": cmd_train_echomod,
            "eval-echomod": cmd_eval_echomod, "doctor": cmd_doctor}


if __name__ == "__main__":
    sys.exit(main())
