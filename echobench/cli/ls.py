"""`echobench ls`: what is registered."""

from __future__ import annotations

import json

from echobench.cli.options import add_include, add_json

EXAMPLES = """examples:
  echobench ls methods
  echobench ls suites
  echobench ls methods --include examples/gce.py   # with a plugin's names (and where each comes from)"""

KINDS = ["datasets", "noises", "methods", "selectors", "suites", "protocols", "models", "engines", "extractors", "gpus"]


def add_parser(add) -> None:
    ls = add("ls", "List registered datasets, noises, methods, selectors, suites, protocols, models, engines, "
                   "extractors or gpus.", EXAMPLES, cmd_ls)
    ls.add_argument("what", choices=KINDS)
    add_json(ls)
    add_include(ls)


def cmd_ls(args) -> int:
    if args.include:
        from echobench.harness.context import RunContext

        RunContext.resolve(includes=args.include).load_plugins()
    from echobench.data import DATASETS
    from echobench.echoalign.echomod import ENGINES
    from echobench.echoalign.features import EXTRACTORS
    from echobench.training.method import METHODS
    from echobench.training.networks import NETWORKS
    from echobench.data.noise import NOISES
    from echobench.training.protocols import PROTOCOLS
    from echobench.reporting.runtime import GPUS
    from echobench.training.selectors import SELECTORS
    from echobench.harness.suite import SUITES, load_suite

    registry = {"datasets": DATASETS, "noises": NOISES, "methods": METHODS, "selectors": SELECTORS,
                "suites": SUITES, "protocols": PROTOCOLS, "models": NETWORKS, "engines": ENGINES,
                "extractors": EXTRACTORS, "gpus": GPUS}[args.what]
    names = registry.names()
    details = {n: load_suite(n).description for n in names} if args.what == "suites" else {}
    if args.what == "gpus":
        details = {n: f"{GPUS.get(n).peak_tflops:g} TFLOP/s dense {GPUS.get(n).precision}: {GPUS.get(n).name}" for n in names}
    sources = {n: registry.source(n).label for n in names if registry.source(n) is not None}  # plugins: from where
    details.update({n: f"[{sources[n]}]" for n in sources if n not in details})
    if args.json:
        print(json.dumps([{"name": n, **({"description": details[n]} if n in details and n not in sources else {}),
                           **({"source": sources[n]} if n in sources else {})} for n in names], indent=2))
    else:
        for n in names:
            print(f"{n:12s} {details.get(n, '')}".rstrip())
    return 0
