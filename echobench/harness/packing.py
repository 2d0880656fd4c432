"""Several cells per GPU: `echobench run --cells-per-gpu K|auto`.

One training cell of the paper's ResNet-18 at batch 128 on 32² images leaves a large GPU mostly idle
(its step is bound by kernel launches and Python, not arithmetic): K cells side by side on one GPU
fill it. The local executor runs K worker processes per visible GPU (`local_workers.local_plan`), Ray
asks for `num_gpus = 1/K` per task (`ray_tasks._task_resources`). On CPU the host is the one device:
K worker processes share its cores (`--threads` each, by default cores / K).

`auto` chooses K from a measured per-cell peak memory, never oversubscribing memory
(`choose_cells_per_gpu`): for each distinct training shape among the pending cells (network,
classes, image side, batch sizes, networks trained at once, dataset size, compiled or not) a probe
process trains a few steps of it with the dataset's images resident, as a cell does, and reports its
peak (`probe_cell_memory`: on CUDA the process's whole use of the GPU as nvidia-smi reports it, else
the caching allocator's reserved peak plus `CUDA_CONTEXT_ALLOWANCE_MIB`; on CPU its peak resident
set). K = the largest number whose cells fit in `MEMORY_HEADROOM` of the device's free memory and,
since every worker is also a process on the host, of the host's available memory; at most
`MAX_CELLS_PER_GPU`, the pending cells per device and, on CPU, the cores. Cells that generate EchoMod images with a diffusion engine load a diffusion
model whose memory the probe does not measure: `auto` refuses them (give K explicitly once the
pairs are cached, e.g. after `echobench modify` or a Ray run's shard stage).

The packing factor is provenance, never identity: it is recorded in each cell's config.json
(`executor.cells_per_gpu`, and for `auto` the measurement it came from), and a cell's results are the
same whatever K (`tests/test_executors.py` compares them on CPU at one thread per cell).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

from echobench.errors import EchobenchError
from echobench.memory import own_gpu_mib, peak_rss_mib

MAX_CELLS_PER_GPU = 16  # more processes than this per device is a typo (each loads torch)
MEMORY_HEADROOM = 0.85  # plan to use at most this share of the free memory (fragmentation, other processes)
CUDA_CONTEXT_ALLOWANCE_MIB = 1024  # CUDA context + cuDNN/cuBLAS workspaces, where nvidia-smi cannot say
PROBE_STEPS = 3  # full training steps the probe runs (plus one evaluation batch)


def parse_cells_per_gpu(text: str | int | None) -> int | str | None:
    """`--cells-per-gpu`: a positive integer, `auto`, or None (not given)."""
    if text is None:
        return None
    if isinstance(text, str) and text.strip().lower() == "auto":
        return "auto"
    try:
        k = int(text)
    except (TypeError, ValueError):
        k = 0
    if not 1 <= k <= MAX_CELLS_PER_GPU or str(text).strip() not in (str(k), f"+{k}"):
        raise EchobenchError(f"--cells-per-gpu must be auto or an integer from 1 to {MAX_CELLS_PER_GPU}, got {text!r}")
    return k


@dataclass(frozen=True)
class ProbeKey:
    """What decides a training cell's memory: its network(s), data and batch sizes."""

    model: str
    num_classes: int
    image_size: int
    n_images: int  # train + validation + test images resident on the device
    batch_size: int
    eval_batch_size: int
    networks: int
    mixed_precision: bool
    compile: bool

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def probe_key(spec, data_root: str | None = None) -> ProbeKey:
    """The `ProbeKey` of a cell spec (a training cell, or a selection cell's setting)."""
    from echobench.harness.train_cell import dataset_shape
    from echobench.training.method import METHODS
    from echobench.training.protocols import Protocol

    if hasattr(spec, "setting_spec"):
        spec = spec.setting_spec()
    n, n_test, side, classes = dataset_shape(spec.dataset, spec.dataset_options, data_root)
    protocol = Protocol(**{**spec.protocol, "milestones": tuple(spec.protocol["milestones"])})
    networks = len(getattr(METHODS.get(spec.method), "model_streams", ("model",)))
    return ProbeKey(protocol.resolved_model(classes), classes, side, n + n_test, protocol.batch_size,
                    protocol.eval_batch_size, networks, protocol.mixed_precision, protocol.compile)


