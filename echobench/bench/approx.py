"""`echobench bench approx`: what an approximate EchoMod speedup costs EchoSelect, on the same pairs.

Exact-output speedups (one batched CFG pass, cached text embeddings, the fused step) are on by
default. Approximate ones change the images: fewer denoising steps, a lower generation resolution,
a tiny VAE decoder (`DiffusionConfig.steps`, `.resolution`, `.vae`). This bench runs EchoMod on one
noisy setting with the exact settings and with each approximate variant, on the same originals,
noisy labels and per-sample seeds, and reports for every row:

- generation seconds per image (the generation loop; loading the model is not counted) and the
  speedup over the exact row (the same process, one run);
- EchoSelect on that row's pairs at the same τ: originals kept, precision (share of kept samples
  whose noisy label is the clean one), recall, AUROC of S for clean vs noisy labels;
- precision at the exact row's number of kept samples (the top-k by S), which separates a change in
  ranking from a shift of S against a fixed τ;
- agreement with the exact row: share of samples with the same keep/replace decision, mean |ΔS|;
- each variant minus the exact row, for AUROC, precision at τ and precision@k, with a 95% interval
  from a paired bootstrap (`paired_differences`): the same resampled samples score both rows, so
  what varies from sample to sample in both rows alike cancels out of the difference;
- on `shapes` only, whether EchoMod did its job: the share of modified images that show the class of
  their (noisy) label, read by the procedural engine's scene recovery (`engines/procedural`; it
  reads 86.2% of world 0's 1,000 original training images as their clean class),
  for samples whose label is clean (the class must stay) and noisy (it must change).

Every row generates its pairs anew (a fresh cache directory unless `cache_dir` is given), so the
seconds measure generation, not cache reads. The document keeps every sample's S per row and its
clean/noisy flag under "samples", so its statistics can be recomputed from the JSON alone.
"""

from __future__ import annotations

import dataclasses
import tempfile
from typing import Any

import numpy as np

from echobench.echoalign.methods import EchoAlignParams, modify_pairs, resolve_tau, similarity_of_pairs
from echobench.echoalign.echoselect import auroc, keep_original, precision_recall, separation
from echobench.errors import EchobenchError
from echobench.seeding import numpy_rng

EXACT = "exact"
GRID_SAMPLES = 10
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_LEVEL = 0.95


def parse_variant(text: str) -> dict[str, Any]:
    """'steps=10' or 'steps=10,resolution=16' → {'steps': 10, 'resolution': 16} (YAML scalars)."""
    from echobench.yamlsafe import load_yaml

    out: dict[str, Any] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise EchobenchError(f"--variant must look like KEY=VALUE[,KEY=VALUE...], got {text!r}")
        out[key.strip()] = load_yaml(value.strip(), f"--variant {text!r}")
    return out


def bench_approx(task, clean: np.ndarray, params: EchoAlignParams, variants: list[str], *,
                 cache_dir: str | None = None, progress: bool = True, grid: str | None = None) -> dict[str, Any]:
    """The rows of the module docstring: `params.engine_options` is the exact row, each variant
    (a `parse_variant` string) overrides some of them. `grid`: a PNG path for `plot_grid` of the
    first `GRID_SAMPLES` samples with a wrong label."""
    if not variants:
        raise EchobenchError("give at least one approximate variant, e.g. --variant steps=10")
    parsed = {text: parse_variant(text) for text in variants}
    originals = task.train.images.permute(0, 2, 3, 1).cpu().numpy()
    indices = task.train.indices.cpu().numpy()
    noisy = task.train.labels.cpu().numpy()
    is_clean = noisy == clean
    tau = resolve_tau(params, task.noise_rate, task.dataset)
    rows: list[dict[str, Any]] = []
    similarities: dict[str, list[float]] = {}
    exact: dict[str, Any] = {}
    pictured = np.flatnonzero(~is_clean)[:GRID_SAMPLES]
    pictures = {"original": originals[pictured]}
    with tempfile.TemporaryDirectory(prefix="echobench-approx-") as scratch:
        for name, overrides in [(EXACT, {}), *parsed.items()]:
            options = {**params.engine_options, **overrides}
            similarity, seconds, modified = _run_row(task, originals, indices, noisy, params, options,
                                                     cache_dir or scratch, name, progress)
            kept = keep_original(similarity, tau, strict=params.strict)
            similarities[name] = [float(v) for v in similarity]
            row = {"variant": name, "options": options, "seconds_per_image": seconds / len(noisy),
                   **separation(similarity, is_clean, tau, strict=params.strict)}
            if name == EXACT:
                exact = {"similarity": similarity, "kept": kept, "seconds": seconds, "k": int(kept.sum())}
            pictures[name] = modified[pictured]
            row["speedup"] = exact["seconds"] / seconds if seconds > 0 else float("nan")
            row["precision_at_exact_k"] = _precision_at_k(similarity, is_clean, exact["k"])
            row["decision_agreement"] = float((kept == exact["kept"]).mean())
            row["mean_abs_delta_s"] = float(np.abs(similarity - exact["similarity"]).mean())
            if task.dataset == "shapes":
                shown = shows_class(modified, noisy)
                row["target_shown_clean"] = float(shown[is_clean].mean()) if is_clean.any() else float("nan")
                row["target_shown_noisy"] = float(shown[~is_clean].mean()) if (~is_clean).any() else float("nan")
            rows.append(row)
    if grid is not None:
        captions = [f"{task.class_names[clean[k]]}→{task.class_names[noisy[k]]}" for k in pictured]
        plot_grid(pictures, captions, grid)
    doc = {
        "dataset": task.dataset, "noise": f"{task.noise_kind}:{task.noise_rate:g}", "seed": task.seed,
        "n": int(len(noisy)), "n_noisy": int((~is_clean).sum()), "tau": float(tau),
        "params": dataclasses.asdict(params), "rows": rows,
        "samples": {"is_clean": [bool(v) for v in is_clean], "similarity": similarities},
    }
    doc["paired"] = paired_differences(doc)
    return doc


