"""`echobench modify` and `echobench select`: EchoMod and EchoSelect on one noisy setting, alone.

A setting is (dataset, noise, seed) exactly as a cell of a suite builds it (the same noisy labels and
train/validation split), so what these commands generate is what the `echoalign` methods read from
the cache later, and what they measure is what those methods select.

`select` reports, for the training split: how many samples EchoSelect keeps as originals at τ, their
precision (share whose noisy label is the clean one) and recall (share of the clean samples kept),
AUROC of S for clean vs noisy and the two-sample Kolmogorov–Smirnov test (paper §4.2, Figure 3); the
Table 4 view (samples kept at a fixed precision when ranking by S, and by each peer selector's own
score: small-loss, BLTM, SimiFeat, confident learning); the τ sweep (Figure 4b) and the similarity
histograms (Figure 3) as PNG.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from echobench.echoalign.methods import EchoAlignParams, modify_task_pairs, resolve_tau, similarity_of_pairs
from echobench.echoalign.echoselect import TABLE4_PRECISIONS, plot_histograms, separation, table4_view, tau_sweep
from echobench.files import save_png
from echobench.checks import check_seed
from echobench.data.base import check_dataset_options, dataset_identity
from echobench.errors import EchobenchError
from echobench.training.protocols import get_protocol
from echobench.files import atomic_write_json, atomic_write_text
from echobench.harness.context import RunContext, default_context
from echobench.harness.suite import RunSpec


def parse_shard(text: str | None) -> tuple[int, int]:
    """'i/n' → (i, n) with 0 ≤ i < n; None → (0, 1)."""
    if not text:
        return 0, 1
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise EchobenchError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from None
    if not 0 <= i < n:
        raise EchobenchError(f"--shard {text}: need 0 ≤ i < n")
    return i, n


def setting_task(dataset: str, dataset_options: dict, noise: str, seed: int, *, protocol: str | dict = "demo",
                 ctx: RunContext | None = None):
    """(task, clean training labels aligned with task.train) of a setting, as a training cell builds it.
    `protocol`: a protocol name, or a protocol resolved to its full fields (a cell's `protocol`)."""
    from echobench.harness.train_cell import build_task, get_dataset, make_noisy_labels

    check_seed(seed, "--seed")  # before the dataset is loaded
    check_dataset_options(dataset, dataset_options)
    ctx = ctx or default_context(device="cpu")
    protocol = get_protocol(protocol).to_dict() if isinstance(protocol, str) else dict(protocol)
    spec = RunSpec(dataset, dataset_identity(dataset, dataset_options), noise, "echoalign", {}, int(seed), protocol)
    data = get_dataset(dataset, spec.dataset_options, ctx.data_root)
    noisy = make_noisy_labels(spec, data)
    task, (train_idx, _) = build_task(spec, data, noisy, ctx)
    return task, np.asarray(data.train_labels)[train_idx]


def modify_setting(task, params: EchoAlignParams, *, shard: tuple[int, int] = (0, 1), progress: bool = True) -> dict[str, Any]:
    """Generate (or find in the cache) EchoMod's outputs for the training split, or one shard of it."""
    i, n = shard
    started = time.perf_counter()
    pairs = modify_task_pairs(task, params, shard=shard, progress=progress)
    stats = pairs.stats
    wall = time.perf_counter() - started
    return {"pairs": len(pairs.indices), "new": stats.generated, "from_cache": stats.cached,
            "corrupt_shards_regenerated": stats.corrupt_shards, "seconds": round(wall, 3),
            "new_per_second": round(stats.generated / wall, 2) if stats.generated and wall > 0 else None,
            "shard": f"{i}/{n}", "cache_dir": task.cache_dir}


def select_report(task, clean: np.ndarray, params: EchoAlignParams, *, peers: list[str] = (),
                  precisions=TABLE4_PRECISIONS, out_dir: str | Path | None = None, progress: bool = True,
                  peer_params: dict[str, dict] | None = None) -> dict[str, Any]:
    """EchoSelect's separation of clean and noisy labels, the Table 4 view, the τ sweep, the figure.
    `peer_params` maps a peer's name to keyword arguments of its selector (`baselines/selection.py`)."""
    from echobench.training.selectors import SELECTORS

    pairs = modify_task_pairs(task, params, progress=progress)
    originals, noisy, modified, stats = pairs.originals, pairs.labels, pairs.modified, pairs.stats
    is_clean = noisy == clean
    started = time.perf_counter()
    similarity = similarity_of_pairs(task.dataset, originals, modified, extractor=params.extractor,
                                     extractor_options=params.extractor_options, device=str(task.device),
                                     backend=params.similarity)
    select_s = time.perf_counter() - started
    tau = resolve_tau(params, task.noise_rate, task.dataset)
    doc: dict[str, Any] = {
        "dataset": task.dataset, "noise": f"{task.noise_kind}:{task.noise_rate:g}", "seed": task.seed,
        "params": dataclasses.asdict(params),
        "echoselect": separation(similarity, is_clean, tau, strict=params.strict),
        "table4": {"echoselect": table4_view(similarity, is_clean, precisions)},
        "peers": {},
        "tau_sweep": tau_sweep(similarity, is_clean),
        "cache": stats.as_dict(), "echoselect_seconds": round(select_s, 3),
    }
    from echobench.echoalign.echoselect import exact_released_differences
    from echobench.echoalign.features import default_extractor

    released = exact_released_differences(  # open_clip with exact_released=true only (issue 19)
        originals, modified, tau, strict=params.strict,
        extractor=params.extractor or default_extractor(task.dataset), options=params.extractor_options,
        device=str(task.device), backend=params.similarity)
    if released is not None:
        doc["exact_released"] = released
    for name in peers:
        selector = SELECTORS.get(name)
        peer_started = time.perf_counter()
        selection = selector(task, **(peer_params or {}).get(name, {}))
        order = {int(i): k for k, i in enumerate(task.train.indices.cpu().numpy())}
        pos = np.array([order[int(i)] for i in selection.candidates])
        kept = np.zeros(len(noisy), dtype=bool)
        kept[[order[int(i)] for i in selection.indices]] = True
        hits = int((kept & is_clean).sum())
        doc["peers"][name] = {"n_selected": int(kept.sum()),
                              "precision": hits / kept.sum() if kept.any() else float("nan"),
                              "recall": hits / is_clean.sum() if is_clean.any() else float("nan"),
                              "seconds": round(time.perf_counter() - peer_started, 2)}
        doc["table4"][name] = table4_view(selection.scores, is_clean[pos], precisions)
    if out_dir is not None:
        out = Path(out_dir)
        figure = out / "similarity_hist.png"
        plot_histograms(similarity, is_clean, tau, figure,
                        f"{task.dataset}, {doc['noise']}, seed {task.seed}: S of clean vs noisy labels")
        sweep = out / "tau_sweep.png"
        plot_tau_sweep(doc["tau_sweep"], tau, sweep)
        doc["files"] = {"histogram": str(figure), "tau_sweep": str(sweep), "report": str(out / "select.json")}
        atomic_write_json(out / "select.json", doc)
        atomic_write_text(out / "select.md", format_select_report(doc) + "\n")
    return doc


def plot_tau_sweep(rows: list[dict], tau: float, path: Path) -> None:
    """Figure 4b: precision, recall and kept share of EchoSelect's originals against τ (atomic PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [r["tau"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for key, style in (("precision", "-o"), ("recall", "-s"), ("kept_share", "-^")):
        ax.plot(t, [r[key] for r in rows], style, markersize=3, label=key.replace("_", " "))
    ax.axvline(tau, color="k", linestyle="--", label=f"τ = {tau:g}")
    ax.set_xlabel("τ")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, path)


def _pvalue(p: float) -> str:
    return "< 1e-300 (below float range)" if p == 0 else f"{p:.3g}"


def format_select_report(doc: dict[str, Any]) -> str:
    from tabulate import tabulate

    e = doc["echoselect"]
    lines = [
        f"EchoSelect on {doc['dataset']} {doc['noise']} seed {doc['seed']} (training split: {e['n']} samples, "
        f"{e['n_noisy']} with a wrong label)",
        f"  τ = {e['tau']:g}: kept {e['n_selected']} originals, precision {e['precision']:.4f}, recall {e['recall']:.4f}",
        f"  mean S: clean {e['similarity_mean_clean']:.3f}, noisy {e['similarity_mean_noisy']:.3f}; "
        f"AUROC {e['auroc']:.4f}; KS statistic {e['ks_statistic']:.3f}, p-value {_pvalue(e['ks_pvalue'])}",
        f"  τ maximising Youden's J (true-clean + true-noisy rate − 1) here: {e['youden_tau']:.4f} (J {e['youden_j']:.3f}); "
        "calibrate on a world the benchmark does not use",
        "",
        "Table 4 view: samples kept at a fixed precision (ranking by each selector's score)",
    ]
    precisions = list(next(iter(doc["table4"].values())))
    rows = [[name, *view.values()] for name, view in doc["table4"].items()]
    lines.append(tabulate(rows, headers=["selector", *precisions], tablefmt="github"))
    if doc.get("exact_released"):
        r = doc["exact_released"]
        lines += ["", f"Released preprocessing (PIL, float32) vs the fast path ({r['fast_path']}) at τ = {r['tau']:g}: "
                      f"{r['decisions_differ']} of {r['n']} keep/replace decisions differ; max |ΔS| "
                      f"{r['max_abs_delta_s']:.4f}, mean {r['mean_abs_delta_s']:.4f}"]
    if doc["peers"]:
        lines += ["", "Peers' own selections:",
                  tabulate([[n, p["n_selected"], f"{p['precision']:.4f}", f"{p['recall']:.4f}", p["seconds"]]
                            for n, p in doc["peers"].items()],
                           headers=["selector", "selected", "precision", "recall", "seconds"], tablefmt="github")]
    lines += ["", "τ sweep (Figure 4b):",
              tabulate([[r["tau"], r["kept"], f"{r['precision']:.4f}", f"{r['recall']:.4f}"] for r in doc["tau_sweep"][::2]],
                       headers=["τ", "kept", "precision", "recall"], tablefmt="github")]
    if "files" in doc:
        lines.append(f"\nFigures and JSON: {doc['files']['histogram']}, {doc['files']['tau_sweep']}, {doc['files']['report']}")
    return "\n".join(lines)


def dump(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, default=float)
