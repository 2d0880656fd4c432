"""`echobench doctor`: what this installation can do — extras, devices, cache locations."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from echobench.cli.options import add_json, context
from echobench.environment import cpu_name, git_revision, package_versions
from echobench.harness.context import RunContext
from echobench.paths import DATA_ENV, settings

# extra → the modules it provides (see pyproject.toml's optional-dependencies)
EXTRAS = {
    "clip": ["open_clip", "faiss"],
    "gpu": ["diffusers", "transformers"],
    "onnx": ["onnxruntime", "onnx"],
    "tensorrt": ["tensorrt"],
    "ray": ["ray"],
    "dev": ["pytest", "pytest_benchmark"],
}


def doctor_report(ctx: RunContext) -> dict[str, Any]:
    import torch

    from echobench.engines.export import engine_cache_root

    extras = {name: {m: importlib.util.find_spec(m) is not None for m in modules} for name, modules in EXTRAS.items()}
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    root = Path(ctx.data_root)
    files = {
        "cifar10": (root / "cifar-10-batches-py").is_dir(),
        "cifar100": (root / "cifar-100-python").is_dir(),
        "cifar10n labels": (root / "cifar-n" / "CIFAR-10_human.pt").is_file(),
        "cifar100n labels": (root / "cifar-n" / "CIFAR-100_human.pt").is_file(),
    }
    return {
        "packages": package_versions(),
        "git": git_revision(),
        "extras": {k: all(v.values()) for k, v in extras.items()},
        "extras_detail": extras,
        "devices": {"cpu": cpu_name(), "cpu_threads": torch.get_num_threads(), "cuda": gpus},
        "data_root": str(root),
        "data_root_from": f"${DATA_ENV}" if DATA_ENV in settings() else "default (~/.cache/echobench)",
        "cached_datasets": files,
        "echomod_cache": ctx.cache_dir,
        "engine_cache": str(engine_cache_root()),
    }


def format_doctor(doc: dict[str, Any]) -> str:
    ok = lambda b: "yes" if b else "no"  # noqa: E731
    lines = ["packages:"] + [f"  {k:24s} {v}" for k, v in doc["packages"].items()]
    lines.append(f"git revision: {doc['git']}")
    lines.append("extras (pip install 'echobench[NAME]'):")
    for name, installed in doc["extras"].items():
        missing = [m for m, found in doc["extras_detail"][name].items() if not found]
        lines.append(f"  {name:10s} {ok(installed)}" + (f"  (missing: {', '.join(missing)})" if missing else ""))
    lines.append(f"cpu: {doc['devices']['cpu']} ({doc['devices']['cpu_threads']} torch threads)")
    lines.append(f"cuda: {', '.join(doc['devices']['cuda']) or 'no GPU visible'}")
    lines.append(f"data root: {doc['data_root']}  [{doc['data_root_from']}]")
    lines += [f"  {k:18s} {'present' if v else 'not downloaded'}" for k, v in doc["cached_datasets"].items()]
    lines.append(f"EchoMod cache: {doc['echomod_cache']}  [$ECHOBENCH_CACHE or DATA_ROOT/echomod]")
    lines.append(f"engine cache (ONNX graphs, TensorRT plans): {doc['engine_cache']}")
    return "\n".join(lines)


EXAMPLES = """examples:
  echobench doctor
  echobench doctor --json"""


def add_parser(add) -> None:
    doctor = add("doctor", "Show installed extras, devices and cache locations.", EXAMPLES, cmd_doctor)
    add_json(doctor)


def cmd_doctor(args) -> int:
    doc = doctor_report(context(args))
    print(json.dumps(doc, indent=2) if args.json else format_doctor(doc))
    return 0
