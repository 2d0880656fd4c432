"""`echobench bench …`: the micro-benchmarks (one module each in `echobench.bench`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from echobench.cli.options import add_include, add_device, add_json, add_setting, add_threads, context, seed_arg, setting
from echobench.checks import check_memory
from echobench.errors import EchobenchError

EXAMPLES = """examples:
  echobench bench knn                             # 50,000 × 512 random features, k = 10, faiss vs torch
  echobench bench knn --n 2000 --dim 32 --json
  echobench bench echoselect --n 128              # batched EchoSelect vs the released per-image loop
  echobench bench train --device cuda             # one epoch of the paper's ResNet-18 on 50,000 random CIFAR images
  echobench bench train --n 512 --device cpu --json
  echobench bench train --device cuda --concurrent 2 4 8 --compile --json   # packed cells vs one cell alone
  echobench bench approx shapes --noise instance:0.3 --engine eager --engine-option model=tiny --variant steps=10"""


def add_parser(add) -> None:
    bench = add("bench", "Micro-benchmarks of echobench's building blocks (kNN backends, EchoSelect, EchoMod's "
                         "engines and approximate settings, a training epoch: time and peak memory).", EXAMPLES,
                cmd_bench)
    bench_sub = bench.add_subparsers(dest="bench_what", metavar="WHAT", required=True)
    knn = bench_sub.add_parser("knn", help="faiss vs torch cosine kNN: seconds, peak MiB, agreement")
    knn.add_argument("--n", type=int, default=50_000, help="points (default: 50000)")
    knn.add_argument("--dim", type=int, default=512, help="feature dimension (default: 512)")
    knn.add_argument("--k", type=int, default=10, help="neighbours per point (default: 10)")
    knn.add_argument("--backends", nargs="+", default=["faiss", "torch"], choices=["faiss", "torch"])
    knn.add_argument("--repeats", type=int, default=1)
    knn.add_argument("--seed", type=seed_arg, default=0)
    add_threads(knn, "torch/faiss CPU threads in each child (default: their own)")
    add_json(knn, "print the JSON result instead of the table")

    eng = bench_sub.add_parser("engines", help="EchoMod engines vs diffusers' stock ControlNet pipeline: images/s, "
                                               "s/step, peak memory, parity")
    eng.add_argument("--config", default="tiny", choices=["tiny", "sd15"], help="model configuration (default: tiny)")
    eng.add_argument("--random-init", action="store_true",
                     help="random weights (no download; same compute). tiny is always random")
    eng.add_argument("--engines", nargs="+", default=["eager", "compile", "onnxruntime"],
                     help="engines to time (default: eager compile onnxruntime); NAME[option=value,...] sets "
                          "engine options (`echobench ls engines`), e.g. 'compile[compile_vae=true]', so that settings of "
                          "one engine are compared in one run")
    eng.add_argument("--batch-sizes", type=int, nargs="+", default=[4], help="images per batch (default: 4)")
    eng.add_argument("--resolution", type=int, help="generation resolution (default: 32 for tiny, 512 for sd15)")
    eng.add_argument("--steps", type=int, default=20, help="denoising steps (default: 20)")
    eng.add_argument("--vae", default="", help="an approximate tiny decoder for every row (an AutoencoderTiny hub id "
                                               "or directory, e.g. madebyollin/taesd); default: the checkpoint's VAE")
    eng.add_argument("--repeats", type=int, default=1, help="timed runs after the warm-up; the fastest counts")
    add_device(eng)
    add_include(eng)  # a plugin's engine rows: --engines NAME after --include its file
    add_threads(eng)
    eng.add_argument("--seed", type=seed_arg, default=0)
    add_json(eng)
    eng.add_argument("--out", help="also write the JSON document to this file, rewritten (atomically) after every "
                                   "row, so a run cut short keeps what it measured (\"complete\": false)")

    sel = bench_sub.add_parser("echoselect", help="EchoSelect (batched) vs the released code's per-image CLIP loop")
    sel.add_argument("--n", type=int, default=128, help="image pairs (default: 128)")
    sel.add_argument("--size", type=int, default=32, help="image side in pixels (default: 32, CIFAR)")
    sel.add_argument("--batch-size", type=int, default=64)
    sel.add_argument("--pretrained", default="none", help="open_clip tag; none = random weights, same compute (default)")
    add_device(sel)
    add_threads(sel)
    sel.add_argument("--seed", type=seed_arg, default=0)
    add_json(sel)

    train = bench_sub.add_parser("train", help="one epoch of the paper protocol's ResNet-18 through the trainer: "
                                               "images/s, seconds per epoch, peak memory")
    train.add_argument("--n", type=int, default=50_000, help="random 32×32×3 uint8 training images (default: 50000)")
    train.add_argument("--batch-size", type=int, help="images per step (default: the paper protocol's 128)")
    train.add_argument("--warmup-steps", type=int, default=3,
                       help="untimed steps first, plus one of the last partial batch's size (default: 3)")
    train.add_argument("--compile", action="store_true",
                       help="the paper-compiled protocol: the step compiled (torch.compile; CUDA graphs on GPU), the "
                            "last partial batch dropped; compilation happens in the warm-up")
    train.add_argument("--concurrent", type=int, nargs="+", metavar="K",
                       help="also run K cells at once (one process each, as run --cells-per-gpu K), for each K "
                            "given: aggregate images/s against one uncompiled cell alone, peak memory per cell")
    add_device(train)
    add_threads(train, "torch CPU threads (with --concurrent: per cell; default: the cores divided among the cells)")
    train.add_argument("--seed", type=seed_arg, default=0, help="seed of the random images, labels and weights (default: 0)")
    add_json(train, "print the JSON result instead of the text")

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
    add_setting(approx)
    approx.add_argument("--variant", action="append", default=[], metavar="KEY=VALUE[,KEY=VALUE]",
                        help="an approximate setting: engine options overriding the exact row's, e.g. steps=10, "
                             "resolution=16, vae=PATH (repeatable; one row each)")
    approx.add_argument("--extractor", default="", help="feature extractor (default: shapes-hog for shapes, open_clip elsewhere)")
    approx.add_argument("--extractor-option", action="append", default=[], metavar="KEY=VALUE")
    approx.add_argument("--tau", type=float, help="EchoSelect's threshold for every row (default: the extractor's)")
    approx.add_argument("--strict", action="store_true", help="keep S > τ instead of S ≥ τ")
    add_threads(approx)
    approx.add_argument("--out", help="also write the JSON document to this file (atomically)")
    approx.add_argument("--grid", help="a PNG of the first samples with a wrong label: originals, then one row per variant")


def cmd_bench(args) -> int:
    if args.bench_what == "engines":
        return _bench_engines(args)
    if args.bench_what == "echoselect":
        return _bench_echoselect(args)
    if args.bench_what == "train":
        return _bench_train(args)
    if args.bench_what == "approx":
        return _bench_approx(args)
    from echobench.bench.knn import bench_knn, format_bench_knn

    if min(args.n, args.dim, args.k, args.repeats) < 1 or args.k >= args.n:
        raise EchobenchError("--n, --dim, --k and --repeats must be positive and --k smaller than --n")
    check_memory(args.n * (args.dim * 4 + args.k * 12), f"bench knn --n {args.n} --dim {args.dim} --k {args.k}")
    doc = bench_knn(n=args.n, dim=args.dim, k=args.k, backends=tuple(args.backends), repeats=args.repeats,
                    seed=args.seed, threads=context(args).threads)
    print(json.dumps(doc, indent=2) if args.json else format_bench_knn(doc))
    return 1 if any("error" in r for r in doc["backends"].values()) else 0


def _bench_engines(args) -> int:
    from echobench.bench.engines import bench_engines, check_rows, failed_rows, format_bench_engines
    from echobench.files import atomic_write_json

    if min(args.batch_sizes + [args.steps, args.repeats]) < 1 or (args.resolution is not None and args.resolution < 8):
        raise EchobenchError("--batch-sizes, --steps and --repeats must be positive and --resolution at least 8")
    # a float32 image and its control image per batch entry, at least
    side = args.resolution or (512 if args.config == "sd15" else 32)
    check_memory(max(args.batch_sizes) * 3 * side * side * 4 * 2,
                 f"bench engines --batch-sizes {max(args.batch_sizes)} at resolution {side}")
    if args.config == "sd15" and not args.random_init:
        print("echobench: sd15 with real weights loads the public checkpoints (download on first use)", file=sys.stderr)
    ctx = context(args)
    ctx.apply_threads()
    check_rows(tuple(args.engines), ctx.resolved_device)
    doc = bench_engines(config=args.config, random_init=args.random_init or args.config == "tiny",
                        engines=tuple(args.engines), batch_sizes=tuple(sorted(set(args.batch_sizes))),
                        resolution=args.resolution, steps=args.steps, repeats=args.repeats,
                        device=ctx.resolved_device, seed=args.seed, vae=args.vae,
                        progress=None if not args.out else (lambda d: atomic_write_json(Path(args.out), d)))
    print(json.dumps(doc, indent=2) if args.json else format_bench_engines(doc))
    failed = failed_rows(doc)
    for line in failed:
        print(f"echobench: bench engines: {line}", file=sys.stderr)
    return 1 if failed else 0


def _bench_approx(args) -> int:
    from echobench.bench.approx import bench_approx, format_bench_approx, parse_variant
    from echobench.echoalign.echoselect import check_tau
    from echobench.files import atomic_write_json

    if args.tau is not None:
        check_tau(args.tau)
    if not args.variant:
        raise EchobenchError("give at least one approximate variant, e.g. --variant steps=10")
    for text in args.variant:
        parse_variant(text)  # a malformed variant fails before any work
    ctx = context(args)
    ctx.apply_threads()
    task, clean, params = setting(args)
    doc = bench_approx(task, clean, params, args.variant, cache_dir=task.cache_dir, progress=not args.no_progress,
                       grid=args.grid)
    if args.out:
        atomic_write_json(Path(args.out), doc)
    print(json.dumps(doc, indent=2, default=float) if args.json else format_bench_approx(doc))
    return 0


def _bench_echoselect(args) -> int:
    from echobench.bench.echoselect import bench_echoselect, format_bench_echoselect

    if min(args.n, args.size, args.batch_size) < 1:
        raise EchobenchError("--n, --size and --batch-size must be positive")
    check_memory(args.n * args.size * args.size * 3 * 2, f"bench echoselect --n {args.n} --size {args.size}")  # uint8 pairs
    ctx = context(args)
    ctx.apply_threads()
    doc = bench_echoselect(n=args.n, size=args.size, pretrained=args.pretrained, batch_size=args.batch_size,
                           device=ctx.resolved_device, seed=args.seed)
    print(json.dumps(doc, indent=2) if args.json else format_bench_echoselect(doc))
    return 0


def _bench_train(args) -> int:
    from echobench.bench.train import bench_train, format_bench_train

    cells = max(args.concurrent or [1])
    check_memory(max(args.n, 0) * 32 * 32 * 3 * cells, f"bench train --n {args.n}"
                 + (f" --concurrent {cells}" if args.concurrent else ""))  # the uint8 training images of each cell
    ctx = context(args)
    if args.concurrent:
        from echobench.bench.train import bench_train_concurrent, format_bench_train_concurrent

        doc = bench_train_concurrent(concurrent=tuple(args.concurrent), compile=args.compile, n=args.n,
                                     device=ctx.resolved_device, warmup_steps=args.warmup_steps,
                                     batch_size=args.batch_size, seed=args.seed, threads=ctx.threads)
        print(json.dumps(doc, indent=2) if args.json else format_bench_train_concurrent(doc))
        return 1 if any("error" in r for r in doc["rows"]) else 0
    ctx.apply_threads()
    doc = bench_train(n=args.n, device=ctx.resolved_device, warmup_steps=args.warmup_steps,
                      batch_size=args.batch_size, seed=args.seed, compile=args.compile)
    print(json.dumps(doc, indent=2) if args.json else format_bench_train(doc))
    return 0
