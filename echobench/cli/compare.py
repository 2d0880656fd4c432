"""`echobench compare BASELINE CANDIDATE`: regressions of accuracy and runtime between two runs, for CI
(the rules and the matching: `echobench.reporting.compare`)."""

from __future__ import annotations

import argparse
import json

from echobench.cli.options import add_json

DESCRIPTION = """\
Compare two runs row by row and say what regressed: accuracy per experiment (a results directory's
training cells, matched by their configuration without the seed), runtime and throughput per
measured row (runtime cells, or the JSON of `echobench bench engines|train|knn|echoselect`). Both
sides are results directories, or both the JSON of the same benchmark. Exit status: 1 when anything
regressed, 0 otherwise, 2 on bad input, so that CI can gate on it.

Accuracy rule, per row, on the per-seed test accuracies (points): with >= 2 seeds on both sides,
Welch's t-test (the spread may change too); with one seed on one side, the prediction test of that
seed against the other side's seeds (t = delta / (s * sqrt(1 + 1/n)), n - 1 degrees of freedom), which
is what re-running one seed against a stored multi-seed baseline needs; a regression (improvement)
needs p < --alpha AND a drop (gain) of at least --min-effect points, so that a statistically clear
but negligible move never fails a build. With one seed on both sides there is no variance to test
against, and |delta| >= --single-seed-effect points decides, so one-seed suites still gate on large
moves. Seeds count as independent draws, not pairs: any change to what the code computes sends a
seed down another trajectory. Runtime rule: ratio = candidate / baseline; a regression when worse by
more than --tolerance (time ratio > 1 + tol, throughput ratio < 1 / (1 + tol)), direction-aware;
an engine that errors in the candidate but was measured in the baseline is a regression too."""

EXAMPLES = """examples:
  echobench compare runs/main runs/pr                     # two results directories (`echobench run --out`)
  echobench compare baseline/shapes runs/pr --metric last --json
  echobench compare reports/shapes runs/rerun --only-common   # the candidate re-ran a subset of the experiments
  echobench compare old.json new.json --tolerance 0.25    # two `echobench bench engines … --json` documents
  echobench compare runs/main runs/pr --alpha 0.01 --min-effect 2 --single-seed-effect 3

  # in CI: run the suite, compare with the stored baseline, post the Markdown, fail the job on exit 1
  echobench run --suite smoke --out runs/pr --seeds 1 2 3
  echobench compare ci-baseline/smoke runs/pr > compare.md; status=$?
  gh pr comment --body-file compare.md; exit $status"""


def _fraction(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def add_parser(add) -> None:
    cmd = add("compare", "Compare two results directories (or two `bench … --json` documents): accuracy per "
                         "experiment and runtime per row, a verdict each; exit 1 on a regression (for CI).",
              EXAMPLES, cmd_compare)
    cmd.description = DESCRIPTION  # the rules in full; `echobench --help` lists the line above
    cmd.add_argument("baseline", metavar="BASELINE", help="results directory or `bench … --json` file: the reference")
    cmd.add_argument("candidate", metavar="CANDIDATE", help="results directory or `bench … --json` file: the new run")
    cmd.add_argument("--metric", default="best_val", choices=["best_val", "last", "oracle"],
                     help="accuracy to compare (default: best_val, at the best noisy-validation epoch)")
    cmd.add_argument("--alpha", type=_fraction, default=0.05,
                     help="two-sided significance level of the test over seeds (default: 0.05)")
    cmd.add_argument("--min-effect", type=_fraction, default=1.0, metavar="POINTS",
                     help="smallest accuracy move, in points, that counts as a regression or improvement (default: 1)")
    cmd.add_argument("--single-seed-effect", type=_fraction, default=2.0, metavar="POINTS",
                     help="with one seed on both sides (no test possible): the move in points that counts (default: 2)")
    cmd.add_argument("--tolerance", type=_fraction, default=0.10, metavar="FRACTION",
                     help="runtime: how much worse a row may be before it regresses, 0.10 = 10%% (default: 0.10)")
    cmd.add_argument("--only-common", action="store_true",
                     help="leave out rows present on one side only (counted, not listed in the Markdown): for a candidate that "
                          "re-ran a subset of the baseline's experiments")
    cmd.add_argument("--fail-on-missing", action="store_true",
                     help="exit 1 also when a baseline row has no result in the candidate (an experiment dropped or failed)")
    add_json(cmd, "print the comparison as JSON instead of Markdown")


def cmd_compare(args) -> int:
    from echobench.reporting.compare import Rule, compare, markdown

    rule = Rule(alpha=args.alpha, min_effect=args.min_effect, single_seed_effect=args.single_seed_effect,
                tolerance=args.tolerance)
    doc = compare(args.baseline, args.candidate, metric=args.metric, rule=rule, only_common=args.only_common,
                  fail_on_missing=args.fail_on_missing)
    if args.json:
        print(json.dumps(doc, indent=2, default=str))
    else:
        print(markdown(doc), end="")
    return doc["exit_code"]

