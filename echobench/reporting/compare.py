"""`echobench compare BASELINE CANDIDATE`: accuracy and runtime of two runs, row by row, for CI gates.

Each side is either a results directory (`echobench run --out DIR`) or the JSON document of one
micro-benchmark (`echobench bench engines|train|knn|echoselect … --json`); both sides must be of the
same kind (two directories, or two documents of the same benchmark).

Matching. A row is an *experiment*: a results directory's cells are grouped by `store.experiment_key`
(the cell's resolved configuration without the seed, so its seeds are the row's samples), and the
two sides' rows are matched by that key. How and where a cell ran (git revision, package versions,
device, threads, host: `tables.PROVENANCE`) is provenance, not identity: a row matches across code
versions and machines, which is the point of the comparison. A row on one side only (another suite,
an edited configuration, a cell that failed) is listed as such, with the settings in which it differs
from its nearest row on the other side; it is never a verdict. For a benchmark document the row is a
measured entry (an engine at a batch size, a kNN backend, a path of EchoSelect, the training epoch),
and the benchmark's settings (model configuration, resolution, steps, problem size, device type)
belong to its identity: documents measured with other settings share no row.

Accuracy rule (training cells; the metric is `--metric`, as in `echobench report`). Per row, the
per-seed test accuracies of each side, in points (%): the means, Δ = candidate − baseline, and a
verdict. Seeds are treated as independent draws of the run-to-run variation (initialisation, data
order, the noisy labels themselves): once a change in the code alters anything it computes, the same
seed follows a different training trajectory, so seeds are not pairs. The test depends on how many
seeds each side has:

- both sides ≥ 2 seeds: Welch's t-test (unequal variances; a change can change the spread too);
- one side 1 seed, the other n ≥ 2: the prediction test of one new observation against the other
  side's sample, t = Δ / (s · √(1 + 1/n)) with n − 1 degrees of freedom (Welch's test needs two
  variances; this one uses the variance that is known, and is what a re-run of one seed against a
  committed multi-seed baseline needs);
- both sides 1 seed: no variance to test against, so only the effect size decides.

A row is a regression (improvement) when the test's two-sided p < `alpha` (default 0.05) AND Δ ≤
−`min_effect` (≥ +`min_effect`; default 1 point), or, with one seed on both sides, when |Δ| ≥
`single_seed_effect` (default 2 points); otherwise it is within noise. The minimum effect keeps a
statistically clear but practically meaningless move (two runs whose seeds all agree to 0.1 point) from
failing a build, and lets one-seed suites gate on something. With 2–3 seeds a t-test only detects moves
that are large against the seed spread: a noisy row (CE at 50% noise on `shapes` spreads over 17
points) cannot regress detectably from one re-run seed. Exact same-seed reproduction is a different and
stricter check (tests/test_regression.py does both).

Runtime rule. Runtime cells of a results directory (seconds per image of each engine, lower is better)
and the benchmarks' measurements (`bench engines`: images/s per engine and batch size, higher is better;
`bench train`: images/s; `bench knn`: seconds per backend, lower; `bench echoselect`: pairs/s per path,
higher) are compared by ratio = candidate / baseline. A row is a regression when the candidate is worse
by more than the tolerance, i.e. its time ratio exceeds 1 + `tolerance` (its throughput ratio falls below
1 / (1 + `tolerance`)); an improvement when it is better by the same factor; otherwise within tolerance
(default 10%, as `asv compare`'s factor 1.1). A measured entry of the baseline that errors in the
candidate is a regression ("failed"); one that is unavailable there (an engine not installed) is
one-sided.

The result is a document (`compare`); `markdown` renders it for a pull-request comment. The command
exits 1 when any row regressed, 0 otherwise, 2 on bad input (`echobench.cli.compare`).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from echobench.errors import EchobenchError

BENCH_KINDS = ("engines", "train", "knn", "echoselect")
VERDICTS = ("regression", "improvement", "within noise")
RUNTIME_VERDICTS = ("regression", "failed", "improvement", "within tolerance")
LISTED = 25  # one-sided rows listed by the Markdown (all are in the JSON)
PENDING = "pending"  # Group.failed of an experiment whose cells have neither a result nor an error


@dataclass(frozen=True)
class Rule:
    """The thresholds of the verdicts (module docstring)."""

    alpha: float = 0.05  # two-sided significance level of the test over seeds
    min_effect: float = 1.0  # points: the smallest accuracy move that can be a regression or an improvement
    single_seed_effect: float = 2.0  # points: the threshold when both sides have one seed (no test possible)
    tolerance: float = 0.10  # runtime: a row regresses when worse by more than this factor (1 + tolerance)

    def check(self) -> None:
        if not 0 < self.alpha < 1:
            raise EchobenchError(f"--alpha must lie in (0, 1), got {self.alpha}")
        for name, value in (("--min-effect", self.min_effect), ("--single-seed-effect", self.single_seed_effect),
                            ("--tolerance", self.tolerance)):
            if not math.isfinite(value) or value < 0:
                raise EchobenchError(f"{name} must be a non-negative number, got {value}")

    def describe(self) -> dict[str, str]:
        return {
            "accuracy": (f"per row, over seeds: Welch's t-test (both sides ≥ 2 seeds) or the prediction test of one "
                         f"seed against the other side's seeds (one side 1 seed); regression/improvement when "
                         f"p < {self.alpha:g} and |Δ| ≥ {self.min_effect:g} point(s); with one seed on both sides, "
                         f"when |Δ| ≥ {self.single_seed_effect:g} points; otherwise within noise"),
            "runtime": (f"ratio candidate/baseline; regression when worse by more than {100 * self.tolerance:g}% "
                        f"(time ratio > {1 + self.tolerance:.3g}, throughput ratio < {1 / (1 + self.tolerance):.3g}), "
                        f"improvement when better by as much; otherwise within tolerance"),
        }


# --- statistics ----------------------------------------------------------------------------------------


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def _var(xs: list[float]) -> float:
    m = _mean(xs)
    return sum((x - m) ** 2 for x in xs) / (len(xs) - 1)


def _two_sided_p(t: float, df: float) -> float:
    from scipy import stats

    return float(2 * stats.t.sf(abs(t), df))


def accuracy_test(baseline: list[float], candidate: list[float], rule: Rule) -> dict[str, Any]:
    """Δ, the test that applies, its p-value and the verdict for two samples of per-seed accuracies (points)."""
    nb, nc = len(baseline), len(candidate)
    if nb < 1 or nc < 1:
        raise ValueError("both samples need at least one value")
    delta = _mean(candidate) - _mean(baseline)
    p: float | None
    if nb >= 2 and nc >= 2:
        test, threshold = "welch", rule.min_effect
        vb, vc = _var(baseline) / nb, _var(candidate) / nc
        se = math.sqrt(vb + vc)
        if se == 0:
            p = 0.0 if delta != 0 else 1.0
        else:
            df = (vb + vc) ** 2 / ((vb ** 2 / (nb - 1) if vb else 0.0) + (vc ** 2 / (nc - 1) if vc else 0.0))
            p = _two_sided_p(delta / se, df)
    elif nb >= 2 or nc >= 2:
        test, threshold = "prediction", rule.min_effect
        sample = baseline if nb >= 2 else candidate
        n = len(sample)
        se = math.sqrt(_var(sample)) * math.sqrt(1 + 1 / n)
        p = (0.0 if delta != 0 else 1.0) if se == 0 else _two_sided_p(delta / se, n - 1)
    else:
        test, threshold, p = "single seed", rule.single_seed_effect, None
    significant = p is None or p < rule.alpha
    # accuracies are multiples of 0.1 point (1,000 test images): a Δ on the threshold counts as reaching it
    large = abs(delta) >= threshold - 1e-9
    verdict = ("regression" if delta < 0 else "improvement") if significant and large and delta != 0 else "within noise"
    return {"difference": delta, "test": test, "p_value": p, "threshold": threshold, "verdict": verdict}


def runtime_verdict(baseline: float, candidate: float, lower_is_better: bool, tolerance: float) -> tuple[float, float, str]:
    """(ratio candidate/baseline, factor by which the candidate is worse (> 1) or better (< 1), verdict)."""
    ratio = candidate / baseline
    worse = ratio if lower_is_better else 1 / ratio
    limit = 1 + tolerance
    verdict = ("regression" if worse > limit * (1 + 1e-12) else
               "improvement" if worse * limit < 1 - 1e-12 else "within tolerance")
    return ratio, worse, verdict


# --- reading the two sides ----------------------------------------------------------------------------


@dataclass
class Group:
    """One row of one side: an experiment's per-seed accuracies, or a runtime entry's measurements."""

    key: str
    section: str  # "accuracy" or "runtime"
    identity: dict  # what the row is (shown, and used to name the settings one-sided rows differ in)
    values: list[float] = field(default_factory=list)
    seeds: list[Any] = field(default_factory=list)
    run_ids: list[str] = field(default_factory=list)
    measure: str = ""  # runtime: what is measured (seconds_per_image, images_per_s, seconds, pairs_per_s)
    lower_is_better: bool = True
    failed: str | None = None  # the side has the row but could not measure/finish it (why)
    unavailable: str | None = None  # runtime: the entry was not measurable on this side (not installed, unsupported)


@dataclass
class Side:
    path: str
    kind: str  # "results" or "bench engines" (…)
    groups: dict[str, Group]
    environments: list[str]
    notes: list[str]
    settings: dict | None = None  # a benchmark document's settings (part of every row's identity)
    suite: str | None = None
    unavailable: dict[str, str] = field(default_factory=dict)  # engine → why, for every batch size (bench engines)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _env_line(env: dict | None) -> str:
    env = env if isinstance(env, dict) else {}
    device = env.get("device") if isinstance(env.get("device"), dict) else {}
    packages = env.get("packages") if isinstance(env.get("packages"), dict) else {}
    torch_version = packages.get("torch") or env.get("torch")
    parts = [f"git {str(env['git'])[:12]}" if env.get("git") else "git unknown",
             str(device.get("name") or env.get("machine") or "device unknown")]
    if device.get("threads") is not None:
        parts.append(f"{device['threads']} torch thread(s)")
    if torch_version:
        parts.append(f"torch {torch_version}")
    if env.get("host"):
        parts.append(f"host {env['host']}")
    return ", ".join(parts)


def load_side(path: str | Path, metric: str) -> Side:
    """A results directory or a benchmark's JSON document, read into rows (EchobenchError on bad input)."""
    p = Path(path)
    if not p.exists():
        raise EchobenchError(f"{path} does not exist: give a results directory (`echobench run --out DIR`) or a "
                             f"`echobench bench … --json` file")
    if p.is_dir():
        return _load_results(p, metric)
    try:
        doc = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise EchobenchError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    except ValueError as exc:
        raise EchobenchError(f"{path} is not JSON ({exc}); give a results directory or a `bench … --json` file") from None
    return _load_bench(p, doc)