def _uses_diffusion(spec) -> bool:
    from echobench.echoalign.echomod import default_engine, is_diffusion_engine
    from echobench.training.method import uses_echomod

    if hasattr(spec, "setting_spec"):
        return is_diffusion_engine(spec.params.get("engine") or default_engine(spec.dataset))
    return uses_echomod(spec.method) and is_diffusion_engine(spec.method_params.get("engine") or default_engine(spec.dataset))


@dataclass
class Packing:
    """The chosen K and where it came from (recorded in every cell's config.json as provenance)."""

    cells_per_gpu: int
    source: str  # "given" or "auto"
    facts: dict[str, Any] = field(default_factory=dict)

    def provenance(self) -> dict[str, Any]:
        return {"cells_per_gpu": self.cells_per_gpu, "cells_per_gpu_source": self.source,
                **({"packing": self.facts} if self.facts else {})}


def choose_cells_per_gpu(cells, device: str, *, probe: Callable[[ProbeKey, str], dict] | None = None,
                         free_memory: Callable[[str], dict] | None = None, data_root: str | None = None,
                         headroom: float = MEMORY_HEADROOM, max_k: int = MAX_CELLS_PER_GPU) -> Packing:
    """`auto`: the largest K ≤ `max_k` whose K cells fit in `headroom` of the device's and the host's free memory.

    `probe(key, device)` → {"device_mib": peak on the device, "host_mib": peak resident set} of one cell
    of that shape; `free_memory(device)` → {"device_mib": free on one device, "host_mib": available on
    the host, "devices": devices sharing the host}. Both measure by default (`probe_cell_memory`,
    `measure_free_memory`); tests pass stand-ins. On CPU the device is the host (device_mib = host_mib).
    """
    probe = probe or probe_cell_memory
    free_memory = free_memory or measure_free_memory
    training = [c for c in cells if getattr(c, "kind", "train") in ("train", "selection")]
    generating = [c for c in training if _uses_diffusion(c)]
    if generating:
        raise EchobenchError(f"--cells-per-gpu auto sizes training cells, but {len(generating)} pending cell(s) may "
                             f"generate EchoMod images with a diffusion engine (e.g. {generating[0].label()}), whose "
                             f"memory the probe does not measure: give --cells-per-gpu K once their pairs are cached "
                             f"(after `echobench modify`, or with --executor ray, which generates them first)")
    if not training:
        return Packing(1, "auto", {"note": "no training cells pending"})
    keys = sorted({probe_key(c, data_root) for c in training}, key=lambda k: json.dumps(k.to_dict(), sort_keys=True))
    probed = [{"key": k.to_dict(), **probe(k, device)} for k in keys]
    per_device = max(p["device_mib"] for p in probed)
    per_host = max(p["host_mib"] for p in probed)
    free = free_memory(device)
    devices = max(1, int(free.get("devices", 1)))
    cpu = not device.startswith("cuda")
    # On CPU the device is the host: each cell counts once, against the host's available memory, and
    # more cells than cores only share the same cores.
    by_device = (os.cpu_count() or 1) if cpu else int(headroom * free["device_mib"] // max(per_device, 1.0))
    by_host = int(headroom * free["host_mib"] // (max(per_host, 1.0) * devices))
    by_cells = -(-len(training) // devices)  # more workers than pending cells would idle
    limits = {"max": max_k, "pending cells": by_cells, "host memory": by_host,
              ("cores" if cpu else "device memory"): by_device}
    k = max(1, min(limits.values()))
    facts = {"per_cell_device_mib": round(per_device, 1), "per_cell_host_mib": round(per_host, 1),
             "free_device_mib": None if cpu else round(free["device_mib"], 1),
             "available_host_mib": round(free["host_mib"], 1), "devices": devices, "headroom": headroom,
             "limited_by": min(limits, key=lambda name: limits[name]), "limits": limits, "probes": probed}
    if min(by_device, by_host) < 1:
        facts["note"] = "one cell alone does not fit the planned share of memory; running one per device anyway"
    return Packing(k, "auto", facts)


# --- the default measurements (subprocesses, so that the driver never holds a CUDA context) ----------

def _run_child(args: list[str], what: str, timeout: float = 900) -> dict:
    from pathlib import Path

    env = dict(os.environ)
    package_parent = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = package_parent + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    try:
        done = subprocess.run([sys.executable, "-m", "echobench.harness.packing", *args], capture_output=True,
                              text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise EchobenchError(f"--cells-per-gpu auto: {what} did not finish in {timeout:.0f} s") from None
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise EchobenchError(f"--cells-per-gpu auto: {what} failed ({tail}); give --cells-per-gpu K instead")
    return json.loads(lines[-1])


def probe_cell_memory(key: ProbeKey, device: str) -> dict:
    """Peak memory of one cell of shape `key`, measured in a fresh process on `device` (see the docstring)."""
    return _run_child(["probe", json.dumps(key.to_dict()), device], f"the memory probe of {key.model}")


def measure_free_memory(device: str) -> dict:
    """Free memory of one device (the first visible GPU, or the host on CPU) and the host, in MiB."""
    return _run_child(["free", device], "reading the free memory", timeout=120)


def host_available_mib() -> float:
    """MemAvailable of /proc/meminfo (Linux), else the physical memory, in MiB."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    from echobench.checks import physical_memory

    total = physical_memory()
    return (total or 0) / 2**20



def _probe_main(key_json: str, device: str) -> dict:
    """Train PROBE_STEPS steps of `key`'s network(s) on random data of the dataset's size, resident
    on `device` as in a cell, evaluate one batch, and report the peaks."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from echobench.training.protocols import Protocol
    from echobench.training.trainer import DeviceSplit, History, Normalizer, Task

    key = ProbeKey(**json.loads(key_json))
    dev = torch.device("cuda" if device.startswith("cuda") else "cpu")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (key.n_images, key.image_size, key.image_size, 3), dtype=np.uint8)
    labels = rng.integers(0, key.num_classes, key.n_images)
    split = DeviceSplit.from_numpy(images, labels, np.arange(key.n_images), dev)
    del images
    protocol = Protocol("probe", model=key.model, batch_size=key.batch_size, eval_batch_size=key.eval_batch_size,
                        mixed_precision=key.mixed_precision, compile=key.compile,
                        last_batch="drop" if key.compile else "keep")
    task = Task("probe", key.num_classes, [str(c) for c in range(key.num_classes)], split, split, split, protocol,
                dev, 0, "none", 0.0, Normalizer(np.full(3, 0.5), np.full(3, 0.25), dev), History())
    steps = task.train.subset(torch.arange(min(len(split), PROBE_STEPS * key.batch_size)))
    for k in range(key.networks):
        model = task.new_model(f"model{k}")
        optimizer = task.new_optimizer(model.parameters())
        task.train_epoch(model, optimizer, task.generator("batches"), lambda logits, y, idx: F.cross_entropy(logits, y),
                         split=steps)
        task.predict(model, task.val.subset(torch.arange(min(len(split), key.eval_batch_size))))
    out = {"host_mib": peak_rss_mib(), "device": device}
    if dev.type == "cuda":
        torch.cuda.synchronize()
        reserved = torch.cuda.max_memory_reserved() / 2**20
        own = own_gpu_mib()
        out.update(device_mib=own if own is not None else reserved + CUDA_CONTEXT_ALLOWANCE_MIB,
                   reserved_peak_mib=reserved, allocated_peak_mib=torch.cuda.max_memory_allocated() / 2**20,
                   device_kind="nvidia-smi used_memory of the probe process" if own is not None else
                   f"max_memory_reserved + {CUDA_CONTEXT_ALLOWANCE_MIB} MiB context allowance")
    else:
        out.update(device_mib=out["host_mib"], device_kind="peak RSS of the probe process")
    return out


def _free_main(device: str) -> dict:
    out = {"host_mib": host_available_mib(), "devices": 1}
    if device.startswith("cuda"):
        import torch

        free, _ = torch.cuda.mem_get_info(0)
        out.update(device_mib=free / 2**20, devices=torch.cuda.device_count())
    else:
        out["device_mib"] = out["host_mib"]
    return out


if __name__ == "__main__":
    what = sys.argv[1]
    doc = _probe_main(sys.argv[2], sys.argv[3]) if what == "probe" else _free_main(sys.argv[2])
    print(json.dumps(doc))
