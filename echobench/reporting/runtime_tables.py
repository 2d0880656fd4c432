"""The runtime tables of a results directory (the paper's appendix D, Tables 6 and 7), from its runtime cells.

Every measured row; the SD 1.5 measurements in the paper's Table 6 and 7 layouts beside the paper's
GPU-hours (our device measured, and projected to the paper's GPUs by `echobench.reporting.runtime`),
then the full runtime report with those measurements. Measurements of the `tiny` configuration (the
CPU variant) are listed as measured only: the compute model is SD 1.5's.
"""

from __future__ import annotations

from typing import Any


def runtime_document(runtime_cells: list[tuple[str, dict, dict]]) -> dict[str, Any]:
    """The runtime cells' measurements, the SD 1.5 ones in the paper's Table 6/7 layouts beside its
    GPU-hours, and the runtime report (`echobench.reporting.runtime.runtime_report`) of those measurements."""
    from echobench.reporting.runtime import (DATASET_IMAGES, PAPER_TABLE6, PAPER_TABLE7, TABLE6_GPU, TABLE7_BATCH,
                                 TABLE7_RESOLUTION, gpu_hours, normalize_measurement, project, runtime_report)

    rows, sd15 = [], []
    for rid, config, result in sorted(runtime_cells, key=lambda c: (c[1]["spec"]["config"], c[1]["spec"]["resolution"],
                                                                     c[1]["spec"]["batch_size"])):
        spec = config["spec"]
        for m in result["measurements"]:
            rows.append({"run_id": rid, **{k: m.get(k) for k in (
                "config", "device", "resolution", "batch_size", "steps", "engine", "seconds_per_image", "images_per_s",
                "peak_mib", "peak_kind", "parity_max_abs", "speedup_vs_reference")}})
            if spec["config"] == "sd15":
                sd15.append((rid, m, normalize_measurement(m, f"cell {rid}")))
        for name, why in result.get("unsupported", {}).items():
            rows.append({"run_id": rid, "config": spec["config"], "resolution": spec["resolution"],
                         "batch_size": spec["batch_size"], "steps": spec["steps"], "engine": name, "unsupported": why})
    table6 = []
    for dataset, r, b, hours in PAPER_TABLE6:
        if dataset != "cifar10":
            continue
        for rid, raw, m in sd15:
            if (m["resolution"], m["batch_size"]) != (r, b):
                continue
            ours_h = gpu_hours(m["seconds_per_image"], DATASET_IMAGES["cifar10"])
            projected = None if m["gpu"] is None else gpu_hours(project(m["seconds_per_image"], m["gpu"], TABLE6_GPU,
                                                                        resolution=r, steps=m["steps"], cfg=m["cfg"]),
                                                                DATASET_IMAGES["cifar10"])
            table6.append({"resolution": r, "batch_size": b, "row": m["engine"], "device": m["device"], "gpu": m["gpu"],
                           "paper_v100_gpu_hours": hours, "ours_seconds_per_image": m["seconds_per_image"],
                           "ours_gpu_hours": round(ours_h, 3),
                           "ours_projected_v100_gpu_hours": None if projected is None else round(projected, 3),
                           "difference_projected_gpu_hours": None if projected is None or hours is None
                           else round(projected - hours, 3)})
    table7 = []
    for rid, raw, m in sd15:
        if (m["resolution"], m["batch_size"]) != (TABLE7_RESOLUTION, TABLE7_BATCH) or m["gpu"] is None:
            continue
        for gpu, dataset, hours in PAPER_TABLE7:
            if dataset != "cifar10":
                continue
            s = m["seconds_per_image"] if gpu == m["gpu"] else project(m["seconds_per_image"], m["gpu"], gpu,
                                                                     resolution=m["resolution"], steps=m["steps"],
                                                                     cfg=m["cfg"])
            ours = gpu_hours(s, DATASET_IMAGES["cifar10"])
            table7.append({"gpu": gpu, "row": m["engine"], "measured_on": m["gpu"],
                           "kind": "measured" if gpu == m["gpu"] else "projection", "paper_gpu_hours": hours,
                           "ours_gpu_hours": round(ours, 3), "difference_gpu_hours": round(ours - hours, 3)})
    engine_rows = [m for _, raw, m in sd15 if not raw.get("reference")]
    return {"rows": rows, "table6_beside_paper": table6, "table7_beside_paper": table7,
            "report": runtime_report(engine_rows or None)}


