"""Options shared by several commands, declared once, and the one place they become a `RunContext`."""

from __future__ import annotations

import argparse

from echobench.checks import check_seed
from echobench.errors import EchobenchError
from echobench.harness.context import RunContext


def seed_arg(text: str) -> int:
    """The argparse `type` of every seed option: a non-negative integer (numpy takes no other)."""
    try:
        return check_seed(int(text))
    except (ValueError, EchobenchError):
        raise argparse.ArgumentTypeError(f"a seed must be a non-negative integer, got {text!r}") from None


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")


def add_threads(parser: argparse.ArgumentParser, help_text: str = "torch CPU threads (default: torch's choice)") -> None:
    parser.add_argument("--threads", type=int, help=help_text)


def add_paths(parser: argparse.ArgumentParser, cache: bool = True) -> None:
    parser.add_argument("--data-root", help="dataset cache directory (default: $ECHOBENCH_DATA or ~/.cache/echobench)")
    if cache:
        parser.add_argument("--cache-dir",
                            help="EchoMod's cache of modified images (default: $ECHOBENCH_CACHE or DATA_ROOT/echomod)")


def add_json(parser: argparse.ArgumentParser, help_text: str = "print JSON instead of text") -> None:
    parser.add_argument("--json", action="store_true", help=help_text)


def add_progress(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_include(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--include", action="append", default=[], metavar="PATH",
                        help="import a plugin: a .py file or a folder of them whose register_method, register_dataset, "
                             "register_noise, register_selector or register_engine decorators add names "
                             "(repeatable; docs/plugin-api.md)")


def context(args: argparse.Namespace) -> RunContext:
    """The run context of a parsed command line (options a command does not have take their defaults);
    the plugins of `--include` are imported here, so every name a command reads afterwards can be theirs."""
    ctx = RunContext.resolve(device=getattr(args, "device", "auto"), threads=getattr(args, "threads", None),
                             data_root=getattr(args, "data_root", None), cache_dir=getattr(args, "cache_dir", None),
                             progress=not getattr(args, "no_progress", False), force=getattr(args, "force", False),
                             includes=getattr(args, "include", None) or ())
    ctx.load_plugins()
    return ctx


def key_values(items: list[str], what: str) -> dict:
    """KEY=VALUE strings → a dict; values parsed as YAML scalars (numbers, booleans, strings)."""
    from echobench.yamlsafe import load_yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise EchobenchError(f"{what} must look like KEY=VALUE, got {item!r}")
        out[key.strip()] = load_yaml(value, f"{what} {item!r}") if value else ""
    return out


def add_setting(cmd: argparse.ArgumentParser) -> None:
    """The options that name one setting (dataset × noise × seed) and EchoMod's generator for it."""
    cmd.add_argument("dataset", help="a registered dataset (shapes, cifar10, cifar100, cifar10n, cifar100n)")
    cmd.add_argument("--noise", required=True, help="KIND:RATE (symmetric:0.5, pairflip:0.45, instance:0.3) or human:SET")
    cmd.add_argument("--seed", type=seed_arg, default=1, help="the run seed: noisy labels and split (default: 1)")
    cmd.add_argument("--dataset-option", action="append", default=[], metavar="KEY=VALUE",
                     help="a dataset loader option, e.g. n_train=4000 (default for shapes: the demo's n_train=4000 n_test=1000)")
    cmd.add_argument("--protocol", default="demo", help="the protocol whose validation split is used (default: demo)")
    cmd.add_argument("--engine", default="", help="EchoMod engine (default: procedural for shapes, eager elsewhere)")
    cmd.add_argument("--engine-option", action="append", default=[], metavar="KEY=VALUE",
                     help="an engine option, e.g. base_model=/path/to/sd15 or steps=20")
    cmd.add_argument("--base-seed", type=seed_arg, default=0, help="EchoMod's own seed (part of the cache key; default 0)")
    cmd.add_argument("--batch-size", type=int, default=64, help="images per generation batch (default: 64)")
    add_device(cmd)
    add_paths(cmd)
    add_json(cmd)
    add_include(cmd)
    cmd.add_argument("--no-progress", action="store_true", help="no progress bar")


def setting(args: argparse.Namespace):
    """(task, clean training labels, EchoAlignParams) of the setting `add_setting`'s options name."""
    from echobench.echoalign.methods import EchoAlignParams
    from echobench.harness.setting import setting_task

    options = key_values(args.dataset_option, "--dataset-option")
    if args.dataset == "shapes" and not options:
        options = {"n_train": 4000, "n_test": 1000}
    if args.batch_size < 1:
        raise EchobenchError(f"--batch-size must be at least 1, got {args.batch_size}")
    ctx = context(args)
    ctx.apply_threads()
    task, clean = setting_task(args.dataset, options, args.noise, args.seed, protocol=args.protocol,
                               ctx=ctx.replace(device=ctx.resolved_device))
    extra = {}
    if getattr(args, "extractor", None) is not None:
        extra = {"extractor": args.extractor, "extractor_options": key_values(args.extractor_option, "--extractor-option"),
                 "tau": args.tau, "strict": args.strict}
    params = EchoAlignParams(engine=args.engine, engine_options=key_values(args.engine_option, "--engine-option"),
                             base_seed=args.base_seed, generation_batch_size=args.batch_size, **extra)
    return task, clean, params