def paired_differences(doc: dict[str, Any], *, resamples: int = BOOTSTRAP_RESAMPLES,
                       level: float = BOOTSTRAP_LEVEL) -> dict[str, Any]:
    """Each variant minus the exact row on the same samples, from `doc["samples"]`: AUROC, precision
    at the document's τ, and precision@k with k the exact row's number kept, each with a percentile
    interval from a paired bootstrap (Efron & Tibshirani, *An Introduction to the Bootstrap*, 1993,
    ch. 13): every resample draws n samples with replacement and scores both rows on that draw.
    Because the rows share originals, labels and seeds, their S are correlated, and the paired
    interval is much narrower than either AUROC's own standard error (Hanley & McNeil 1982).

    The resamples come from a stream of the document's seed, so the intervals are reproducible."""
    if resamples < 1 or not 0 < level < 1:
        raise EchobenchError(f"the bootstrap needs resamples >= 1 and 0 < level < 1, got {resamples}, {level}")
    is_clean = np.asarray(doc["samples"]["is_clean"], dtype=bool)
    rows = {name: np.asarray(s, dtype=np.float64) for name, s in doc["samples"]["similarity"].items()}
    tau, strict = float(doc["tau"]), bool(doc["params"].get("strict", False))
    exact = rows[EXACT]

    def stats(idx: np.ndarray, s: np.ndarray) -> np.ndarray:
        clean = is_clean[idx]
        k = int(keep_original(exact[idx], tau, strict=strict).sum())
        precision, _ = precision_recall(keep_original(s[idx], tau, strict=strict), clean)
        return np.array([auroc(s[idx], clean), precision, _precision_at_k(s[idx], clean, k)])

    rng = numpy_rng(int(doc["seed"]), "bench-approx-bootstrap")
    n = len(is_clean)
    draws = [np.arange(n), *(rng.integers(0, n, size=n) for _ in range(resamples))]  # the sample itself first

    def on_draws(s: np.ndarray) -> np.ndarray:
        return np.array([stats(idx, s) for idx in draws])

    exact_stats = on_draws(exact)
    alpha = (1 - level) / 2
    out: dict[str, Any] = {"resamples": resamples, "level": level, "stream": "bench-approx-bootstrap", "rows": {}}
    for name, s in rows.items():
        if name == EXACT:
            continue
        delta = on_draws(s) - exact_stats
        entry = {}
        for j, key in enumerate(("auroc", "precision", "precision_at_exact_k")):
            finite = delta[1:, j][np.isfinite(delta[1:, j])]
            low, high = (np.quantile(finite, [alpha, 1 - alpha]) if len(finite) else (float("nan"),) * 2)
            entry[key] = {"delta": float(delta[0, j]), "low": float(low), "high": float(high)}
        out["rows"][name] = entry
    return out


