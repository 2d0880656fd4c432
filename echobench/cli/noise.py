"""`echobench noise`: noisy labels of a dataset, their realized rate and confusion."""

from __future__ import annotations

import json

from echobench.cli.options import add_include, add_json, add_paths, context, seed_arg

EXAMPLES = """examples:
  echobench noise shapes --kind instance --rate 0.3 --seed 1
  echobench noise cifar10 --kind pairflip --rate 0.45 --seed 2 --json
  echobench noise cifar10n --kind worst --labels-file CIFAR-10_human.pt"""


def add_parser(add) -> None:
    noise = add("noise", "Generate noisy labels for a dataset and report the realized rate and confusion.", EXAMPLES,
                cmd_noise)
    noise.add_argument("dataset")
    noise.add_argument("--kind", required=True, help="symmetric, pairflip, instance, human; for cifar10n/cifar100n also a label set (aggre, random1, worst, noisy)")
    noise.add_argument("--rate", type=float, default=0.0, help="nominal noise rate in [0, 1)")
    noise.add_argument("--seed", type=seed_arg, default=1)
    noise.add_argument("--labels-file", help="a local CIFAR-N label file (CIFAR-10_human.pt / CIFAR-100_human.pt)")
    add_paths(noise, cache=False)
    add_json(noise)
    add_include(noise)


def cmd_noise(args) -> int:
    from echobench.data.noise_report import format_noise_report, noise_report

    ctx = context(args)  # before the names are read: --include may add the dataset or the noise kind
    doc = noise_report(args.dataset, args.kind, args.rate, args.seed, labels_file=args.labels_file,
                       data_root=ctx.data_root)
    print(json.dumps(doc, indent=2) if args.json else format_noise_report(doc))
    return 0
