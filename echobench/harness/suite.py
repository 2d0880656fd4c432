"""Suites: YAML files that expand to cells (dataset × noise × method × seed × protocol).

A suite file (see `echobench/suites/*.yaml`):

    name: demo
    description: one line
    datasets: {shapes: {n_train: 4000}}   # name → loader options (or a list of names)
    noise: [symmetric:0.3, pairflip:0.45]  # KIND:RATE, or human:SET for CIFAR-N
    methods: [ce]                          # or {name: {hyperparameter: value}}
    seeds: [1, 2, 3]
    protocol: demo                         # or {name: demo, epochs: 5}
    include: [my_methods.py]               # optional: plugin files or folders, relative to the suite file
    blocks:                                # optional: each block overrides the keys above
      - {datasets: [cifar10n], noise: [human:worst]}

`include:` (a path or a list of them; top level only) imports plugins (`echobench.plugins`) before
the names are checked, exactly as `--include` does; `Suite.includes` keeps their absolute paths, which
the runner adds to the `RunContext` so that every executor's processes import them too. A method may
also be named `module:Class` (an importable module), and installed distributions register names
through entry points.

Every cell is a `RunSpec` whose canonical JSON (options, method hyperparameters and protocol all
resolved to their full values) hashes to a stable run id: the same experiment always lands in the
same cell directory, whichever suite asked for it.

Kinds. A suite, or one of its blocks, has a `kind` (default `train`, the cells above). Two more kinds
cover the paper's tables that are not training runs; their cells go through the same runner and
executors (`echobench.harness.cells` dispatches on the kind), and `Suite.expand` returns training
cells only:

- `selection` (the paper's Table 4, §5.3): one `SelectionSpec` per dataset × noise × seed, EchoSelect
  and the peer selectors measured on that setting's training split (`echobench select` as a cell).
  Keys: `datasets`, `noise`, `seeds`, `protocol` (whose validation split is held out, as in training)
  and an optional `selection: {peers: [...], precisions: [...], extractor, extractor_options, tau,
  strict, engine, engine_options, base_seed, generation_batch_size}`.
- `runtime` (appendix D, Tables 6 and 7): one `RuntimeSpec` per resolution × batch size, EchoMod's
  engines against diffusers' stock pipeline (`echobench bench engines` as a cell). Key `runtime`: a
  variant per device type, `{cuda: {...}, cpu: {...}}`, each with `config` (sd15 or tiny),
  `random_init`, `engines`, `resolutions`, `batch_sizes`, `steps`, `repeats`, `seed`. A run uses the
  variant of the device it runs on.

Keys a block inherits from the top level but that its kind does not use are dropped; a block that
sets one itself is refused.

Everything is checked here, when the suite is parsed (so `run --dry-run` refuses what `run` would),
before anything is loaded or written: the YAML itself (`echobench.yamlsafe`: no duplicate keys,
bounded aliases), the name (a plain folder name: it becomes `runs/NAME`), each axis (non-empty),
seeds (non-negative integers), dataset options (against the loader's keyword parameters), the
protocol (a name or a mapping, its fields against `Protocol`) and each method's hyperparameters
(against its `Params` dataclass), with the one type check of `echobench.checks`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from echobench.checks import check_fields, check_seed, check_seeds, safe_name
from echobench.data import DATASETS
from echobench.data.base import check_dataset_options, dataset_identity
from echobench.errors import EchobenchError
from echobench.training.method import METHODS
from echobench.data.noise import NoiseSpec
from echobench.training.protocols import get_protocol
from echobench.registry import Registry, unknown_name_error

SUITE_KEYS = {"name", "description", "kind", "datasets", "noise", "methods", "seeds", "protocol", "selection",
              "runtime", "blocks", "include"}
BLOCK_KEYS = SUITE_KEYS - {"name", "description", "blocks", "include"}
KINDS = ("train", "selection", "runtime")
# kind → (required keys, optional keys) of a block of that kind (besides `kind`)
KIND_KEYS = {
    "train": ({"datasets", "noise", "methods", "seeds", "protocol"}, set()),
    "selection": ({"datasets", "noise", "seeds", "protocol"}, {"selection"}),
    "runtime": ({"runtime"}, set()),
}
SELECTION_KEYS = {"peers", "precisions", "extractor", "extractor_options", "tau", "strict", "engine",
                  "engine_options", "base_seed", "generation_batch_size"}
RUNTIME_KEYS = {"config", "random_init", "engines", "resolutions", "batch_sizes", "steps", "repeats", "seed"}
RUNTIME_DEVICES = ("cuda", "cpu")


def _suite_files() -> dict[str, Path]:
    folder = resources.files("echobench.suites")
    return {p.name[:-5]: Path("echobench/suites") / p.name for p in folder.iterdir() if p.name.endswith(".yaml")}


# Name → the suite's file inside the package (a Path, so the registry does not treat it as lazy).
SUITES: Registry[Path] = Registry("suite")
for _name, _path in _suite_files().items():
    SUITES.add(_name, _path)


class CellSpec:
    """What every kind of cell spec shares: a canonical JSON of all its fields, which hashes to its
    stable run id (the same experiment always lands in the same cell directory), and the round trip
    through the dict stored in config.json. Each kind has a `kind` and a `label()` for progress lines."""

    def canonical(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True, separators=(",", ":"))

    @property
    def run_id(self) -> str:
        return hashlib.sha256(self.canonical().encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})


@dataclass(frozen=True)
class RunSpec(CellSpec):
    dataset: str
    dataset_options: dict
    noise: str
    method: str
    method_params: dict
    seed: int
    protocol: dict

    kind = "train"  # a class attribute, not a field: it is not part of the canonical JSON (run ids stay put)

    def label(self) -> str:
        return f"{self.dataset} {self.noise} {self.method} seed={self.seed}"


@dataclass(frozen=True)
class SelectionSpec(CellSpec):
    """A `selection` cell (the paper's Table 4, §5.3 "Sensitivity Analysis"): EchoSelect and the peer
    selectors on one noisy setting, measured against the clean labels of its training split.

    The setting (dataset, noise, seed, protocol's validation split) is built exactly as a training
    cell builds it, so the pairs EchoMod generates here are the `echoalign` cells' pairs (one cache).
    `params` are `EchoAlignParams` fields with the engine and extractor resolved to names; `peers` maps
    selector names to their options; `precisions` are the fixed selection accuracies (fractions)."""

    dataset: str
    dataset_options: dict
    noise: str
    seed: int
    protocol: dict
    params: dict
    peers: dict
    precisions: list
    kind: str = "selection"

    def setting_spec(self) -> RunSpec:
        """The training cell of `echoalign` on the same setting: same noisy labels, split and EchoMod pairs."""
        return RunSpec(self.dataset, dict(self.dataset_options), self.noise, "echoalign", {}, self.seed,
                       dict(self.protocol))

    def label(self) -> str:
        return f"{self.dataset} {self.noise} seed={self.seed} echoselect+{'+'.join(self.peers) or 'no peers'}"


@dataclass(frozen=True)
class RuntimeSpec(CellSpec):
    """A `runtime` cell (the paper's appendix D, Tables 6 and 7): `echobench bench engines` at one
    resolution and batch size on one device type; EchoMod's engines against diffusers' stock
    `StableDiffusionControlNetPipeline` on the same inputs, wall seconds per generated image."""

    device_type: str
    config: str
    random_init: bool
    engines: list
    resolution: int
    batch_size: int
    steps: int
    repeats: int
    seed: int
    # The device's name (a GPU model, or the CPU's): part of the run id, so that a results directory
    # measured on one GPU is not taken for finished on another. "" when the device is not at hand
    # (a dry run for --device cuda on a machine without one).
    device_name: str = ""
    kind: str = "runtime"

    def label(self) -> str:
        return (f"{self.config} {self.resolution}² batch {self.batch_size} {self.steps} steps on {self.device_type}: "
                f"{', '.join(self.engines)} vs stock pipeline")


@dataclass
class Suite:
    name: str
    description: str
    blocks: list[dict]
    source: str
    includes: tuple[str, ...] = ()  # plugin files and folders of its `include:`, absolute

    @property
    def kinds(self) -> list[str]:
        """The kinds of cells this suite has, in `KINDS` order."""
        present = {b["kind"] for b in self.blocks}
        return [k for k in KINDS if k in present]

    def expand(self, seeds: list[int] | None = None) -> list[RunSpec]:
        """All training cells in a stable order; `seeds` replaces the suite's seeds. Blocks of another
        kind are left out (`expand_selection`, `expand_runtime`)."""
        seeds = check_seeds(seeds, "--seeds") if seeds is not None else None
        cells: dict[str, RunSpec] = {}
        for block in self.blocks:
            if block["kind"] != "train":
                continue
            protocol = _protocol(block["protocol"])
            for (ds, ds_opts), noise, (method, overrides_m), seed in itertools.product(
                block["datasets"], block["noise"], block["methods"], seeds or block["seeds"]
            ):
                method_cls = METHODS.get(method)
                params = dataclasses.asdict(method_cls.resolve_params(ds, overrides_m))
                spec = RunSpec(ds, dataset_identity(ds, ds_opts), noise, method, params, int(seed), protocol)
                cells.setdefault(spec.run_id, spec)
        return list(cells.values())

    def expand_selection(self, seeds: list[int] | None = None) -> list[SelectionSpec]:
        """The `selection` cells (Table 4) in a stable order; `seeds` replaces the suite's seeds."""
        seeds = check_seeds(seeds, "--seeds") if seeds is not None else None
        cells: dict[str, SelectionSpec] = {}
        for block in self.blocks:
            if block["kind"] != "selection":
                continue
            protocol = _protocol(block["protocol"])
            sel = block["selection"]
            for (ds, ds_opts), noise, seed in itertools.product(block["datasets"], block["noise"], seeds or block["seeds"]):
                params = _selection_params(ds, sel["params"])
                spec = SelectionSpec(ds, dataset_identity(ds, ds_opts), noise, int(seed), protocol, params,
                                     sel["peers"], sel["precisions"])
                cells.setdefault(spec.run_id, spec)
        return list(cells.values())

    def runtime_variants(self) -> set[str]:
        """The device types (`cuda`, `cpu`) for which the suite's runtime blocks have a variant."""
        return {d for b in self.blocks if b["kind"] == "runtime" for d in b["runtime"]}

    def expand_runtime(self, device_type: str, device_name: str = "") -> list[RuntimeSpec]:
        """The `runtime` cells (Tables 6/7) of the variant for `device_type` ("cuda" or "cpu") on the
        device called `device_name`."""
        cells: dict[str, RuntimeSpec] = {}
        for block in self.blocks:
            if block["kind"] != "runtime":
                continue
            variant = block["runtime"].get(device_type)
            if variant is None:
                raise EchobenchError(
                    f"suite {self.name}: its runtime block has no `{device_type}` variant "
                    f"(it has {', '.join(sorted(block['runtime']))}); run with --device "
                    f"{'cuda' if device_type == 'cpu' else 'cpu'} or add a `{device_type}:` variant to the block")
            for resolution, batch in itertools.product(variant["resolutions"], variant["batch_sizes"]):
                spec = RuntimeSpec(device_type, variant["config"], variant["random_init"], list(variant["engines"]),
                                   int(resolution), int(batch), variant["steps"], variant["repeats"], variant["seed"],
                                   device_name)
                cells.setdefault(spec.run_id, spec)
        return list(cells.values())


def _protocol(protocol_cfg: Any) -> dict:
    """A protocol, resolved to all its fields: a registered name, or a mapping {name: NAME, field: value}
    whose fields override the named protocol's (checked against `Protocol`'s annotations)."""
    if isinstance(protocol_cfg, str):
        return get_protocol(protocol_cfg).to_dict()
    if not isinstance(protocol_cfg, dict) or not isinstance(protocol_cfg.get("name"), str):
        raise EchobenchError(f"`protocol` must be a protocol name (e.g. smoke) or a mapping with a name and the "
                             f"fields to change (e.g. {{name: smoke, epochs: 5}}), got {protocol_cfg!r}")
    return get_protocol(protocol_cfg["name"], {k: v for k, v in protocol_cfg.items() if k != "name"}).to_dict()


def _selection_params(dataset: str, overrides: dict) -> dict:
    """`EchoAlignParams` for a selection cell, the dataset's default engine and extractor written out."""
    from echobench.echoalign.methods import EchoAlignParams
    from echobench.echoalign.echomod import default_engine
    from echobench.echoalign.features import default_extractor

    params = dataclasses.asdict(EchoAlignParams(**overrides))
    params["engine"] = params["engine"] or default_engine(dataset)
    params["extractor"] = params["extractor"] or default_extractor(dataset)
    return params


def load_suite(name_or_path: str) -> Suite:
    """A registered suite name (`demo`, `smoke`, ...) or a path to a YAML file."""
    from echobench.yamlsafe import load_yaml

    path = Path(name_or_path)
    if name_or_path.endswith((".yaml", ".yml")) or path.exists():
        if not path.is_file():
            raise EchobenchError(f"suite file {path} does not exist")
        source = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise EchobenchError(f"suite {source} cannot be read as UTF-8 text: {exc}") from None
    else:
        rel = SUITES.get(name_or_path)
        text = resources.files("echobench.suites").joinpath(rel.name).read_text()
        source = str(rel)
    return parse_suite(load_yaml(text, f"suite {source}"), source)


def _check_mapping(value: Any, known: set[str], source: str, where: str = "") -> None:
    """EchobenchError unless `value` is a mapping whose keys are all in `known`; `where` names the
    part of suite `source` being read ("" for the whole file, "a block", "`selection`")."""
    place = f"suite {source}" + (f": {where}" if where else "")
    if not isinstance(value, dict):
        raise EchobenchError(f"{place} must be a mapping with keys {sorted(known)}")
    unknown = sorted(set(value) - known)
    if unknown:
        raise EchobenchError(f"{place}: unknown key(s) {unknown}; known: {sorted(known)}")


def parse_suite(raw: Any, source: str) -> Suite:
    _check_mapping(raw, SUITE_KEYS, source)
    if raw.get("name") is None:
        raise EchobenchError(f"suite {source} needs a name")
    name = safe_name(raw["name"], f"suite {source}: `name`")  # it becomes a folder: runs/NAME
    includes = _includes(raw.get("include"), source)
    top = {k: raw[k] for k in BLOCK_KEYS if k in raw}
    raw_blocks = raw.get("blocks", [])
    if not isinstance(raw_blocks, list) or not all(isinstance(b, dict) for b in raw_blocks):
        raise EchobenchError(f"suite {source}: `blocks` must be a list of mappings")
    blocks = []
    for b in raw_blocks or [{}]:
        _check_mapping(b, BLOCK_KEYS, source, "a block")
        kind = b.get("kind", top.get("kind", "train"))
        if kind not in KINDS:
            raise unknown_name_error("suite kind", str(kind), list(KINDS))
        required, optional = KIND_KEYS[kind]
        own = set(b) if raw_blocks else set(top)
        stray = sorted(own - required - optional - {"kind"})
        if stray:
            raise EchobenchError(f"suite {source}: a `{kind}` block takes {sorted(required | optional)}, not {stray}")
        merged = {k: v for k, v in dict(top, **b).items() if k in required | optional}
        blocks.append(_normalize_block({**merged, "kind": kind}, source))
    return Suite(name, str(raw.get("description", "")), blocks, source, includes)


def _includes(value: Any, source: str) -> tuple[str, ...]:
    """A suite's `include:` (a path or a list of them, relative to the suite file), imported now."""
    from echobench.plugins import load_includes, resolve_includes

    if value is None:
        return ()
    paths = [value] if isinstance(value, str) else value
    if not isinstance(paths, list) or not paths or not all(isinstance(p, str) for p in paths):
        raise EchobenchError(f"suite {source}: `include` must be a path or a list of paths (.py files or folders, "
                             f"relative to the suite file), got {value!r}")
    base = Path(source).parent if Path(source).is_file() else None
    includes = resolve_includes(paths, base, what=f"suite {source}: include")
    load_includes(includes)
    return includes


def _as_named(value: Any, what: str, source: str) -> list[tuple[str, dict]]:
    """A name, a list of names (or of one-key mappings {name: options}) or a mapping name → options,
    as (name, options) pairs; options are a mapping (or empty). An empty axis is an error."""
    if isinstance(value, str):
        value = [value]
    if isinstance(value, dict):
        pairs = list(value.items())
    elif isinstance(value, list):
        pairs = []
        for item in value:
            if isinstance(item, dict) and len(item) != 1:
                raise EchobenchError(f"suite {source}: an entry of `{what}` is a mapping with {len(item)} keys; "
                                     f"write one {{name: {{option: value}}}} per entry, got {item!r}")
            pairs.append(next(iter(item.items())) if isinstance(item, dict) else (item, None))
    else:
        pairs = []
    if not pairs:
        raise EchobenchError(f"suite {source}: `{what}` must be a non-empty list or mapping, got {value!r}")
    for name, options in pairs:
        if not isinstance(name, (str, int)) or isinstance(name, bool):
            raise EchobenchError(f"suite {source}: `{what}` names must be strings, got {name!r}")
        if options is not None and not isinstance(options, dict):
            raise EchobenchError(f"suite {source}: the options of {what} entry {name!r} must be a mapping "
                                 f"{{option: value}}, got {options!r}")
    return [(str(name), dict(options or {})) for name, options in pairs]


def _normalize_block(block: dict, source: str) -> dict:
    kind = block["kind"]
    missing = sorted(KIND_KEYS[kind][0] - set(block))
    if missing:
        raise EchobenchError(f"suite {source}: missing key(s) {missing}" + ("" if kind == "train" else f" in its `{kind}` block"))
    if kind == "runtime":
        return {"kind": kind, "runtime": _normalize_runtime(block["runtime"], source)}
    datasets = _as_named(block["datasets"], "datasets", source)
    for name, options in datasets:
        if name not in DATASETS:
            raise unknown_name_error("dataset", name, DATASETS.names())
        _in_suite(source, check_dataset_options, name, options)
    noise = block["noise"] if isinstance(block["noise"], list) else [block["noise"]]
    if not noise or not all(isinstance(n, str) for n in noise):
        raise EchobenchError(f"suite {source}: `noise` must be a non-empty list of KIND:RATE (e.g. "
                             f"[symmetric:0.3]) or human:SET, got {block['noise']!r}")
    noise = [str(NoiseSpec.parse(n)) for n in noise]
    seeds = _in_suite(source, check_seeds, block["seeds"], "`seeds`")
    protocol = _in_suite(source, _protocol, block["protocol"])  # resolved: `expand` resolves it again, unchanged
    if kind == "selection":
        return {"kind": kind, "datasets": datasets, "noise": noise, "seeds": seeds, "protocol": protocol,
                "selection": _normalize_selection(block.get("selection") or {}, source)}
    methods = _as_named(block["methods"], "methods", source)
    for name, overrides in methods:
        method_cls = METHODS.get(name)  # raises with suggestions
        for dataset, _ in datasets:  # the hyperparameters' names and types, as `expand` resolves them
            _in_suite(source, method_cls.resolve_params, dataset, overrides)
    return {"kind": kind, "datasets": datasets, "methods": methods, "noise": noise, "seeds": seeds,
            "protocol": protocol}


def _in_suite(source: str, check, *args):
    """`check(*args)`, its EchobenchError prefixed with the suite it is about."""
    try:
        return check(*args)
    except EchobenchError as exc:
        raise EchobenchError(f"suite {source}: {exc}") from None


def _normalize_selection(sel: Any, source: str) -> dict:
    """A selection block's `selection:` mapping → {"peers": {name: options}, "precisions": [...], "params": {...}}."""
    from echobench.echoalign.methods import EchoAlignParams
    from echobench.echoalign.echomod import ENGINES
    from echobench.echoalign.echoselect import TABLE4_PRECISIONS, check_tau
    from echobench.echoalign.features import EXTRACTORS
    from echobench.training.selectors import SELECTORS

    _check_mapping(sel, SELECTION_KEYS, source, "`selection`")
    peers = dict(_as_named(sel["peers"], "selection.peers", source)) if sel.get("peers") else {}
    for name in peers:
        SELECTORS.get(name)  # raises with suggestions
    precisions = sel.get("precisions", list(TABLE4_PRECISIONS))
    if (not isinstance(precisions, list) or not precisions
            or not all(isinstance(p, (int, float)) and not isinstance(p, bool) and 0 < p <= 1 for p in precisions)):
        raise EchobenchError(f"suite {source}: `selection.precisions` must be a list of fractions in (0, 1], "
                             f"e.g. [0.96, 0.99], got {precisions!r}")
    params = {k: sel[k] for k in SELECTION_KEYS - {"peers", "precisions"} if k in sel}
    _in_suite(source, check_fields, EchoAlignParams, params, "`selection`")  # names and types of the fields
    if params.get("generation_batch_size", 1) < 1:
        raise EchobenchError(f"suite {source}: `selection.generation_batch_size` must be at least 1")
    if params.get("extractor"):
        EXTRACTORS.get(params["extractor"])
    if params.get("engine"):
        ENGINES.get(params["engine"])
    if params.get("tau") is not None:
        check_tau(params["tau"])
    return {"peers": peers, "precisions": sorted(float(p) for p in precisions), "params": params}


def _positive_ints(value: Any, what: str, source: str) -> list[int]:
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values):
        raise EchobenchError(f"suite {source}: `{what}` must be a positive integer or a list of them, got {value!r}")
    return values


def _positive_int(value: Any, what: str, source: str, maximum: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1 or (maximum and value > maximum):
        raise EchobenchError(f"suite {source}: `{what}` must be a positive integer"
                             + (f" up to {maximum}" if maximum else "") + f", got {value!r}")
    return value


def _normalize_runtime(runtime: Any, source: str) -> dict:
    """A runtime block's `runtime:` mapping → {device type: variant with every key filled in}."""
    from echobench.bench.engines import parse_row
    from echobench.echoalign.diffusion import MAX_STEPS
    from echobench.echoalign.diffusion_configs import DIFFUSION_CONFIGS
    from echobench.echoalign.echomod import ENGINES

    if not isinstance(runtime, dict) or not runtime or set(runtime) - set(RUNTIME_DEVICES):
        raise EchobenchError(f"suite {source}: `runtime` must map a device type ({' or '.join(RUNTIME_DEVICES)}) to "
                             f"its settings, e.g. {{cpu: {{config: tiny}}}}; got keys {sorted(runtime) if isinstance(runtime, dict) else runtime!r}")
    out = {}
    for device_type, variant in runtime.items():
        where = f"runtime.{device_type}"
        variant = variant or {}
        _check_mapping(variant, RUNTIME_KEYS, source, f"`{where}`")
        config = variant.get("config", "tiny")
        if config not in DIFFUSION_CONFIGS:
            raise unknown_name_error("model configuration", str(config), sorted(DIFFUSION_CONFIGS))
        engines = variant.get("engines", ["eager"])
        engines = [engines] if isinstance(engines, str) else engines
        if not isinstance(engines, list) or not engines:
            raise EchobenchError(f"suite {source}: `{where}.engines` must be a non-empty list of engine rows")
        for row in engines:
            ENGINES.get(parse_row(str(row))[0])  # NAME[option=value,...]; unknown names raise with suggestions
        random_init = variant.get("random_init", True)
        if not isinstance(random_init, bool):
            raise EchobenchError(f"suite {source}: `{where}.random_init` must be true or false")
        seed = _in_suite(source, check_seed, variant.get("seed", 0), f"`{where}.seed`")
        out[device_type] = {
            "config": config, "random_init": random_init or config == "tiny",  # tiny is always random weights
            "engines": [str(e) for e in engines],
            "resolutions": _positive_ints(variant.get("resolutions", [DIFFUSION_CONFIGS[config].resolution]), f"{where}.resolutions", source),
            "batch_sizes": _positive_ints(variant.get("batch_sizes", [4]), f"{where}.batch_sizes", source),
            "steps": _positive_int(variant.get("steps", 20), f"{where}.steps", source, MAX_STEPS),
            "repeats": _positive_int(variant.get("repeats", 1), f"{where}.repeats", source),
            "seed": seed,
        }
        if min(out[device_type]["resolutions"]) < 8:
            raise EchobenchError(f"suite {source}: `{where}.resolutions` must be at least 8 px")
    return out
