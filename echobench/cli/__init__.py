"""The `echobench` command line: one module per command group, options shared by several commands
declared once (`options.py`). Heavy libraries are imported inside the commands that need them, so
`echobench --help` and `echobench ls` answer at once."""

from __future__ import annotations

import argparse
import sys

from echobench.errors import EchobenchError

# command groups, in the order `echobench --help` lists them
GROUPS = ("run", "ls", "report", "compare", "noise", "bench", "echoalign", "cache", "doctor")


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line, like echobench's own (the usage is one `--help` away);
    subcommands' parsers are of this class too."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (`{self.prog} --help` lists the options)\n")


def _parser() -> argparse.ArgumentParser:
    import importlib

    parser = _Parser(
        prog="echobench",
        description="A benchmark harness for learning with noisy labels, built around EchoAlign.",
        epilog="Run `echobench COMMAND --help` for a command's options and examples.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__import__('echobench').__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, help_text: str, examples: str, command) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=help_text, description=help_text, epilog=examples,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
        cmd.set_defaults(func=command)
        return cmd

    for group in GROUPS:
        importlib.import_module(f"echobench.cli.{group}").add_parser(add)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded by `run` in OUT/commands/
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except EchobenchError as exc:
        print(f"echobench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("echobench: interrupted; what finished is kept (cells, a training checkpoint): re-run the same command "
              "to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
