"""A `runtime` cell (the paper's appendix D, Tables 6 and 7).

`echobench bench engines` at one resolution and batch size: EchoMod's engines and diffusers' stock
pipeline on the same inputs, and each row as a measurement in the schema of
`echobench.reporting.runtime` (seconds per image on this device). On a GPU the `runtime` suite
measures SD 1.5 + ControlNet canny (random weights: the same compute as the checkpoints, no download)
at the paper's resolutions and batch sizes; on CPU it measures the `tiny` configuration, which checks
the machinery in seconds but says nothing about SD 1.5's cost. Runtime cells run last, in the `run`
process, after every other cell finished, so that nothing else shares the device they time.

A runtime cell's id includes the device's name (`RuntimeSpec.device_name`): a results directory
measured on one GPU has no finished runtime cells for another, whose cells are measured anew.
"""

from __future__ import annotations

import time
from typing import Any

from echobench.errors import EchobenchError
from echobench.harness.context import RunContext
from echobench.harness.suite import RuntimeSpec


def device_type(device: str) -> str:
    """"cuda" for cuda and cuda:N, else "cpu": which variant of a runtime block a device runs."""
    return "cuda" if str(device).startswith("cuda") else "cpu"


def device_name(device: str) -> str:
    """The name of `device` (GPU model or CPU), or "" when this machine has no such device."""
    import torch

    from echobench.environment import device_description

    if device_type(device) == "cuda" and not torch.cuda.is_available():
        return ""
    return device_description(device)["name"]


def run_runtime_cell(spec: RuntimeSpec, ctx: RunContext) -> dict[str, Any]:
    """One Table 6/7 cell: `bench_engines` at the cell's resolution and batch size, and each measured row as a
    runtime measurement (`echobench.reporting.runtime` schema, plus the bench's own fields)."""
    from echobench.bench.engines import REFERENCE, bench_engines, failed_rows

    device = ctx.resolved_device
    if device_type(device) != spec.device_type:
        raise EchobenchError(f"runtime cell for {spec.device_type} cannot run on {device}")
    started = time.perf_counter()
    doc = bench_engines(config=spec.config, random_init=spec.random_init, engines=tuple(spec.engines),
                        batch_sizes=(spec.batch_size,), resolution=spec.resolution, steps=spec.steps,
                        repeats=spec.repeats, device=device, seed=spec.seed)
    errors = failed_rows(doc)
    if errors:  # an engine that crashed is a failed cell (retried); out of memory is a result ("unsupported")
        raise EchobenchError("bench engines: " + "; ".join(errors))
    device_name = doc.get("environment", {}).get("device", {}).get("name") or device
    cfg = doc["guidance_scale"] > 1
    measurements, unsupported = [], {}
    for name, per_batch in doc["rows"].items():
        row = per_batch.get(str(spec.batch_size), per_batch)
        if "seconds_per_image" not in row:
            unsupported[name] = row.get("unsupported") or row.get("unavailable") or "not measured"
            continue
        measurements.append({
            "device": device_name, "gpu": None, "resolution": doc["resolution"], "batch_size": spec.batch_size,
            "steps": spec.steps, "cfg": cfg, "seconds_per_image": row["seconds_per_image"], "engine": name,
            "config": spec.config, "random_init": spec.random_init, "reference": name == REFERENCE,
            "images_per_s": row["images_per_s"], "seconds_per_step": row["seconds_per_step"],
            "peak_mib": row["peak_mib"], "peak_kind": row["peak_kind"],
            "parity_max_abs": row.get("parity_max_abs"),
            "speedup_vs_reference": doc["speedup_vs_reference"].get(name, {}).get(str(spec.batch_size)),
        })
    return {"bench": {k: v for k, v in doc.items() if k != "environment"}, "measurements": measurements,
            "unsupported": unsupported, "timings": {"total_s": round(time.perf_counter() - started, 3)}}