def _load_results(root: Path, metric: str) -> Side:
    from echobench.harness.store import experiment_key
    from echobench.reporting.index_page import read_results
    from echobench.reporting.tables import METRICS

    read = read_results(root)
    groups: dict[str, Group] = {}
    envs: dict[str, None] = {}
    other = {}
    for cell, _ in read["cells"]:
        config, result = cell.config, cell.result
        kind, spec = cell.kind, config["spec"]
        if kind not in ("train", "runtime"):
            other[kind] = other.get(kind, 0) + 1
            continue
        key = experiment_key(kind, spec)
        if result is not None:
            envs[_env_line(config.get("environment"))] = None
        if kind == "train":
            identity = {k: v for k, v in spec.items() if k != "seed"}
            group = groups.setdefault(key, Group(key, "accuracy", identity))
            if result is None:
                if not group.values:
                    group.failed = str((cell.error or {}).get("error") or "failed") if cell.error else PENDING
                continue
            group.failed = None
            group.values.append(100.0 * float(result["metrics"][METRICS[metric]]))
            group.seeds.append(spec.get("seed"))
            group.run_ids.append(cell.run_id)
            continue
        identity = {k: v for k, v in spec.items() if k not in ("device_name", "engines")}
        if result is None:
            continue  # a runtime cell that failed: its engines are unknown until it is measured
        for m in result["measurements"]:
            if not _number(m.get("seconds_per_image")) or not m.get("engine"):
                continue
            row = {**identity, "engine": m["engine"]}
            rkey = f"{key}/{m['engine']}"
            group = groups.setdefault(rkey, Group(rkey, "runtime", row, measure="seconds_per_image"))
            group.values.append(float(m["seconds_per_image"]))
            group.seeds.append(spec.get("device_name") or m.get("device"))
            group.run_ids.append(cell.run_id)
        for engine, why in (result.get("unsupported") or {}).items():
            rkey = f"{key}/{engine}"
            if rkey not in groups:
                groups[rkey] = Group(rkey, "runtime", {**identity, "engine": engine}, measure="seconds_per_image",
                                     unavailable=str(why))
    notes = list(read["notes"])
    if other:
        notes.append("not compared: " + ", ".join(f"{n} {k} cell(s)" for k, n in sorted(other.items()))
                     + " (compare covers training accuracy and runtime)")
    return Side(str(root), "results", groups, list(envs), notes, suite=read["suite"])


