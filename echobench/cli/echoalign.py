"""EchoMod and EchoSelect on their own: `modify`, `select`, `train-echomod` and `eval-echomod`."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from echobench.checks import check_output_folder
from echobench.cli.options import add_json, add_progress, add_setting, add_threads, context, seed_arg, setting

EXAMPLES = {
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
  echobench train-echomod --out runs/echomod-shapes            # again after Ctrl-C: resumes from runs/echomod-shapes.checkpoint
  echobench select shapes --noise instance:0.3 --dataset-option n_train=1000 --engine eager       --engine-option model=sd15 --engine-option resolution=32       --engine-option base_model=runs/echomod-shapes/stable-diffusion --engine-option controlnet=runs/echomod-shapes/controlnet""",
    "eval-echomod": """examples:
  echobench eval-echomod runs/echomod-shapes                  # does the trained UNet draw the class its prompt names?
  echobench eval-echomod runs/echomod-shapes --n 1000 --timesteps 200 400 600 800 --json""",
}


def add_parser(add) -> None:
    modify = add("modify", "Run EchoMod alone: generate (or find cached) the modified training images of a setting.",
                 EXAMPLES["modify"], cmd_modify)
    add_setting(modify)
    modify.add_argument("--shard", help="i/n: only the cache shards with number %% n == i (split generation over n workers)")

    select = add("select", "Run EchoSelect alone and measure it: precision, recall, AUROC, KS, Table 4 view, τ sweep, "
                         "histograms.", EXAMPLES["select"], cmd_select)
    add_setting(select)
    select.add_argument("--extractor", default="", help="feature extractor (default: shapes-hog for shapes, open_clip elsewhere)")
    select.add_argument("--extractor-option", action="append", default=[], metavar="KEY=VALUE",
                        help="an extractor option, e.g. pretrained=openai")
    select.add_argument("--tau", type=float, help="threshold in [-1, 1] (default: 0.4 at 30%% noise, 0.52 at 45-50%%)")
    select.add_argument("--strict", action="store_true", help="keep S > τ (the released code) instead of S ≥ τ")
    select.add_argument("--peers", nargs="*", default=[], help="peer selectors for the Table 4 view (`echobench ls selectors`)")
    select.add_argument("--out", help="directory for select.json, select.md and the PNG figures (default: runs/select/DATASET-NOISE-seedS)")

    trainer = add("train-echomod", "Train EchoMod's diffusion model for the embedded shapes world: a small SD + canny "
                                   "ControlNet and a tiny VAE, on an independent shapes world (CPU, no download).",
                  EXAMPLES["train-echomod"], cmd_train_echomod)
    trainer.add_argument("--out", required=True, help="new folder for stable-diffusion/, controlnet/, tiny-vae/, training.json")
    trainer.add_argument("--init-from", help="a folder this command wrote: continue training its models (stages with "
                                             "0 steps keep theirs; --vae-steps 0 keeps the latent scaling)")
    from echobench.echoalign.generator_training import TrainingConfig

    for field in dataclasses.fields(TrainingConfig):
        flag = "--" + field.name.replace("_", "-")
        kind = seed_arg if field.name.endswith("seed") else type(field.default)  # seeds are non-negative
        trainer.add_argument(flag, type=kind, default=field.default, help=f"(default: {field.default})")
    add_threads(trainer, "torch CPU threads (the losses depend on it in the last bits)")
    add_json(trainer, "print training.json instead of a summary")
    add_progress(trainer)

    evaluate = add("eval-echomod", "Prompt accuracy of a model `echobench train-echomod` wrote: classify held-out shapes "
                                   "images by which class prompt lets its UNet predict the noise best (a diffusion "
                                   "classifier; chance is one in ten).", EXAMPLES["eval-echomod"], cmd_eval_echomod)
    from echobench.echoalign.prompt_accuracy import DEFAULT_N, DEFAULT_TIMESTEPS, DEFAULT_WORLD_SEED

    evaluate.add_argument("folder", help="a folder `echobench train-echomod` wrote")
    evaluate.add_argument("--n", type=int, default=DEFAULT_N, help=f"held-out images (default: {DEFAULT_N})")
    evaluate.add_argument("--world-seed", type=seed_arg, default=DEFAULT_WORLD_SEED,
                          help=f"the held-out shapes world (default: {DEFAULT_WORLD_SEED}; training uses 777, runs 0)")
    evaluate.add_argument("--timesteps", type=int, nargs="+", default=list(DEFAULT_TIMESTEPS),
                          help="noise levels of SD's 1000 whose ε errors are summed (default: "
                               f"{' '.join(map(str, DEFAULT_TIMESTEPS))})")
    evaluate.add_argument("--seed", type=seed_arg, default=0, help="seed of the noise (default: 0)")
    add_threads(evaluate)
    add_json(evaluate)


def cmd_modify(args) -> int:
    from echobench.harness.setting import modify_setting, parse_shard

    shard = parse_shard(args.shard)
    task, _, params = setting(args)
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
    from echobench.echoalign.echoselect import check_tau
    from echobench.harness.setting import dump, format_select_report, select_report
    from echobench.training.selectors import SELECTORS

    if args.tau is not None:
        check_tau(args.tau)
    for name in args.peers:
        SELECTORS.get(name)  # unknown names fail before any work
    out = Path(args.out or Path("runs") / "select" / f"{args.dataset}-{args.noise.replace(':', '')}-seed{args.seed}")
    check_output_folder(out, "--out")  # before EchoMod runs; select writes only its own four files there
    task, clean, params = setting(args)
    doc = select_report(task, clean, params, peers=args.peers, out_dir=out, progress=not args.no_progress)
    print(dump(doc) if args.json else format_select_report(doc))
    return 0


def cmd_train_echomod(args) -> int:
    from echobench.echoalign.generator_training import TrainingConfig, train_shapes_echomod

    context(args).apply_threads()
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
    from echobench.echoalign.prompt_accuracy import folder_prompt_accuracy, format_prompt_accuracy

    context(args).apply_threads()
    doc = folder_prompt_accuracy(args.folder, n=args.n, world_seed=args.world_seed, timesteps=args.timesteps,
                                 seed=args.seed, progress=True)
    print(json.dumps(doc, indent=2) if args.json else format_prompt_accuracy(doc))
    return 0
