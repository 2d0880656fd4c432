"""EchoSelect: keep the original where it resembles its modification, else use the modification.

Paper (§4.2, Algorithm 1): S = cosine(f(X), f(X')) of image features of the original X and its
EchoMod output X'; the original is kept where S ≥ τ, otherwise X' replaces it, both with the noisy
label. τ = 0.4 at 30% noise and 0.52 at 45% and 50% noise (appendix C and the released README).
The released code (KevinCarpricorn/EchoAlign `clip_filter.py`) keeps `S > τ` (strict): `strict=True`.

Also here: the analysis of how well S separates clean from noisy labels (precision, recall, AUROC,
Kolmogorov–Smirnov), the Table 4 view (how many samples a selector keeps at a fixed precision) and
the τ sweep of Figure 4b.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np

from echobench.errors import EchobenchError
from echobench.files import save_png

SIMILARITY_BACKENDS = ("auto", "faiss", "torch")
TABLE4_PRECISIONS = (0.94, 0.96, 0.98, 0.99)


def paired_cosine(a: np.ndarray, b: np.ndarray, backend: str = "auto") -> np.ndarray:
    """Cosine similarity of row i of `a` with row i of `b` (float32, shape (N,)).

    ``faiss``: `faiss.normalize_L2` and `faiss.pairwise_indexed_inner_product` (row-paired inner
    products; O(N·D), so the CPU routine is used even with a GPU build). ``torch``: `F.normalize` and a
    row-wise dot product. ``auto``: faiss when installed. Both agree to float32 rounding.
    """
    a = np.ascontiguousarray(a, dtype=np.float32)
    b = np.ascontiguousarray(b, dtype=np.float32)
    if a.shape != b.shape or a.ndim != 2:
        raise EchobenchError(f"paired similarity needs two (N, D) arrays of one shape; got {a.shape} and {b.shape}")
    if backend not in SIMILARITY_BACKENDS:
        raise EchobenchError(f"unknown similarity backend {backend!r}; choose one of {', '.join(SIMILARITY_BACKENDS)}")
    if backend == "auto":
        from echobench.training.knn import faiss_available

        backend = "faiss" if faiss_available() else "torch"
    if backend == "faiss":
        from echobench.training.knn import import_faiss

        faiss = import_faiss()
        a, b = a.copy(), b.copy()
        faiss.normalize_L2(a)
        faiss.normalize_L2(b)
        n, d = a.shape
        ids = np.arange(n, dtype=np.int64)
        out = np.empty(n, dtype=np.float32)
        if n:
            faiss.pairwise_indexed_inner_product(d, n, faiss.swig_ptr(a), faiss.swig_ptr(ids), faiss.swig_ptr(b),
                                                 faiss.swig_ptr(ids), faiss.swig_ptr(out))
        return out
    import torch
    import torch.nn.functional as F

    ta, tb = F.normalize(torch.from_numpy(a), dim=1), F.normalize(torch.from_numpy(b), dim=1)
    return (ta * tb).sum(1).numpy()


def check_tau(tau: float) -> float:
    tau = float(tau)
    if not -1.0 <= tau <= 1.0 or math.isnan(tau):
        raise EchobenchError(f"τ = {tau} is outside [-1, 1], the range of a cosine similarity: pass a threshold in [-1, 1]")
    return tau


def default_tau(noise_rate: float, extractor: str = "open_clip") -> float:
    """The default threshold of an extractor (`features.extractor_default_tau`): for CLIP the paper's
    0.4 at 30% noise and 0.52 at 45% and 50% (rates below 37.5% take the first)."""
    from echobench.echoalign.features import extractor_default_tau

    return extractor_default_tau(extractor, noise_rate)


def keep_original(similarity: np.ndarray, tau: float, *, strict: bool = False) -> np.ndarray:
    """Algorithm 1: True where the original is kept (S ≥ τ; S > τ with `strict`), else modified."""
    tau = check_tau(tau)
    s = np.asarray(similarity)
    return s > tau if strict else s >= tau


# --- analysis ---------------------------------------------------------------------------------------------

def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of `scores` for `positive` (ties count one half), via ranks."""
    from scipy.stats import rankdata

    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def precision_recall(kept: np.ndarray, is_clean: np.ndarray) -> tuple[float, float]:
    kept, is_clean = np.asarray(kept, bool), np.asarray(is_clean, bool)
    n_kept, n_clean = int(kept.sum()), int(is_clean.sum())
    hits = int((kept & is_clean).sum())
    return (hits / n_kept if n_kept else float("nan"), hits / n_clean if n_clean else float("nan"))


