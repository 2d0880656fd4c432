"""Suites: YAML files that expand to cells (dataset × noise × method × seed × protocol).

A suite file (see `echobench/suites/*.yaml`):

    name: demo
    description: one line
    datasets: {shapes: {n_train: 4000}}   # name → loader options (or a list of names)
    noise: [symmetric:0.3, pairflip:0.45]  # KIND:RATE, or human:SET for CIFAR-N
    methods: [ce]                          # or {name: {hyperparameter: value}}
    seeds: [1, 2, 3]
    protocol: demo                         # or {name: demo, epochs: 5}
    blocks:                                # optional: each block overrides the keys above
      - {datasets: [cifar10n], noise: [human:worst]}

Every cell is a `RunSpec` whose canonical JSON (options, method hyperparameters and protocol all
resolved to their full values) hashes to a stable run id: the same experiment always lands in the
same cell directory, whichever suite asked for it.
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

from .datasets import DATASETS
from .errors import EchobenchError
from .methods import METHODS
from .noise import NoiseSpec
from .protocols import get_protocol
from .registry import Registry, unknown_name_error

SUITE_KEYS = {"name", "description", "datasets", "noise", "methods", "seeds", "protocol", "blocks"}
BLOCK_KEYS = SUITE_KEYS - {"name", "description", "blocks"}


def _suite_files() -> dict[str, Path]:
    folder = resources.files("echobench.suites")
    return {p.name[:-5]: Path("echobench/suites") / p.name for p in folder.iterdir() if p.name.endswith(".yaml")}


# Name → the suite's file inside the package (a Path, so the registry does not treat it as lazy).
SUITES: Registry[Path] = Registry("suite")
for _name, _path in _suite_files().items():
    SUITES.add(_name, _path)


@dataclass(frozen=True)
class RunSpec:
    dataset: str
    dataset_options: dict
    noise: str
    method: str
    method_params: dict
    seed: int
    protocol: dict

    def canonical(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True, separators=(",", ":"))

    @property
    def run_id(self) -> str:
        return hashlib.sha256(self.canonical().encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RunSpec":
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls)})


@dataclass
class Suite:
    name: str
    description: str
    blocks: list[dict]
    source: str

    def expand(self, seeds: list[int] | None = None) -> list[RunSpec]:
        """All cells in a stable order; `seeds` replaces the suite's seeds."""
        cells: dict[str, RunSpec] = {}
        for block in self.blocks:
            protocol_cfg = block["protocol"]
            proto_name, overrides = (protocol_cfg, {}) if isinstance(protocol_cfg, str) else (
                protocol_cfg.get("name"), {k: v for k, v in protocol_cfg.items() if k != "name"})
            protocol = get_protocol(proto_name, overrides).to_dict()
            for (ds, ds_opts), noise, (method, overrides_m), seed in itertools.product(
                block["datasets"], block["noise"], block["methods"], seeds or block["seeds"]
            ):
                method_cls = METHODS.get(method)
                params = dataclasses.asdict(method_cls.resolve_params(ds, overrides_m))
                spec = RunSpec(ds, dict(sorted(ds_opts.items())), noise, method, params, int(seed), protocol)
                cells.setdefault(spec.run_id, spec)
        return list(cells.values())


def load_suite(name_or_path: str) -> Suite:
    """A registered suite name (`demo`, `smoke`, ...) or a path to a YAML file."""
    import yaml

    path = Path(name_or_path)
    if name_or_path.endswith((".yaml", ".yml")) or path.exists():
        if not path.is_file():
            raise EchobenchError(f"suite file {path} does not exist")
        text, source = path.read_text(), str(path)
    else:
        rel = SUITES.get(name_or_path)
        text = resources.files("echobench.suites").joinpath(rel.name).read_text()
        source = str(rel)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise EchobenchError(f"suite {source} is not valid YAML: {exc}") from None
    return parse_suite(raw, source)


def parse_suite(raw: Any, source: str) -> Suite:
    if not isinstance(raw, dict):
        raise EchobenchError(f"suite {source} must be a mapping with keys {sorted(SUITE_KEYS)}")
    unknown = sorted(set(raw) - SUITE_KEYS)
    if unknown:
        raise EchobenchError(f"suite {source}: unknown key(s) {unknown}; known: {sorted(SUITE_KEYS)}")
    if not raw.get("name"):
        raise EchobenchError(f"suite {source} needs a name")
    top = {k: raw[k] for k in BLOCK_KEYS if k in raw}
    blocks = [dict(top, **b) for b in raw.get("blocks", [])] or [top]
    return Suite(str(raw["name"]), str(raw.get("description", "")), [_normalize_block(b, source) for b in blocks], source)


def _as_named(value: Any, what: str, source: str) -> list[tuple[str, dict]]:
    """A list of names or a mapping name → options, as (name, options) pairs."""
    if isinstance(value, str):
        value = [value]
    if isinstance(value, dict):
        return [(str(k), dict(v or {})) for k, v in value.items()]
    if isinstance(value, list) and value:
        out = []
        for item in value:
            if isinstance(item, dict) and len(item) == 1:
                (k, v), = item.items()
                out.append((str(k), dict(v or {})))
            else:
                out.append((str(item), {}))
        return out
    raise EchobenchError(f"suite {source}: `{what}` must be a non-empty list or mapping")


def _normalize_block(block: dict, source: str) -> dict:
    missing = sorted(BLOCK_KEYS - set(block))
    if missing:
        raise EchobenchError(f"suite {source}: missing key(s) {missing}")
    datasets = _as_named(block["datasets"], "datasets", source)
    for name, _ in datasets:
        if name not in DATASETS:
            raise unknown_name_error("dataset", name, DATASETS.names())
    methods = _as_named(block["methods"], "methods", source)
    for name, _ in methods:
        METHODS.get(name)  # raises with suggestions
    noise = [str(NoiseSpec.parse(n)) for n in (block["noise"] if isinstance(block["noise"], list) else [block["noise"]])]
    seeds = block["seeds"] if isinstance(block["seeds"], list) else [block["seeds"]]
    if not seeds or not all(isinstance(s, int) for s in seeds):
        raise EchobenchError(f"suite {source}: seeds must be a list of integers")
    return {"datasets": datasets, "methods": methods, "noise": noise, "seeds": seeds, "protocol": block["protocol"]}