def bench_kind(doc: Any) -> str | None:
    """Which benchmark wrote `doc` (one of BENCH_KINDS, "approx"), or None."""
    if not isinstance(doc, dict):
        return None
    if doc.get("benchmark") == "train":
        return "train"
    if isinstance(doc.get("rows"), dict) and "config" in doc and "resolution" in doc:
        return "engines"
    if isinstance(doc.get("backends"), dict) and "dim" in doc and "k" in doc:
        return "knn"
    if isinstance(doc.get("released_loop"), dict) and isinstance(doc.get("echobench"), dict):
        return "echoselect"
    if "paired" in doc and "samples" in doc:
        return "approx"
    return None


def _device_type(device: Any) -> str:
    return "cuda" if str(device).startswith("cuda") else str(device)


_BENCH_SETTINGS = {  # a benchmark document's fields that are part of every row's identity
    "engines": ("config", "random_init", "resolution", "steps", "guidance_scale", "scheduler", "vae", "dtype"),
    "train": ("protocol", "model", "optimizer", "n", "image_shape", "num_classes", "batch_size", "precision"),
    "knn": ("n", "dim", "k", "chunk"),
    "echoselect": ("n_pairs", "image_size", "model", "pretrained", "batch_size"),
}


# settings that documents written before the field existed lack: the value they were measured with
_BENCH_DEFAULTS = {"engines": {"vae": "checkpoint's"}}