def count_at_precision(scores: np.ndarray, is_clean: np.ndarray, precision: float) -> int:
    """The largest k such that the k highest-scoring samples have precision ≥ `precision` (Table 4).

    Ties in score are taken together (a threshold cannot split them)."""
    scores, is_clean = np.asarray(scores, dtype=np.float64), np.asarray(is_clean, bool)
    order = np.argsort(-scores, kind="stable")
    s, c = scores[order], is_clean[order]
    hits = np.cumsum(c)
    k = np.arange(1, len(s) + 1)
    at_threshold = np.r_[s[1:] != s[:-1], True]  # only cut after the last of a group of ties
    ok = (hits / k >= precision - 1e-12) & at_threshold
    return int(k[ok].max()) if ok.any() else 0


def table4_view(scores: np.ndarray, is_clean: np.ndarray, precisions=TABLE4_PRECISIONS) -> dict[str, int]:
    return {f"{round(p * 100):d}%": count_at_precision(scores, is_clean, p) for p in precisions}


def tau_sweep(similarity: np.ndarray, is_clean: np.ndarray, taus=None) -> list[dict[str, float]]:
    """Figure 4b: for each τ, the share kept as original, precision and recall of the kept set."""
    taus = np.round(np.arange(0.0, 1.0001, 0.05), 2) if taus is None else taus
    rows = []
    for tau in taus:
        kept = keep_original(similarity, float(tau))
        precision, recall = precision_recall(kept, is_clean)
        rows.append({"tau": float(tau), "kept": int(kept.sum()), "kept_share": float(kept.mean()) if len(kept) else 0.0,
                     "precision": precision, "recall": recall})
    return rows


def youden_tau(similarity: np.ndarray, is_clean: np.ndarray) -> tuple[float, float]:
    """(τ, J): the threshold maximising Youden's J = true-clean rate + true-noisy rate − 1 of keeping
    S ≥ τ, over the observed similarities (the largest such τ on ties), and that J. This is how a
    generator's or an extractor's default τ is calibrated, on a world the benchmark does not use
    (`features.ShapesHog`); (nan, nan) without both clean and noisy samples."""
    s, is_clean = np.asarray(similarity, dtype=np.float64), np.asarray(is_clean, bool)
    n_clean, n_noisy = int(is_clean.sum()), int((~is_clean).sum())
    if n_clean == 0 or n_noisy == 0:
        return float("nan"), float("nan")
    order = np.argsort(-s, kind="stable")
    s_sorted, clean_sorted = s[order], is_clean[order]
    kept_clean = np.cumsum(clean_sorted)  # keeping the k largest S
    kept_noisy = np.cumsum(~clean_sorted)
    last = np.r_[s_sorted[1:] != s_sorted[:-1], True]  # a threshold keeps every tie of its value
    j = kept_clean / n_clean + (n_noisy - kept_noisy) / n_noisy - 1
    j = np.where(last, j, -np.inf)
    best = int(np.argmax(j))
    return float(s_sorted[best]), float(j[best])