def runtime_markdown(doc: dict[str, Any], suite: str | None) -> str:
    from tabulate import tabulate

    from echobench.reporting.runtime import format_runtime_report

    def fmt(v, spec):
        return "—" if v is None else format(v, spec)

    cells = [[r["config"], f"{r['resolution']}²", r["batch_size"], r["steps"], r["engine"],
              r.get("unsupported") or fmt(r.get("seconds_per_image"), ".4g"), fmt(r.get("images_per_s"), ".3g"),
              fmt(r.get("peak_mib"), ".0f"), fmt(r.get("parity_max_abs"), ".1e"),
              fmt(r.get("speedup_vs_reference"), ".2f"), r.get("device") or "—"] for r in doc["rows"]]
    mine = [f"## Runtime cells of this results directory{f' (suite {suite})' if suite else ''}\n",
            "Each cell: `echobench bench engines` at one resolution and batch size; the `diffusers-pipeline` row is "
            "diffusers' stock `StableDiffusionControlNetPipeline` on the same inputs, the others EchoMod's engines. "
            "`tiny` rows (the CPU variant of the runtime suite) check the machinery and are not on the scale of "
            "SD 1.5; only `sd15` rows enter the tables and projections below.\n",
            tabulate(cells, ["config", "resolution", "batch", "steps", "row", "s/image", "images/s", "peak MiB",
                             "max abs Δpixel", "vs stock", "device"], tablefmt="pipe", disable_numparse=True) + "\n"]
    if doc["table6_beside_paper"]:
        rows = [[f"{r['resolution']}²", r["batch_size"], r["row"], fmt(r["paper_v100_gpu_hours"], "g"),
                 f"{r['ours_seconds_per_image']:.4g}", f"{r['ours_gpu_hours']:.2f}",
                 fmt(r["ours_projected_v100_gpu_hours"], ".2f"), fmt(r["difference_projected_gpu_hours"], "+.2f")]
                for r in doc["table6_beside_paper"]]
        device = doc["table6_beside_paper"][0]["device"]
        mine += ["## Table 6 beside ours (CIFAR-10, 50,000 images, GPU-hours)\n",
                 f"Paper: NVIDIA V100-SXM2. Ours: measured on {device}, and projected to the V100 at the efficiency "
                 "measured here (a projection, see below). Δ: projection − paper.\n",
                 tabulate(rows, ["resolution", "batch", "row", "paper V100", "ours s/image", "ours GPU-h",
                                 "ours → V100 (projection)", "Δ"], tablefmt="pipe", disable_numparse=True) + "\n"]
    if doc["table7_beside_paper"]:
        rows = [[r["gpu"], r["row"], f"{r['paper_gpu_hours']:g}", f"{r['ours_gpu_hours']:.2f}", r["kind"],
                 f"{r['difference_gpu_hours']:+.2f}"] for r in doc["table7_beside_paper"]]
        mine += ["## Table 7 beside ours (512², batch 8, CIFAR-10 GPU-hours)\n",
                 tabulate(rows, ["GPU", "row", "paper", "ours", "ours is", "Δ"], tablefmt="pipe",
                          disable_numparse=True) + "\n"]
    note = ("No SD 1.5 measurement in this results directory: its runtime cells ran the `tiny` configuration "
            "(the runtime suite's CPU variant; SD 1.5 at the paper's resolutions is its GPU variant), listed above "
            "as measured. The compute model and projections below are the paper's and the model's only.")
    full = format_runtime_report(doc["report"], no_measurement_note=note)
    head, sep, tail = full.partition("\n## ")
    return head + "\n" + "\n".join(mine) + sep + tail


# --- index page ---------------------------------------------------------------------------------------