def _load_bench(path: Path, doc: Any) -> Side:
    kind = bench_kind(doc)
    if kind == "approx":
        raise EchobenchError(f"{path} is a `bench approx` document: it measures selection quality, not speed, and "
                             f"compare does not read it; compare takes `bench {'|'.join(BENCH_KINDS)} --json` documents")
    if kind is None:
        raise EchobenchError(f"{path} is neither a results directory nor a `bench {'|'.join(BENCH_KINDS)} --json` "
                             f"document (its fields match none of them)")
    defaults = _BENCH_DEFAULTS.get(kind, {})
    settings = {k: doc.get(k, defaults.get(k)) for k in _BENCH_SETTINGS[kind]}
    settings["device"] = _device_type(doc.get("device"))
    groups: dict[str, Group] = {}
    unavailable: dict[str, str] = {}
    notes = []
    if kind == "engines" and doc.get("complete") is False:
        notes.append(f"{path.name}: an incomplete run (`complete: false`): rows it did not reach are missing")

    def add(row: str, entry: Any, measure: str, lower: bool, **extra: Any) -> None:
        identity = {**extra, "row": row}
        key = json.dumps({"kind": kind, "settings": settings, "row": identity}, sort_keys=True, default=str)
        group = Group(key, "runtime", identity, measure=measure, lower_is_better=lower)
        if isinstance(entry, dict) and _number(entry.get(measure)) and entry[measure] > 0:
            group.values.append(float(entry[measure]))
        elif isinstance(entry, dict) and "error" in entry:
            group.failed = str(entry["error"])
        elif isinstance(entry, dict) and ("unavailable" in entry or "unsupported" in entry):
            group.unavailable = str(entry.get("unavailable") or entry.get("unsupported"))
        else:
            group.failed = f"no {measure} recorded"
        groups[key] = group

    if kind == "engines":
        for name, per_batch in doc["rows"].items():
            if not isinstance(per_batch, dict):
                continue
            batches = {b: e for b, e in per_batch.items() if isinstance(e, dict) and str(b).isdigit()}
            if not batches:  # an engine-level entry: unavailable (or failed) at every batch size
                why = per_batch.get("unavailable") or per_batch.get("unsupported") or per_batch.get("error")
                unavailable[name] = str(why or "not measured")
            for batch, entry in batches.items():
                add(f"{name} batch {batch}", entry, "images_per_s", False, engine=name, batch_size=int(batch))
    elif kind == "train":
        add("train epoch", doc, "images_per_s", False)
    elif kind == "knn":
        for name, entry in doc["backends"].items():
            add(name, entry, "seconds", True, backend=name)
    else:
        for name in ("released_loop", "echobench"):
            add(name, doc[name], "pairs_per_s", False, path=name)
    env = doc.get("environment")
    return Side(str(path), f"bench {kind}", groups, [_env_line(env)] if env else [], notes, settings=settings,
                unavailable=unavailable)