def separation(similarity: np.ndarray, is_clean: np.ndarray, tau: float, *, strict: bool = False) -> dict[str, Any]:
    """How well S separates clean from noisy labels, and what EchoSelect keeps at τ."""
    from scipy.stats import ks_2samp

    s, is_clean = np.asarray(similarity, dtype=np.float64), np.asarray(is_clean, bool)
    kept = keep_original(s, tau, strict=strict)
    precision, recall = precision_recall(kept, is_clean)
    out: dict[str, Any] = {
        "n": int(len(s)), "n_clean": int(is_clean.sum()), "n_noisy": int((~is_clean).sum()),
        "tau": float(tau), "n_selected": int(kept.sum()), "precision": precision, "recall": recall,
        "auroc": auroc(s, is_clean),
        **dict(zip(("youden_tau", "youden_j"), youden_tau(s, is_clean))),
        "similarity_mean_clean": float(s[is_clean].mean()) if is_clean.any() else float("nan"),
        "similarity_mean_noisy": float(s[~is_clean].mean()) if (~is_clean).any() else float("nan"),
    }
    if is_clean.any() and (~is_clean).any():
        ks = ks_2samp(s[is_clean], s[~is_clean])
        out.update(ks_statistic=float(ks.statistic), ks_pvalue=float(ks.pvalue))
    else:
        out.update(ks_statistic=float("nan"), ks_pvalue=float("nan"))
    return out


def plot_histograms(similarity: np.ndarray, is_clean: np.ndarray, tau: float, path, title: str) -> None:
    """Figure 3: similarity histograms of clean vs noisy samples with τ marked, as a PNG (atomic)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s, is_clean = np.asarray(similarity), np.asarray(is_clean, bool)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    bins = np.linspace(min(-0.05, float(s.min(initial=0))), 1.0, 51)
    ax.hist(s[is_clean], bins=bins, alpha=0.6, label=f"clean label ({int(is_clean.sum())})", color="tab:blue")
    ax.hist(s[~is_clean], bins=bins, alpha=0.6, label=f"noisy label ({int((~is_clean).sum())})", color="tab:red")
    ax.axvline(tau, color="k", linestyle="--", label=f"τ = {tau:g}")
    ax.set_xlabel("cosine similarity of original and modified image")
    ax.set_ylabel("samples")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, path)


def exact_released_differences(originals: np.ndarray, modified: np.ndarray, tau: float, *, strict: bool,
                               extractor: str, options: dict[str, Any] | None, device: str,
                               backend: str = "auto", built=None) -> dict[str, Any] | None:
    """When EchoSelect runs open_clip with `exact_released=true`: S of the pairs from the released path
    (PIL preprocessing, float32) and from the fast one (tensor preprocessing, float16 on a GPU), both
    with one model (`built`, or created once here, so random weights are shared too), and how many
    keep/replace decisions at τ differ; None for any other extractor or setting."""
    from echobench.echoalign.features import ClipOptions, OpenClip, as_bool, create_clip, extractor_options

    options = dict(options or {})
    if extractor != "open_clip" or not as_bool(options.get("exact_released", False), "exact_released"):
        return None
    exact_options = extractor_options(ClipOptions, {**options, "exact_released": True}, "extractor 'open_clip'")
    built = built if built is not None else create_clip(exact_options)
    paths = {}
    for name, exact in (("exact", True), ("fast", False)):
        fx = OpenClip(dataclasses.replace(exact_options, exact_released=exact), device, built=built)
        paths[name] = (fx, paired_cosine(fx.extract(originals), fx.extract(modified), backend))
    (_, s_exact), (fast, s_fast) = paths["exact"], paths["fast"]
    exact_keep, fast_keep = keep_original(s_exact, tau, strict=strict), keep_original(s_fast, tau, strict=strict)
    delta = np.abs(np.asarray(s_fast, np.float64) - np.asarray(s_exact, np.float64))
    return {"tau": float(tau), "n": int(len(exact_keep)), "decisions_differ": int((exact_keep != fast_keep).sum()),
            "kept_exact": int(exact_keep.sum()), "kept_fast": int(fast_keep.sum()),
            "max_abs_delta_s": float(delta.max()) if len(delta) else 0.0,
            "mean_abs_delta_s": float(delta.mean()) if len(delta) else 0.0,
            "fast_path": f"tensor preprocessing, {'float16' if fast.half else 'float32'} on {device}"}
