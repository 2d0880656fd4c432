"""`echobench cache ls | verify | prune`: inspect and tidy EchoMod's cache of modified images.

The cache (layout in `echobench/echoalign/cache.py`) holds one folder per (dataset, generator
configuration); these commands work on whole folders and never change a shard's content.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

from echobench.cli.options import add_json, add_paths, context
from echobench.errors import EchobenchError

EXAMPLES = {
    "cache": """examples:
  echobench cache ls                                   # per generator configuration: pairs, size, last use
  echobench cache verify                               # check every shard's checksums; exit 1 if one is damaged
  echobench cache prune --unused-since 2024-01-01 --dry-run""",
    "ls": """examples:
  echobench cache ls
  echobench cache ls --cache-dir /shared/echomod --json""",
    "verify": """examples:
  echobench cache verify                               # names damaged shards; exit 1 if any (the next run regenerates them)
  echobench cache verify --config 1a2b3c --json""",
    "prune": """examples:
  echobench cache prune --config 1a2b3c4d --dry-run    # what would go (a digest prefix, from `cache ls`)
  echobench cache prune --unused-since 2024-01-01      # configurations not used since that day
  echobench cache prune --unused-since 30d             # … nor in the last 30 days
  echobench cache prune --dataset shapes --all-configs # every configuration of one dataset""",
}


def add_parser(add) -> None:
    cache = add("cache", "Inspect and tidy EchoMod's cache of modified images: ls, verify, prune.",
                EXAMPLES["cache"], lambda args: _usage(cache))
    sub = cache.add_subparsers(dest="cache_command", metavar="ACTION")

    def action(name: str, help_text: str, command) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=help_text, description=help_text, epilog=EXAMPLES[name],
                             formatter_class=argparse.RawDescriptionHelpFormatter)
        cmd.set_defaults(func=command)
        add_paths(cmd)
        add_json(cmd)
        return cmd

    action("ls", "List the cache's generator configurations: dataset, engine, shards, pairs, size, last use.", cmd_ls)
    verify = action("verify", "Check every shard (zip CRCs, arrays, sha256) without changing anything; name the "
                              "damaged and unreadable ones and exit 1 when there is one.", cmd_verify)
    verify.add_argument("--config", action="append", default=[], metavar="DIGEST",
                        help="only configurations whose digest starts with this (repeatable)")
    prune = action("prune", "Delete whole generator configurations: those named, or not used since a date "
                            "(criteria combine; at least one is needed).", cmd_prune)
    prune.add_argument("--config", action="append", default=[], metavar="DIGEST",
                       help="a configuration's digest or a prefix of it, as `cache ls` prints it (repeatable)")
    prune.add_argument("--dataset", action="append", default=[], metavar="KEY",
                       help="only configurations of this dataset key (as `cache ls` prints it; repeatable)")
    prune.add_argument("--unused-since", metavar="DATE",
                       help="only configurations not used since DATE (YYYY-MM-DD, an ISO time, or Nd: N days ago)")
    prune.add_argument("--all-configs", action="store_true",
                       help="no criterion beyond --dataset: every configuration (of those datasets)")
    prune.add_argument("--dry-run", action="store_true", help="list what would be deleted, delete nothing")


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 0


def _root(args) -> Path:
    return Path(context(args).cache_dir)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _table(rows: list[dict]) -> str:
    from tabulate import tabulate

    table = [{"dataset": r["dataset"], "config": r["config"], "engine": r["engine"],
              "base_seed": r["generator"].get("base_seed", "?"), "shards": r["shards"], "pairs": r["pairs"],
              "size": _size(r["bytes"]), "last use": (r["last_use"] or "-").replace("T", " ")}
             for r in rows]
    return tabulate(table, headers="keys")


def _select(root: Path, prefixes: list[str], datasets: list[str] | None = None) -> list[Path]:
    from echobench.echoalign.cache import config_dirs

    folders = config_dirs(root)
    for prefix in prefixes:
        if not any(f.name.startswith(prefix) for f in folders):
            raise EchobenchError(f"no configuration in {root} has a digest starting with {prefix!r}; "
                                 f"`echobench cache ls` lists them")
    if prefixes:
        folders = [f for f in folders if any(f.name.startswith(p) for p in prefixes)]
    if datasets:
        folders = [f for f in folders if f.parent.name in datasets]
    return folders