# --- comparing ----------------------------------------------------------------------------------------


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict) or not d:
        return {prefix.rstrip("."): d} if prefix else {}
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {f"{prefix}{k}": v})
    return out


def _text(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, default=str)


def differences(a: dict, b: dict) -> list[str]:
    """The settings in which identity `a` differs from `b`: `path: a-value vs b-value`."""
    fa, fb = _flat(a), _flat(b)
    out = []
    for p in sorted(set(fa) | set(fb)):
        va, vb = fa.get(p, "—"), fb.get(p, "—")
        if json.dumps(va, sort_keys=True, default=str) != json.dumps(vb, sort_keys=True, default=str):
            out.append(f"{p}: {_text(va)} vs {_text(vb)}")
    return out


def _nearest(group: Group, others: list[Group]) -> list[str]:
    """How `group` differs from the most similar row of the other side (fewest differing settings)."""
    others = [o for o in others if o.section == group.section]
    same_method = [o for o in others if o.identity.get("method", 0) == group.identity.get("method", 1)]
    best = None
    for other in same_method or others:
        diff = differences(group.identity, other.identity)
        if best is None or len(diff) < len(best):
            best = diff
    return best or []


def _sort_key(group: Group, index: int) -> tuple:
    """Accuracy rows by dataset, noise and method; runtime rows in the order the documents list them."""
    from echobench.data.noise import NoiseSpec

    if group.section == "runtime":
        return (1, "", "", "", index)
    ident = group.identity
    noise = ident.get("noise")
    try:
        noise_key = NoiseSpec.parse(noise).sort_key() if isinstance(noise, str) else ()
    except Exception:  # noqa: BLE001 - an unknown noise kind sorts by its text
        noise_key = (str(noise),)
    return (0, str(ident.get("dataset", "")), str(noise_key), _text(ident.get("method", "")), index)


def _labels(groups: list[Group]) -> dict[str, str]:
    """Row key → label: the method and the settings that tell its experiments apart (`tables.row_labels`)
    for accuracy rows; what was measured for runtime rows."""
    from echobench.reporting.tables import row_labels

    rows, keys = {}, {}
    for g in groups:
        if g.section != "accuracy":
            continue
        experiment = {k: v for k, v in g.identity.items() if k not in ("dataset", "noise")}
        rkey = json.dumps(experiment, sort_keys=True, default=str)
        rows[rkey] = {"method": str(g.identity.get("method")), "experiment": experiment, "stale": False}
        keys[g.key] = rkey
    labels = row_labels(rows) if rows else {}
    out = {}
    for g in groups:
        if g.section == "accuracy":
            out[g.key] = labels[keys[g.key]]
        elif "row" in g.identity:
            out[g.key] = g.identity["row"]
        else:  # a runtime cell's engine
            i = g.identity
            out[g.key] = (f"{i.get('engine')}: {i.get('config')} {i.get('resolution')}² batch {i.get('batch_size')} "
                          f"{i.get('steps')} steps on {i.get('device_type')}")
    return out


def _sample(group: Group) -> dict[str, Any]:
    n = len(group.values)
    out = {"mean": round(_mean(group.values), 4) if n else None,
           "std": round(math.sqrt(_var(group.values)), 4) if n > 1 else 0.0 if n else None,
           "n": n, "values": [round(v, 4) for v in group.values], "seeds": group.seeds}
    return out


