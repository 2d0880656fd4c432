"""What ran a cell (its provenance): package versions, device, git revision, host. Recorded beside every result."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("echobench", "torch", "torchvision", "numpy", "opencv-python-headless", "diffusers",
            "open_clip_torch", "faiss-cpu", "faiss-gpu", "onnxruntime", "onnxruntime-gpu", "tensorrt", "ray")


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def git_revision() -> str:
    """The checkout's commit (with '-dirty' for local changes), or 'unknown' outside a git checkout."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return "unknown"
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (sha + ("-dirty" if dirty else "")) if sha else "unknown"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_description(device: str) -> dict[str, Any]:
    import torch

    if device.startswith("cuda"):
        index = torch.device(device).index or 0
        props = torch.cuda.get_device_properties(index)
        return {"type": "cuda", "name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                "cuda": torch.version.cuda, "capability": f"{props.major}.{props.minor}"}
    return {"type": "cpu", "name": cpu_name(), "threads": torch.get_num_threads(), "cores": os.cpu_count()}


def environment(device: str) -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(),
        "device": device_description(device),
        "git": git_revision(),
        "host": platform.node(),
    }


def resolve_device(requested: str = "auto") -> str:
    """'auto' → 'cuda' when a GPU is visible, else 'cpu'; an explicit CUDA device must exist."""
    import torch

    from echobench.errors import EchobenchError

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cpu":
        return "cpu"
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise EchobenchError(f"device {requested!r} requested but no CUDA GPU is visible; use --device cpu or auto")
        try:
            index = torch.device(requested).index or 0
        except RuntimeError:
            raise EchobenchError(f"device {requested!r} is not a valid device name; use cpu, cuda or cuda:N") from None
        if index >= torch.cuda.device_count():
            raise EchobenchError(f"device {requested!r} does not exist: {torch.cuda.device_count()} GPU(s) visible")
        return requested
    raise EchobenchError(f"device {requested!r} is not one of auto, cpu, cuda, cuda:N")
