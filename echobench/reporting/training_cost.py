"""The dry run's projection of the training and EchoSelect stages, in GPU-hours (projections).

Training. Each method declares the data passes of one `fit` (`echobench.training.method.Passes`: network-
epochs forward + backward over the training split, forward-only passes over training, validation and
test), from its official stage lengths: under the paper protocol T-Revision trains 20 + 200 + 200
epochs, Joint Optimization 200 + 120, Identifiability 150 + 100, the two-network methods two networks
for 200 epochs each. A cell's FLOP are

    3 × F × (train passes × n_train) + F × (forward-only images),

with F the network's forward FLOP per image, counted by `torch.utils.flop_counter.FlopCounterMode`
on the protocol's network at the dataset's image size (`forward_gflop`; the counts for the paper's
networks are in reports/gpu/README.md), and backward ≈ 2 × forward (the usual rule for
convolutional networks).

Seconds on GPU g = FLOP / (peak_g × efficiency), the model of `echobench.reporting.runtime` (peaks in
`GPUS`). The training efficiency is calibrated by one measurement (`TRAIN_CALIBRATION`): `echobench
bench train` on an H200 (reports/gpu/bench_train.json; its rate and the fraction of the H200's dense
peak it sustains are in reports/gpu/README.md, section 1). A projection assumes the same fraction of
peak on every GPU and network. That assumption is weak for small networks, which are limited by
memory bandwidth and kernel launches more than by tensor-core peak: older GPUs with lower peaks
likely run nearer their peak, so their projected hours are likely too high. The methods whose
training set depends on EchoSelect (`echoselect-only`, `echoalign-released`) are projected at their
upper bound (every original kept).

EchoSelect. Every cell of a method that uses EchoMod (`echobench.training.method.uses_echomod`), and
every selection cell, extracts CLIP ViT-B-32 image features of its training split twice: the
originals and EchoMod's images (`echobench.echoalign.methods.align_task`), `CLIP_VIT_B32_GFLOP` per
image at 224² (FlopCounterMode on open_clip's ViT-B-32; the count is in reports/gpu/README.md). Its
efficiency is the paper's own EchoMod efficiency on that GPU (`echobench.reporting.runtime.paper_efficiencies`:
fp16 inference of transformer and convolution blocks, the nearest measured workload), so it is
projected for the paper's GPUs only. Cells whose extractor is not CLIP (the `shapes` world's HOG)
cost no GPU time in this stage.

Packed training. Several cells side by side on one GPU (`echobench run --cells-per-gpu K`) train
faster in aggregate than one cell at a time. `packed_projection` reads a committed measurement,
`echobench bench train --device cuda --concurrent K ... --json` saved as `PACKED_MEASUREMENT`
(reports/gpu/bench_train_concurrent.json; scripts/gpu_check.sh writes it), when present: the
training stage's FLOP at the aggregate images/s of the best uncompiled row (and, separately, of the
best compiled row: the `paper-compiled` protocol, whose cells have other run ids), on the GPU it was
measured on, beside one cell at a time at the same measurement's solo rate. Without the file the
dry run shows the single-cell projection only and says which command measures the packed one.

The paper reports no training or EchoSelect runtimes; these stages have no published figures beside them.
"""

from __future__ import annotations

import json
from collections import defaultdict
from functools import lru_cache
from pathlib import Path
from typing import Any

from echobench.errors import EchobenchError
from echobench.harness.train_cell import dataset_shape

# `echobench bench train` on one NVIDIA H200 (scripts/gpu_check.sh, reports/gpu/bench_train.json):
# the paper protocol's ResNet-18, 32², batch 128, bf16 autocast, channels_last.
TRAIN_CALIBRATION = {"gpu": "h200", "model": "resnet18", "num_classes": 10, "image_size": 32,
                     "images_per_s": 13876.8,
                     "source": "reports/gpu/bench_train.json (`echobench bench train` on one H200, bf16)"}