def compare(baseline: str | Path, candidate: str | Path, *, metric: str = "best_val", rule: Rule | None = None,
            only_common: bool = False, fail_on_missing: bool = False) -> dict[str, Any]:
    """The comparison document (module docstring); `exit_code` is what the CLI returns."""
    from echobench.reporting.tables import METRIC_TITLES, METRICS

    rule = rule or Rule()
    rule.check()
    if metric not in METRICS:
        raise EchobenchError(f"unknown metric {metric!r}; choose one of {sorted(METRICS)}")
    if only_common and fail_on_missing:
        raise EchobenchError("--only-common and --fail-on-missing contradict each other: the first ignores rows "
                             "missing from one side, the second fails on them; give one")
    base, cand = load_side(baseline, metric), load_side(candidate, metric)
    if base.kind != cand.kind:
        raise EchobenchError(f"cannot compare a {_kind_text(base)} ({base.path}) with a {_kind_text(cand)} "
                             f"({cand.path}): both sides must be results directories, or both the JSON of the same "
                             f"`echobench bench` command")
    notes = [f"baseline: {n}" for n in base.notes] + [f"candidate: {n}" for n in cand.notes]
    if base.settings is not None and base.settings != cand.settings:
        diff = differences(base.settings, cand.settings)
        notes.append("the two benchmark runs were measured with different settings (" + "; ".join(diff)
                     + "), which are part of each row's identity: no row matches")
    every = list(base.groups.values()) + list(cand.groups.values())
    labels = _labels(every)
    accuracy, runtime, only_base, only_cand = [], [], [], []
    order = {k: i for i, k in enumerate([*base.groups, *(k for k in cand.groups if k not in base.groups)])}
    for key in sorted(order, key=lambda k: _sort_key(base.groups.get(k) or cand.groups[k], order[k])):
        b, c = base.groups.get(key), cand.groups.get(key)
        g = b or c
        head = {"row": labels[key], "key": key,
                **({k: g.identity.get(k) for k in ("dataset", "noise", "method")} if g.section == "accuracy" else
                   {"measure": g.measure, "better": "lower" if g.lower_is_better else "higher"}),
                "identity": g.identity}
        b_ok = b is not None and b.values
        c_ok = c is not None and c.values
        if b_ok and c_ok:
            if g.section == "accuracy":
                test = accuracy_test(b.values, c.values, rule)
                accuracy.append({**head, "baseline": _sample(b), "candidate": _sample(c),
                                 "difference": round(test["difference"], 4) + 0.0, "test": test["test"],
                                 "p_value": None if test["p_value"] is None else round(test["p_value"], 6),
                                 "threshold": test["threshold"], "verdict": test["verdict"]})
            else:
                bv, cv = _mean(b.values), _mean(c.values)
                ratio, worse, verdict = runtime_verdict(bv, cv, g.lower_is_better, rule.tolerance)
                runtime.append({**head, "baseline": _sample(b), "candidate": _sample(c), "ratio": round(ratio, 4),
                                "worse_factor": round(worse, 4), "verdict": verdict})
            continue
        if g.section == "runtime" and b_ok and c is not None and c.failed:
            runtime.append({**head, "baseline": _sample(b), "candidate": _sample(c), "ratio": None,
                            "worse_factor": None, "verdict": "failed", "why": c.failed})
            continue
        side, here, there = ("baseline", b, cand) if b_ok else ("candidate", c, base)
        if here is None or not here.values:
            # measured on neither side (unavailable or failed on both, or on one side and absent on the other)
            whys = {n: x.failed or x.unavailable for n, x in (("baseline", b), ("candidate", c))
                    if x is not None and (x.failed or x.unavailable)}
            why = (next(iter(whys.values())) if len(set(whys.values())) == 1 and len(whys) == 2 else
                   "; ".join(f"{n}: {w}" for n, w in whys.items()))
            notes.append(f"{labels[key]}: not measured on either side ({why or 'no values'})")
            continue
        other = there.groups.get(key)
        engine_gone = there.unavailable.get(str(here.identity.get("engine")))
        if engine_gone is not None:
            why = f"not measured in the {'candidate' if side == 'baseline' else 'baseline'}: {engine_gone}"
        elif other is not None and (other.failed or other.unavailable):
            where = "candidate" if side == "baseline" else "baseline"
            why = (f"not finished in the {where} (its cells are pending)" if other.failed == PENDING else
                   f"failed in the {where}: {other.failed}" if other.failed else
                   f"not measured in the {where}: {other.unavailable}")
        else:
            mine = base if side == "baseline" else cand
            nearest = _nearest(here, [x for k2, x in there.groups.items() if k2 not in mine.groups and x.values])
            why = ("no such row in the " + ("candidate" if side == "baseline" else "baseline")
                   + (f"; nearest row there differs in {'; '.join(nearest[:4])}" if nearest else ""))
        (only_base if side == "baseline" else only_cand).append({**head, side: _sample(here), "why": why})
    for engine in sorted(set(base.unavailable) | set(cand.unavailable)):
        measured = any(g.identity.get("engine") == engine for g in every)
        if not measured:
            whys = {w for w in (base.unavailable.get(engine), cand.unavailable.get(engine)) if w}
            notes.append(f"{engine}: not measured on either side ({'; '.join(sorted(whys))})")
    counts = {v: sum(r["verdict"] == v for r in accuracy) for v in VERDICTS}
    rcounts = {v: sum(r["verdict"] == v for r in runtime) for v in RUNTIME_VERDICTS}
    regressions = counts["regression"] + rcounts["regression"] + rcounts["failed"]
    missing = len(only_base) if fail_on_missing else 0
    if not accuracy and not runtime:
        raise EchobenchError(_nothing_in_common(base, cand, only_base, only_cand))
    summary = {"compared": len(accuracy) + len(runtime), "accuracy": counts, "runtime": rcounts,
               "regressions": regressions, "only_baseline": len(only_base), "only_candidate": len(only_cand)}
    doc = {
        "kind": base.kind, "metric": metric if base.kind == "results" else None,
        "metric_title": METRIC_TITLES[metric] if base.kind == "results" else None,
        "baseline": {"path": base.path, "kind": base.kind, "suite": base.suite, "environments": base.environments},
        "candidate": {"path": cand.path, "kind": cand.kind, "suite": cand.suite, "environments": cand.environments},
        "rule": {**asdict(rule), **rule.describe()},
        "only_common": only_common, "fail_on_missing": fail_on_missing,
        "summary": summary, "accuracy": accuracy, "runtime": runtime,
        "only_baseline": only_base, "only_candidate": only_cand, "notes": notes,
        "regressed": regressions > 0 or missing > 0,
    }
    doc["exit_code"] = 1 if doc["regressed"] else 0
    return doc