def _run_row(task, originals, indices, noisy, params: EchoAlignParams, options: dict[str, Any], cache_dir: str,
             name: str, progress: bool) -> tuple[np.ndarray, float]:
    from echobench.progress import progress_bar

    with progress_bar(len(noisy), f"EchoMod {name}", progress) as bar:
        modified, stats = modify_pairs(task.dataset, task.dataset_options, task.class_names, originals, indices, noisy,
                                       engine=params.engine, engine_options=options, base_seed=params.base_seed,
                                       device=str(task.device), cache_dir=cache_dir,
                                       batch_size=params.generation_batch_size, progress=bar.update)
    if stats.cached:
        raise EchobenchError(f"variant {name!r}: {stats.cached} pairs came from the cache in {cache_dir}, so its "
                             "seconds would not measure generation; leave --cache-dir out (a fresh one is used)")
    similarity = similarity_of_pairs(task.dataset, originals, modified, extractor=params.extractor,
                                     extractor_options=params.extractor_options, device=str(task.device),
                                     backend=params.similarity)
    return similarity, stats.seconds, modified  # seconds: the generation loop only, not loading the model


def plot_grid(rows: dict[str, np.ndarray], captions: list[str], path) -> None:
    """One row of images per entry of `rows` (originals first, then each variant's modified images),
    one column per sample captioned "clean class→noisy label", as a PNG (atomic)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from echobench.files import save_png

    columns = max(1, len(captions))
    fig, axes = plt.subplots(len(rows), columns, figsize=(1.1 * columns + 1.6, 1.2 * len(rows)), squeeze=False)
    for r, (name, images) in enumerate(rows.items()):
        for c in range(columns):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(images):
                ax.imshow(images[c], interpolation="nearest")
            if r == 0 and c < len(captions):
                ax.set_title(captions[c], fontsize=6)
        axes[r][0].set_ylabel(name, fontsize=6, rotation=0, ha="right", va="center")
    fig.tight_layout()
    save_png(fig, path)


def shows_class(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per `shapes` image, whether the procedural engine's scene recovery reads class `labels[k]` in it."""
    from echobench.engines.procedural.engine import recover_scene

    return np.array([recover_scene(image).apparent == label for image, label in zip(images, labels)], dtype=bool)


def _precision_at_k(similarity: np.ndarray, is_clean: np.ndarray, k: int) -> float:
    """Share of clean labels among the k samples of highest S (ties broken by position, stably)."""
    if k <= 0:
        return float("nan")
    top = np.argsort(-similarity, kind="stable")[:k]
    return float(is_clean[top].mean())


def format_bench_approx(doc: dict[str, Any]) -> str:
    from tabulate import tabulate

    head = (f"EchoSelect after exact and approximate EchoMod on {doc['dataset']} {doc['noise']} seed {doc['seed']}: "
            f"{doc['n']} training samples, {doc['n_noisy']} with a wrong label; τ = {doc['tau']:g} for every row")
    table = [[r["variant"], f"{r['seconds_per_image']:.4f}", f"{r['speedup']:.2f}×", r["n_selected"],
              f"{r['precision']:.4f}", f"{r['recall']:.4f}", f"{r['auroc']:.4f}", f"{r['precision_at_exact_k']:.4f}",
              f"{r['decision_agreement']:.4f}", f"{r['mean_abs_delta_s']:.4f}"] for r in doc["rows"]]
    headers = ["variant", "s/image", "speedup", "kept", "precision", "recall", "AUROC", "precision@k(exact)",
               "same decision", "mean |ΔS|"]
    if doc["dataset"] == "shapes":
        for line, r in zip(table, doc["rows"]):
            line += [f"{r['target_shown_clean']:.4f}", f"{r['target_shown_noisy']:.4f}"]
        headers += ["label shown (clean)", "label shown (noisy)"]
    text = head + "\n\n" + tabulate(table, headers, tablefmt="github", disable_numparse=True)
    paired = doc.get("paired")
    if paired and paired["rows"]:
        def cell(d):
            return f"{d['delta']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]"

        lines = [[name, cell(e["auroc"]), cell(e["precision"]), cell(e["precision_at_exact_k"])]
                 for name, e in paired["rows"].items()]
        text += (f"\n\nVariant minus exact, on the same samples ({paired['level']:.0%} paired-bootstrap interval, "
                 f"{paired['resamples']} resamples):\n\n"
                 + tabulate(lines, ["variant", "ΔAUROC", "Δprecision", "Δprecision@k(exact)"], tablefmt="github",
                            disable_numparse=True))
    return text