NUM_CLASSES_CIFAR10 = 10
CLIP_VIT_B32_GFLOP = 8.73  # image encoder, 224², one image (FlopCounterMode on open_clip's ViT-B-32)
BACKWARD_FACTOR = 3.0  # forward + backward ≈ 3 × forward

PROJECTED_GPUS = ("v100", "rtx4090")  # the paper's GPUs (Tables 6 and 7)
# `bench train --concurrent ... --json` on a GPU, committed: the packed projection's source when present.
PACKED_MEASUREMENT = Path(__file__).resolve().parents[2] / "reports" / "gpu" / "bench_train_concurrent.json"
PACKED_COMMAND = ("echobench bench train --device cuda --concurrent 2 4 8 --json > reports/gpu/bench_train_concurrent.json "
                  "(add --compile for the compiled rows; scripts/gpu_check.sh runs both)")



@lru_cache(maxsize=None)
def forward_gflop(model: str, num_classes: int, image_size: int) -> float:
    """Forward GFLOP per image of a network of `echobench.training.networks`, counted on one image."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from echobench.training.networks import build_model

    net = build_model(model, num_classes).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(torch.zeros(1, 3, image_size, image_size))
    return counter.get_total_flops() / 1e9


def train_efficiency() -> float:
    """The fraction of its GPU's peak that the calibration measurement sustained."""
    from echobench.reporting.runtime import GPUS

    c = TRAIN_CALIBRATION
    flop_per_s = c["images_per_s"] * BACKWARD_FACTOR * forward_gflop(c["model"], c["num_classes"], c["image_size"]) * 1e9
    return flop_per_s / (GPUS.get(c["gpu"]).peak_tflops * 1e12)


def cell_gflop(spec, data_root: str | None = None) -> float:
    """Projected GFLOP of one training cell (`RunSpec`), from its method's `passes`."""
    from echobench.training.method import METHODS
    from echobench.training.protocols import Protocol

    n, n_test, side, classes = dataset_shape(spec.dataset, spec.dataset_options, data_root)
    protocol = Protocol(**{**spec.protocol, "milestones": tuple(spec.protocol["milestones"])})
    n_train = int(round(n * (1.0 - protocol.val_fraction)))  # as noise.split_train_val
    n_val = n - n_train
    method = METHODS.get(spec.method)
    p = method.passes(method.resolve_params(spec.dataset, spec.method_params), protocol, n_train=n_train)
    f = forward_gflop(protocol.resolved_model(classes), classes, side)
    forward_only = p.train_forward * n_train + p.evaluations * (n_val + n_test) + p.val_forward * n_val
    return f * (BACKWARD_FACTOR * p.train * n_train + forward_only)


def _hours(gflop: float, efficiency_by_gpu: dict[str, float]) -> dict[str, float]:
    from echobench.reporting.runtime import GPUS

    # three significant digits: a small suite's hours are not rounded to zero
    return {g: float(f"{gflop * 1e9 / (GPUS.get(g).peak_tflops * 1e12 * e) / 3600:.3g}") for g, e in efficiency_by_gpu.items()}


def training_projection(cells, data_root: str | None = None) -> dict[str, Any]:
    """Projected GPU-hours of the training stage, per method and in total (projections)."""
    eff = train_efficiency()
    per_method: dict[str, float] = defaultdict(float)
    unavailable: dict[str, str] = {}
    for spec in cells:
        try:
            per_method[spec.method] += cell_gflop(spec, data_root)
        except EchobenchError as exc:
            unavailable[spec.dataset] = str(exc).splitlines()[0]
    gpus = {g: eff for g in PROJECTED_GPUS}
    return {"basis": f"{BACKWARD_FACTOR:g} × forward FLOP per trained image at {eff:.1%} of peak, calibrated by "
                     f"{TRAIN_CALIBRATION['source']} (projection)",
            "efficiency": round(eff, 4),
            "per_method": {m: _hours(f, gpus) for m, f in sorted(per_method.items())},
            "total": _hours(sum(per_method.values()), gpus), "unavailable": unavailable,
            "packed": packed_projection(sum(per_method.values()))}