def cmd_ls(args) -> int:
    from echobench.echoalign.cache import config_dirs, describe_config

    root = _root(args)
    rows = [describe_config(f) for f in config_dirs(root)]
    if args.json:
        print(json.dumps({"cache_dir": str(root), "configs": rows}, indent=2))
        return 0
    if not rows:
        print(f"no EchoMod cache entries in {root}")
        return 0
    print(_table(rows))
    unreadable = sum(r["unreadable"] for r in rows)
    print(f"{len(rows)} configuration(s), {sum(r['pairs'] for r in rows)} pairs, "
          f"{_size(sum(r['bytes'] for r in rows))} in {root}"
          + (f"; {unreadable} shard(s) could not be counted (`echobench cache verify` says why)" if unreadable else ""))
    return 0


def cmd_verify(args) -> int:
    from echobench.echoalign.cache import verify_config

    root = _root(args)
    folders = _select(root, args.config)
    shards = [dict(s, dataset=f.parent.name, config=f.name) for f in folders for s in verify_config(f)]
    bad = [s for s in shards if s["status"] != "ok"]
    if args.json:
        print(json.dumps({"cache_dir": str(root), "configs": len(folders), "shards": len(shards),
                          "damaged": [s for s in bad if s["status"] == "damaged"],
                          "unreadable": [s for s in bad if s["status"] == "unreadable"]}, indent=2))
    else:
        for s in bad:
            print(f"{s['status']}: {s['shard']}: {s['reason']}")
        damaged = sum(s["status"] == "damaged" for s in bad)
        print(f"{len(shards)} shard(s) in {len(folders)} configuration(s) in {root}: {len(shards) - len(bad)} ok"
              + (f", {damaged} damaged (the next run that needs them deletes and regenerates them, or delete "
                 f"them yourself)" if damaged else "")
              + (f", {len(bad) - damaged} unreadable by this user (ask the owner for read permission)"
                 if len(bad) > damaged else ""))
    return 1 if bad else 0


def _since(text: str) -> float:
    """A timestamp from YYYY-MM-DD, an ISO time or Nd (N days ago)."""
    import time

    text = text.strip()
    if text.endswith("d") and text[:-1].isdigit():
        return time.time() - 86400 * int(text[:-1])
    try:
        return dt.datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise EchobenchError(f"--unused-since must be a date (2024-01-31), an ISO time (2024-01-31T12:00) or Nd "
                             f"(30d: 30 days ago), got {text!r}") from None


def cmd_prune(args) -> int:
    from echobench.echoalign.cache import last_use, prune_configs

    if not (args.config or args.unused_since or args.all_configs):
        raise EchobenchError("say what to prune: --config DIGEST, --unused-since DATE, or --all-configs "
                             "(with --dataset KEY to keep to one dataset); `echobench cache ls` lists them")
    root = _root(args)
    folders = _select(root, args.config, args.dataset)
    if args.unused_since:
        cutoff = _since(args.unused_since)
        folders = [f for f in folders if (last_use(f) or 0.0) < cutoff]
    rows = prune_configs(folders, dry_run=args.dry_run)
    failed = [r for r in rows if r.get("error")]
    if args.json:
        print(json.dumps({"cache_dir": str(root), "dry_run": args.dry_run, "configs": rows}, indent=2))
    else:
        if rows:
            print(_table(rows))
        verb = "would delete" if args.dry_run else "deleted"
        done = [r for r in rows if args.dry_run or r["removed"]]
        print(f"{verb} {len(done)} configuration(s), {sum(r['pairs'] for r in done)} pairs, "
              f"{_size(sum(r['bytes'] for r in done))} from {root}" if rows else f"nothing to prune in {root}")
        for r in failed:
            print(f"could not delete {r['path']}: {r['error']}", file=sys.stderr)
    return 1 if failed else 0