def _kind_text(side: Side) -> str:
    return "results directory" if side.kind == "results" else f"`{side.kind} --json` document"


def _nothing_in_common(base: Side, cand: Side, only_base: list, only_cand: list) -> str:
    text = (f"nothing to compare: {base.path} and {cand.path} share no row (baseline {len(only_base)}, candidate "
            f"{len(only_cand)} row(s), all one-sided)")
    if base.settings is not None and base.settings != cand.settings:
        return text + "; the benchmark settings differ: " + "; ".join(differences(base.settings, cand.settings))
    if only_base and only_cand:
        first = only_base[0]
        why = first["why"].split("; nearest row there differs in ", 1)
        if len(why) == 2:
            return text + f"; e.g. baseline row {first['row']} differs from the candidate's nearest in " + why[1]
    return text


# --- Markdown --------------------------------------------------------------------------------------------


def _fmt_sample(s: dict[str, Any], digits: int = 2) -> str:
    if s["n"] == 1:
        return f"{s['mean']:.{digits}f} (1)"
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f} ({s['n']})"


def _fmt_value(v: float) -> str:
    return f"{v:.4g}" if abs(v) < 1000 else f"{v:,.0f}"


def _bold(verdict: str) -> str:
    return f"**{verdict}**" if verdict in ("regression", "failed") else verdict