def _display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(PACKED_MEASUREMENT.parents[2]))
    except ValueError:
        return str(path)


def packed_projection(total_gflop: float, path: str | Path | None = None) -> dict[str, Any]:
    """The training stage's hours on the GPU of a committed `bench train --concurrent` measurement:
    one cell at a time (its solo row) and K cells at once (its best uncompiled row; its best compiled
    row apart). {"measured": False, "note": ...} when there is no usable measurement."""
    from echobench.reporting.runtime import infer_gpu

    path = Path(path) if path is not None else PACKED_MEASUREMENT
    if not path.exists():
        return {"measured": False, "note": f"no measurement of several cells per GPU: run {PACKED_COMMAND} on the GPU"}
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        rows = [r for r in doc["rows"] if r.get("aggregate_images_per_s")]
        name = str(doc.get("device_name") or "")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return {"measured": False, "note": f"{_display_path(path)} is not a bench train --concurrent result ({exc})"}
    gpu = infer_gpu(name) if str(doc.get("device", "")).startswith("cuda") else None
    if gpu is None or not rows:
        return {"measured": False, "note": f"{_display_path(path)} holds no usable GPU measurement (device "
                                           f"{name or doc.get('device')!r}); run {PACKED_COMMAND} on the GPU"}
    flop_per_image = BACKWARD_FACTOR * forward_gflop("resnet18", NUM_CLASSES_CIFAR10, 32)  # GFLOP

    def hours(rate: float) -> float:
        return float(f"{total_gflop / (rate * flop_per_image) / 3600:.3g}")

    def row(r: dict) -> dict[str, Any]:
        return {"cells_per_gpu": r["cells"], "compile": bool(r["compile"]), "images_per_s": round(r["aggregate_images_per_s"], 1),
                "speedup_vs_one_cell": round(r.get("speedup_vs_solo") or 0.0, 2), "hours": hours(r["aggregate_images_per_s"])}

    solo = next((r for r in rows if r["cells"] == 1 and not r["compile"]), None)
    packed = [r for r in rows if r["cells"] > 1 and not r["compile"]]
    compiled = [r for r in rows if r["compile"]]
    out: dict[str, Any] = {"measured": True, "source": _display_path(path), "gpu": gpu, "device_name": name,
                           "basis": "the training stage's FLOP at the measured aggregate rate of the paper protocol's "
                                    "ResNet-18 on that GPU (projection)"}
    if solo is not None:
        out["one_cell"] = row(solo)
    if packed:
        out["packed"] = row(max(packed, key=lambda r: r["aggregate_images_per_s"]))
    if compiled:
        out["packed_compiled"] = {**row(max(compiled, key=lambda r: r["aggregate_images_per_s"])),
                                  "protocol": "paper-compiled (other numbers, other run ids)"}
    return out


def echoselect_projection(cells, selection=(), data_root: str | None = None) -> dict[str, Any]:
    """Projected GPU-hours of EchoSelect's CLIP features over the cells of the methods that use EchoMod
    and the selection cells."""
    from echobench.echoalign.features import default_extractor
    from echobench.reporting.runtime import paper_efficiencies
    from echobench.training.method import uses_echomod

    images = 0
    settings = [(c.dataset, c.dataset_options, c.protocol, c.method_params) for c in cells if uses_echomod(c.method)]
    settings += [(s.dataset, s.dataset_options, s.protocol, s.params) for s in selection]
    for dataset, options, protocol, params in settings:
        if (params.get("extractor") or default_extractor(dataset)) != "open_clip":
            continue
        n = dataset_shape(dataset, options, data_root)[0]
        images += 2 * int(round(n * (1.0 - protocol["val_fraction"])))  # originals and modified
    eff = {g: row["efficiency"] for g, row in paper_efficiencies().items()}
    return {"basis": f"CLIP ViT-B-32, {CLIP_VIT_B32_GFLOP} GFLOP per image, at the paper's EchoMod efficiency "
                     "per GPU (projection)",
            "images": images, **_hours(images * CLIP_VIT_B32_GFLOP, eff)}