def markdown(doc: dict[str, Any]) -> str:
    """The comparison as Markdown, for a pull-request comment or a CI log."""
    from tabulate import tabulate

    s = doc["summary"]
    regressed = s["regressions"]
    head = ("❌ " + f"{regressed} regression(s)" if regressed else
            "❌ rows missing from the candidate" if doc["regressed"] else "✅ no regression")
    lines = [f"## echobench compare: {head}\n",
             f"- baseline: `{doc['baseline']['path']}`" + _side_text(doc["baseline"]),
             f"- candidate: `{doc['candidate']['path']}`" + _side_text(doc["candidate"])]
    acc, rt = s["accuracy"], s["runtime"]
    parts = []
    if doc["accuracy"]:
        parts.append(f"accuracy: {len(doc['accuracy'])} row(s), {acc['regression']} regression(s), "
                     f"{acc['improvement']} improvement(s), {acc['within noise']} within noise")
    if doc["runtime"]:
        parts.append(f"runtime: {len(doc['runtime'])} row(s), {rt['regression']} regression(s), {rt['failed']} failed, "
                     f"{rt['improvement']} improvement(s), {rt['within tolerance']} within tolerance")
    parts.append(f"one side only: {s['only_baseline']} baseline, {s['only_candidate']} candidate"
                 + (" (left out: --only-common)" if doc["only_common"] and (s["only_baseline"] or s["only_candidate"]) else ""))
    lines.append("- " + "; ".join(parts) + "\n")
    bad = [r for r in doc["accuracy"] + doc["runtime"] if r["verdict"] in ("regression", "failed")]
    if bad:
        lines.append("Regressed:\n")
        for r in bad:
            where = f"{r['dataset']} {r['noise']} {r['row']}" if "dataset" in r else f"{r['row']} ({r['measure']})"
            what = (f"{r['difference']:+.2f} points" if "difference" in r else
                    f"failed in the candidate: {r['why']}" if r["verdict"] == "failed" else
                    f"{r['worse_factor']:.2f}× worse")
            lines.append(f"- {where}: {what}")
        lines.append("")
    if doc["accuracy"]:
        rows = [[r["dataset"], r["noise"], r["row"], _fmt_sample(r["baseline"]), _fmt_sample(r["candidate"]),
                 f"{round(r['difference'], 2) + 0.0:+.2f}", "—" if r["p_value"] is None else f"{r['p_value']:.3g}", r["test"],
                 _bold(r["verdict"])] for r in doc["accuracy"]]
        lines += [f"### Accuracy: {doc['metric_title']}, % (mean ± std (seeds))\n",
                  tabulate(rows, ["dataset", "noise", "method", "baseline", "candidate", "Δ", "p", "test", "verdict"],
                           tablefmt="pipe", disable_numparse=True) + "\n"]
    if doc["runtime"]:
        rows = []
        for r in doc["runtime"]:
            cand = "failed" if r["verdict"] == "failed" else _fmt_value(r["candidate"]["mean"])
            rows.append([r["row"], f"{r['measure']} ({r['better']} is better)", _fmt_value(r["baseline"]["mean"]), cand,
                         "—" if r["ratio"] is None else f"{r['ratio']:.3f}", _bold(r["verdict"])])
        lines += ["### Runtime: candidate / baseline\n",
                  tabulate(rows, ["row", "measure", "baseline", "candidate", "ratio", "verdict"], tablefmt="pipe",
                           disable_numparse=True) + "\n"]
    if not doc["only_common"]:
        for side, key in (("baseline", "only_baseline"), ("candidate", "only_candidate")):
            rows = doc[key]
            if not rows:
                continue
            lines.append(f"### Only in the {side} ({len(rows)})\n")
            for r in rows[:LISTED]:
                where = f"{r['dataset']} {r['noise']} {r['row']}" if "dataset" in r else f"{r['row']} ({r['measure']})"
                lines.append(f"- {where}: {r['why']}")
            if len(rows) > LISTED:
                lines.append(f"- … and {len(rows) - LISTED} more (`--json` lists all)")
            lines.append("")
    rules = [doc["rule"]["accuracy"]] if doc["accuracy"] else []
    rules += [doc["rule"]["runtime"]] if doc["runtime"] else []
    lines.append("Rule: " + "; runtime: ".join(rules) + ".")
    if doc["fail_on_missing"] and s["only_baseline"]:
        lines.append(f"\n--fail-on-missing: {s['only_baseline']} baseline row(s) have no result in the candidate.")
    if doc["notes"]:
        lines += ["", "Notes:", *[f"- {n}" for n in doc["notes"]]]
    return "\n".join(lines) + "\n"


def _side_text(side: dict[str, Any]) -> str:
    what = f" (suite `{side['suite']}`)" if side.get("suite") else f" ({side['kind']})" if side["kind"] != "results" else ""
    envs = side.get("environments") or []
    return what + (": " + " | ".join(envs[:3]) + (f" | {len(envs) - 3} more" if len(envs) > 3 else "") if envs else "")
