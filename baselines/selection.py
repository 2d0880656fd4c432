"""Sample-selection peers: which training samples does each method believe are correctly labelled?

The paper's Table 4 compares EchoSelect's selected samples with BLTM's distilled examples at a fixed
selection accuracy; this module produces the peers' selections on any echobench `Task` so that their
size and precision can be measured against the clean labels (`selection_quality`).

Every selector is a function ``selector(task, **params) -> Selection`` registered in `SELECTORS`
(``small-loss``, ``bltm``, ``simifeat``, ``confident-learning``). A `Selection` holds the kept dataset
indices (sorted, unique, int64), the candidates (the training split's dataset indices, in
`task.train` order), one score per candidate (higher = more likely correctly labelled) and an `info`
dict of counts and settings. Each selector's rule is also a pure function on arrays for tests:
`small_loss_per_class`, `bltm_distill`, `knn_vote` / `simifeat_clean_rounds`, `stratified_folds` and
`confident_learning_keep`.

Networks. small-loss, BLTM and SimiFeat (by default) need a network trained on the noisy labels
first: `warmup_ce` trains a fresh protocol network (seed stream "warmup", so the three see the same
initial weights and batch order) with cross-entropy for ``warmup_epochs`` epochs: the first epochs of
a CE run under the protocol (its optimizer, learning rate, weight decay, batch size and lr milestones as
they are — under the paper protocol the lr stays 0.1 for a 10-epoch warm-up). ``warmup_epochs`` is
capped at the protocol's epochs (a protocol shorter than the official warm-up gets a warm-up as long
as the protocol; nothing is rescaled). Nothing is recorded in `task.history`. Pass ``model=`` (an
already trained network of the task) to skip the warm-up. Per-sample statistics are computed on the
un-augmented training images in eval mode (`Task.predict`).

small-loss (Co-teaching style; Han et al. 2018, bhanML/Co-teaching `loss.py` `loss_coteaching`,
`main.py`): rank by cross-entropy and keep the ``(1 − τ)`` smallest-loss share, τ = ``rate`` (default the
task's nominal noise rate, as `main.py`'s `forget_rate = args.noise_rate`). Deviations: the official
rule ranks each mini-batch during training, over all classes together, with τ ramped over T_k = 10
epochs; here the ranking is done once, over the whole training split after a 10-epoch (= T_k)
warm-up, and *per noisy class* (``⌊(1 − τ)·n_c⌋`` of each class's n_c samples, at least one), so that
classes that are learnt later are not emptied. The count rule (`kept_count`: 1e-9 float tolerance, at least one,
ties by position) is `two_networks.num_remember`'s, except that a keep fraction of 0 keeps nothing. Warm-up: augmented batches (the protocol's), last epoch kept.

bltm (Yang et al., ICML 2022, ShuoYang-1998/BLTM `main.py`): warm-up CE for 10 epochs (official:
SGD lr 0.01, momentum 0.9, no weight decay, batch 128, no augmentation — `transforms.ToTensor()` and
`Normalize` only — keeping the epoch of best *test* accuracy), then "distilled examples" = samples
whose max softmax probability exceeds (1 + ρ)/2, ρ = 0.1 (`--rho`), i.e. 0.55, compared as the
official float32 tensor against the Python float (the threshold is cast to the probabilities' dtype).
BLTM relabels every distilled example to its predicted class (the "Bayes label") and reports the
accuracy of those Bayes labels against the clean labels (its Table 4 "select. acc."). echobench wants
samples whose *given* label is clean, so the selection keeps the distilled examples whose predicted
class equals the noisy label; since 0.55 > 1/2 that is exactly {p_ỹ(x) > 0.55}. Both sets are reported:
``info["n_distilled"]`` (BLTM's own count; indices and Bayes labels in ``info["distilled_indices"]``,
``info["bayes_labels"]``; `distilled_accuracy` gives BLTM's "select. acc." from clean labels) and
``info["n_agree"]`` (= the selection's size). Deviations: the protocol's
optimizer and lr (``lr=`` overrides it) instead of SGD 0.01, the epoch of best *noisy-validation*
accuracy instead of best test accuracy (echobench never peeks at the test set). No augmentation in the
warm-up (``augment=False``), as the official code.

simifeat (Zhu, Song & Liu, ICML 2022, "Detecting Corrupted Labels Without Training a Model to
Predict", UCSC-REAL/SimiFeat `main_fast.py`, `hoc.py` `count_knn_distribution`, `test_c10_instance.sh`):
the "mv" rule. In each round, features of every training image → its k = 10 nearest by cosine
(`--k 10`) → votes v_c = Σ_j (1 − d_j)·[ỹ_j = c] with d = 1 − cos (`cosDistance`; `min_similarity` = 0) →
the sample is flagged in that round when argmax_c v_c ≠ ỹ. Official details kept: `topk(k)` over the
distance matrix includes the sample itself as its first "neighbour", so the k = 10 votes are the
sample's own label plus its 9 nearest others, and the self entry's distance is replaced by
2·d₁ − d₂ (`values[:, 0] = 2.0 * values[:, 1] - values[:, 2]`), i.e. its weight is 2·s₁ − s₂ with s₁, s₂ the
cosine similarities of the two nearest others (``count_self=True``; `knn_vote(include_self=True)`).
The label distribution is L2-normalised before the argmax, which does not change it. Over rounds
(official 21 rounds, `--num_epoch 21`, each with RandomCrop(pad 4) + horizontal flip), a sample is
kept when it was judged clean in more than half of them (`np.round(mean)`, half rounds down). The score
is the share of rounds that judged it clean. Deviations:
- Features: the official runs use CLIP ViT-B/32 image features (`--pre_type CLIP`); CLIP weights
  cannot be downloaded here, so by default the features are the penultimate layer (`model.features`)
  of the warm-up CE network (best noisy-validation epoch, eval mode) — the same fallback as
  `baselines/identifiability.py`. ``features=`` takes a callable mapping a normalised image batch
  (B, 3, H, W) to (B, D) features (e.g. a CLIP image encoder), or a fixed (N_train, D) array in
  `task.train` order (then one round: a fixed array cannot be augmented).
- Rounds: ``rounds`` = 5 by default (CPU); rounds use the protocol's pad-crop and flip
  (`trainer.augment`); with ``rounds=1`` the single round is un-augmented (``augment=None`` means
  "augment when rounds > 1").
- Nearest neighbours by `echobench.training.knn` (FAISS or chunked torch) instead of the official N×N matrix.

confident-learning (Northcutt, Jiang & Chuang, JAIR 2021; cleanlab `cleanlab.filter.find_label_issues`):
out-of-fold predicted probabilities from K = 5 stratified folds (cleanlab's own `estimate_cv_predicted_probabilities`
default, `cv_n_folds=5`), each from a fresh protocol network trained with CE on the other K − 1 folds
(augmented batches, protocol optimizer; ``epochs`` = 10 per fold by default, capped at the protocol's
epochs — a scaled-down stand-in for full training, since K networks are trained), then
`find_label_issues(labels, pred_probs, filter_by="prune_by_noise_rate")` (cleanlab's default) and the
non-issues are kept. ``n_jobs=1`` by default (cleanlab would start a process pool per call; its docs say
the result does not depend on n_jobs). Score: out-of-fold self-confidence p_ỹ(x).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from echobench.errors import EchobenchError
from echobench.training.knn import knn
from echobench.seeding import numpy_rng
from echobench.training.selectors import SELECTORS  # lazy entries there; the definitions below resolve them
from echobench.training.trainer import augment, train_epochs

# A selector: fn(task, **params) -> Selection

OFFICIAL_WARMUP_EPOCHS = 10  # BLTM `main.py` (`for epoch in range(0, 10)`); Co-teaching's T_k
BLTM_RHO = 0.1
SIMIFEAT_K = 10
CLEANLAB_MISSING = ("selector 'confident-learning' needs cleanlab, which is not installed: "
                    "`pip install cleanlab` (or `pip install 'echobench[dev]'`).")


# --- the result ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Selection:
    """What a selector keeps: dataset `indices` (sorted, unique, int64) ⊆ `candidates`.

    `candidates` are the dataset indices the selector looked at (the training split, `task.train`
    order) and `scores[i]` is candidate i's score (higher = more likely correctly labelled; each
    selector's docstring says what it is). `info` holds counts and settings.
    """

    name: str
    indices: np.ndarray
    candidates: np.ndarray
    scores: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        idx = np.asarray(self.indices)
        if idx.dtype != np.int64 or idx.ndim != 1:
            raise ValueError(f"Selection {self.name}: indices must be 1-D int64, got {idx.dtype} {idx.shape}")
        if idx.size and np.any(np.diff(idx) <= 0):
            raise ValueError(f"Selection {self.name}: indices must be sorted and unique")
        if len(self.scores) != len(self.candidates):
            raise ValueError(f"Selection {self.name}: {len(self.scores)} scores for {len(self.candidates)} candidates")
        if not np.isin(idx, self.candidates).all():
            raise ValueError(f"Selection {self.name}: kept indices outside the candidates")

    def __len__(self) -> int:
        return int(self.indices.size)

    @property
    def kept_mask(self) -> np.ndarray:
        """Boolean mask over `candidates`: True where kept."""
        return np.isin(self.candidates, self.indices)

    def summary(self) -> dict[str, Any]:
        """JSON-able facts: the name, the sizes and the scalar/list entries of `info` (arrays left out)."""
        out: dict[str, Any] = {"name": self.name, "n_selected": len(self), "n_candidates": int(self.candidates.size)}
        for key, value in self.info.items():
            if not isinstance(value, np.ndarray):
                out[key] = value
        return out


def make_selection(name: str, candidates: np.ndarray, keep: np.ndarray, scores: np.ndarray, **info: Any) -> Selection:
    """A `Selection` from a boolean `keep` mask over `candidates` (dataset indices)."""
    candidates = np.asarray(candidates, dtype=np.int64)
    keep = np.asarray(keep, dtype=bool)
    kept = np.unique(candidates[keep]).astype(np.int64)
    info = {"n_candidates": int(candidates.size), "n_selected": int(kept.size), **info}
    return Selection(name, kept, candidates, np.asarray(scores, dtype=np.float64), info)


def selection_quality(kept_indices, noisy_labels_by_index, clean_labels_by_index, *, candidates=None) -> dict[str, Any]:
    """Size, precision and recall of a selection of samples meant to be correctly labelled.

    `noisy_labels_by_index[i]` / `clean_labels_by_index[i]` are sample i's noisy and clean labels
    (arrays indexed by dataset index). precision = share of the selected whose noisy label equals the
    clean one (NaN for an empty selection); recall = share of the clean candidates that were selected,
    the candidates being `candidates` (e.g. `task.train.indices`; default every index of the arrays).
    Also reports the candidates' clean share (`base_rate`: the precision of keeping everything).
    """
    noisy = np.asarray(noisy_labels_by_index)
    clean = np.asarray(clean_labels_by_index)
    if noisy.shape != clean.shape or noisy.ndim != 1:
        raise ValueError(f"noisy and clean labels must be 1-D arrays of one length, got {noisy.shape} and {clean.shape}")
    kept = np.unique(np.asarray(kept_indices, dtype=np.int64))
    cand = np.arange(len(noisy)) if candidates is None else np.unique(np.asarray(candidates, dtype=np.int64))
    if kept.size and not np.isin(kept, cand).all():
        raise ValueError("selection_quality: kept indices outside the candidates")
    is_clean = noisy == clean
    n_clean = int(is_clean[cand].sum())
    hits = int(is_clean[kept].sum())
    return {
        "n_selected": int(kept.size),
        "precision": hits / kept.size if kept.size else float("nan"),
        "recall": hits / n_clean if n_clean else float("nan"),
        "n_candidates": int(cand.size),
        "n_clean": n_clean,
        "base_rate": n_clean / cand.size if cand.size else float("nan"),
    }


def distilled_accuracy(selection: Selection, clean_labels_by_index) -> float:
    """BLTM's own "selection accuracy" (its Table 4 "select. acc."): the share of the distilled examples
    whose Bayes label (predicted class) equals the clean label. NaN when nothing was distilled."""
    idx = np.asarray(selection.info["distilled_indices"], dtype=np.int64)
    bayes = np.asarray(selection.info["bayes_labels"], dtype=np.int64)
    clean = np.asarray(clean_labels_by_index)
    return float((bayes == clean[idx]).mean()) if idx.size else float("nan")


# --- pure rules ----------------------------------------------------------------------------------------

def kept_count(n: int, keep_fraction: float) -> int:
    """⌊keep_fraction·n⌋ (1e-9 tolerance for float error), at least 1 when n > 0 and keep_fraction > 0."""
    if not 0.0 <= keep_fraction <= 1.0:
        raise ValueError(f"keep fraction must lie in [0, 1], got {keep_fraction}")
    if n <= 0 or keep_fraction == 0.0:
        return 0
    return min(n, max(1, math.floor(keep_fraction * n + 1e-9)))


def small_loss_per_class(losses, labels, keep_fraction: float) -> np.ndarray:
    """Positions (sorted, int64) of the `kept_count(n_c, keep_fraction)` smallest losses of each class
    c of `labels`; ties are broken by position."""
    losses = np.asarray(losses, dtype=np.float64)
    labels = np.asarray(labels)
    if losses.shape != labels.shape or losses.ndim != 1:
        raise ValueError(f"losses and labels must be 1-D of one length, got {losses.shape} and {labels.shape}")
    kept = []
    for c in np.unique(labels):
        pos = np.flatnonzero(labels == c)
        order = np.argsort(losses[pos], kind="stable")
        kept.append(pos[order[: kept_count(len(pos), keep_fraction)]])
    return np.sort(np.concatenate(kept)).astype(np.int64) if kept else np.zeros(0, dtype=np.int64)


def bltm_threshold(rho: float = BLTM_RHO) -> float:
    """BLTM's distillation threshold (1 + ρ)/2."""
    return (1.0 + rho) / 2.0


def bltm_distill(probs, labels, rho: float = BLTM_RHO) -> dict[str, np.ndarray]:
    """BLTM's distilled examples from softmax probabilities (N, C) and noisy labels (N,).

    Returns ``distilled`` (max probability > (1 + ρ)/2, compared in the probabilities' dtype as the
    official float32 torch comparison), ``bayes_labels`` (the argmax, BLTM's new label for a distilled
    example) and ``clean`` = distilled ∧ (Bayes label = noisy label), the selection of samples whose
    given label is kept. Boolean masks and int64 labels, all (N,).
    """
    probs = np.asarray(probs)
    labels = np.asarray(labels)
    if probs.ndim != 2 or labels.shape != (probs.shape[0],):
        raise ValueError(f"probs must be (N, C) and labels (N,), got {probs.shape} and {labels.shape}")
    dtype = probs.dtype if np.issubdtype(probs.dtype, np.floating) else np.float64
    threshold = np.asarray(bltm_threshold(rho), dtype=dtype)
    top = probs.max(axis=1)
    bayes = probs.argmax(axis=1).astype(np.int64)
    distilled = top > threshold
    return {"distilled": distilled, "bayes_labels": bayes, "clean": distilled & (bayes == labels)}


def knn_vote(neighbour_indices, neighbour_sims, labels, num_classes: int, *, include_self: bool = False):
    """SimiFeat's weighted kNN label vote.

    Row i of `neighbour_indices` (N, k) / `neighbour_sims` (N, k) lists sample i's neighbours (not
    itself) and their cosine similarities s = 1 − d; `labels` (N,) are the noisy labels. The votes are
    v_ic = Σ_j s_ij·[labels[nbr_ij] = c] (`hoc.py`: `(1.0 - min_similarity - values) * (knn_labels == i)`
    with min_similarity 0). `include_self=True` adds the official self vote: sample i's own label with
    weight 2·s_i1 − s_i2 (needs k ≥ 2). Returns (top class (N,) int64 — the lowest class on ties, as
    `np.argmax` — and votes (N, C) float64).
    """
    nbr = np.asarray(neighbour_indices, dtype=np.int64)
    sims = np.asarray(neighbour_sims, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if nbr.ndim != 2 or sims.shape != nbr.shape or labels.shape != (nbr.shape[0],):
        raise ValueError(f"expected indices and sims (N, k) and labels (N,), got {nbr.shape}, {sims.shape}, {labels.shape}")
    n, k = nbr.shape
    votes = np.zeros((n, num_classes), dtype=np.float64)
    rows = np.repeat(np.arange(n), k)
    np.add.at(votes, (rows, labels[nbr].reshape(-1)), sims.reshape(-1))
    if include_self:
        if k < 2:
            raise ValueError("include_self needs at least two neighbours (the self weight is 2·s1 − s2)")
        np.add.at(votes, (np.arange(n), labels), 2.0 * sims[:, 0] - sims[:, 1])
    return votes.argmax(axis=1).astype(np.int64), votes


def simifeat_clean_rounds(clean_by_round) -> tuple[np.ndarray, np.ndarray]:
    """Majority over rounds: (kept mask, share of rounds judging each sample clean). Kept when the
    share is above 1/2 (official `np.round(mean)`: a half rounds to 0, i.e. not clean)."""
    votes = np.asarray(clean_by_round, dtype=np.float64)
    if votes.ndim != 2 or votes.shape[0] < 1:
        raise ValueError(f"expected (rounds, N) clean indicators, got {votes.shape}")
    share = votes.mean(axis=0)
    return share > 0.5, share


def stratified_folds(labels, folds: int, rng: np.random.Generator) -> np.ndarray:
    """Fold number (N,) int64 for each sample: every class shuffled and dealt round-robin over the folds
    (continuing where the previous class stopped), so folds have near-equal sizes and class shares."""
    labels = np.asarray(labels)
    if folds < 2 or folds > len(labels):
        raise ValueError(f"folds must lie in [2, N={len(labels)}], got {folds}")
    out = np.empty(len(labels), dtype=np.int64)
    offset = 0
    for c in np.unique(labels):
        pos = rng.permutation(np.flatnonzero(labels == c))
        out[pos] = (np.arange(len(pos)) + offset) % folds
        offset += len(pos)
    return out


def import_cleanlab_filter():
    try:
        import cleanlab.filter as cleanlab_filter  # noqa: PLC0415 (lazy: an optional dependency)
    except ImportError:
        raise EchobenchError(CLEANLAB_MISSING) from None
    return cleanlab_filter


def confident_learning_keep(labels, pred_probs, *, filter_by: str = "prune_by_noise_rate", n_jobs: int | None = 1,
                            **kwargs: Any) -> np.ndarray:
    """Mask (N,) of samples cleanlab does NOT flag: `~cleanlab.filter.find_label_issues(...)`."""
    cleanlab_filter = import_cleanlab_filter()
    issues = cleanlab_filter.find_label_issues(np.asarray(labels, dtype=np.int64), np.asarray(pred_probs, dtype=np.float64),
                                               filter_by=filter_by, n_jobs=n_jobs, **kwargs)
    return ~np.asarray(issues, dtype=bool)


# --- networks ------------------------------------------------------------------------------------------

def warmup_length(epochs: int, task) -> int:
    """`epochs` capped at the protocol's epochs (at least 1)."""
    return max(1, min(int(epochs), task.protocol.epochs))


def train_ce(task, epochs: int, *, stream: str, split=None, augment_images: bool = True, keep: str = "last",
             lr: float | None = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A fresh network (seed stream `stream`) trained with CE on `split` (default: train) for `epochs`.

    `keep="best_val"` returns the weights of the epoch with the best noisy-validation accuracy (first on
    ties), `"last"` the last epoch's. The protocol's optimizer (`lr` overrides its rate) and its lr
    milestones as they are (the first `epochs` epochs of a protocol run). Nothing is recorded in
    `task.history`.
    """
    split = task.train if split is None else split
    model = task.new_model(stream)
    optimizer = task.new_optimizer(model.parameters(), lr)
    scheduler = task.new_scheduler(optimizer)
    generator = task.generator(f"{stream}/batches")
    started = time.perf_counter()
    run = train_epochs(task, model, optimizer, generator, epochs, split=split, scheduler=scheduler,
                       augment_images=augment_images, record=False, keep=keep)
    model.eval()
    info = {"epochs": epochs, "kept_epoch": run.kept_epoch, "augment": augment_images,
            "seconds": time.perf_counter() - started}
    if run.val_accs:
        info["val_acc"] = run.val_accs
    return model, info


def warmup_ce(task, epochs: int = OFFICIAL_WARMUP_EPOCHS, *, augment_images: bool = True, keep: str = "last",
              lr: float | None = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The selectors' warm-up network: seed stream "warmup", `warmup_length(epochs)` epochs of CE."""
    return train_ce(task, warmup_length(epochs, task), stream="warmup", augment_images=augment_images, keep=keep, lr=lr)


@torch.no_grad()
def batch_features(task, fn: Callable[[torch.Tensor], torch.Tensor], split, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """`fn` applied to every (normalised) image of `split` in order, (N, D) float32; with `generator`,
    each batch is first pad-cropped and flipped as the protocol's training augmentation."""
    outs = []
    bs = task.protocol.eval_batch_size
    for start in range(0, len(split), bs):
        x = split.images[start : start + bs]
        if generator is not None:
            x = augment(x, task.protocol.crop_padding, task.protocol.flip, generator)
        with task.autocast():
            outs.append(fn(task.normalizer(x)).float())
    return torch.cat(outs)


def _candidates(task) -> np.ndarray:
    return task.train.indices.cpu().numpy().astype(np.int64)


def _noisy_labels(task) -> np.ndarray:
    return task.train.labels.cpu().numpy().astype(np.int64)


# --- selectors -----------------------------------------------------------------------------------------

def small_loss(task, *, rate: float | None = None, warmup_epochs: int = OFFICIAL_WARMUP_EPOCHS,
               model: torch.nn.Module | None = None) -> Selection:
    """Co-teaching-style small-loss selection per noisy class (module docstring).

    Keeps, in each noisy class, the ⌊(1 − τ)·n_c⌋ samples of smallest CE loss under the warm-up network
    (or `model`), τ = `rate` or the task's nominal noise rate. Score: −loss.
    """
    tau = float(task.noise_rate if rate is None else rate)
    info: dict[str, Any] = {"rate": tau, "keep_fraction": 1.0 - tau}
    if model is None:
        model, info["warmup"] = warmup_ce(task, warmup_epochs, augment_images=True, keep="last")
    labels = _noisy_labels(task)
    losses = F.cross_entropy(task.predict(model, task.train), task.train.labels, reduction="none").cpu().numpy()
    keep = np.zeros(len(labels), dtype=bool)
    keep[small_loss_per_class(losses, labels, 1.0 - tau)] = True
    return make_selection("small-loss", _candidates(task), keep, -losses, **info)


def bltm(task, *, rho: float = BLTM_RHO, warmup_epochs: int = OFFICIAL_WARMUP_EPOCHS, augment: bool = False,
         lr: float | None = None, model: torch.nn.Module | None = None) -> Selection:
    """BLTM's distilled examples whose Bayes label equals the noisy label (module docstring).

    Score: softmax probability of the noisy label, p_ỹ(x); kept ⟺ p_ỹ(x) > (1 + ρ)/2.
    """
    info: dict[str, Any] = {"rho": rho, "threshold": bltm_threshold(rho)}
    if model is None:
        model, info["warmup"] = warmup_ce(task, warmup_epochs, augment_images=augment, keep="best_val", lr=lr)
    probs = torch.softmax(task.predict(model, task.train), dim=1).cpu().numpy()
    labels = _noisy_labels(task)
    out = bltm_distill(probs, labels, rho)
    candidates = _candidates(task)
    info.update(n_distilled=int(out["distilled"].sum()), n_agree=int(out["clean"].sum()),
                distilled_indices=candidates[out["distilled"]], bayes_labels=out["bayes_labels"][out["distilled"]])
    return make_selection("bltm", candidates, out["clean"], probs[np.arange(len(labels)), labels], **info)


def simifeat(task, *, k: int = SIMIFEAT_K, rounds: int = 5, features: Any = None, augment: bool | None = None,
             count_self: bool = True, warmup_epochs: int = OFFICIAL_WARMUP_EPOCHS, model: torch.nn.Module | None = None,
             backend: str = "auto") -> Selection:
    """SimiFeat's "mv" detection with a majority over rounds (module docstring).

    `k` counts the votes as officially: with `count_self` the sample's own label and its k − 1 nearest
    others, else its k nearest others. `features`: None (warm-up network's penultimate layer), a
    callable on normalised image batches, or an (N_train, D) array. Score: share of rounds that judged
    the sample clean; kept when above 1/2.
    """
    n_neighbours = k - 1 if count_self else k
    if n_neighbours < (2 if count_self else 1):
        raise EchobenchError(f"simifeat: k={k} is too small (count_self={count_self})")
    if rounds < 1:
        raise EchobenchError(f"simifeat: rounds must be at least 1, got {rounds}")
    info: dict[str, Any] = {"k": k, "count_self": count_self}
    fixed = None
    if features is None:
        if model is None:
            model, info["warmup"] = warmup_ce(task, warmup_epochs, augment_images=True, keep="best_val")
        fn, info["features"] = model.features, "warmup-network penultimate layer"
    elif callable(features):
        fn, info["features"] = features, "callable"
    else:
        fixed = features if isinstance(features, torch.Tensor) else torch.as_tensor(np.asarray(features))
        if fixed.ndim != 2 or fixed.shape[0] != len(task.train):
            raise EchobenchError(f"simifeat: features must be (N_train={len(task.train)}, D), got {tuple(fixed.shape)}")
        fn, info["features"], rounds = None, "array", 1
    use_augment = (rounds > 1) if augment is None else bool(augment)
    generator = task.generator("simifeat/augment") if use_augment else None
    labels = _noisy_labels(task)
    clean_by_round = []
    started = time.perf_counter()
    was_training = model.training if model is not None else None
    if model is not None:
        model.eval()
    for _ in range(rounds):
        feats = fixed if fixed is not None else batch_features(task, fn, task.train, generator=generator)
        sims, idx = knn(feats.float(), n_neighbours, backend=backend)
        top, _ = knn_vote(idx.cpu().numpy(), sims.cpu().numpy(), labels, task.num_classes, include_self=count_self)
        clean_by_round.append(top == labels)
    if model is not None and was_training:
        model.train()
    keep, share = simifeat_clean_rounds(np.stack(clean_by_round))
    info.update(rounds=rounds, augment=use_augment, backend=backend, seconds=time.perf_counter() - started,
                flagged_per_round=[int((~c).sum()) for c in clean_by_round])
    return make_selection("simifeat", _candidates(task), keep, share, **info)


def confident_learning(task, *, folds: int = 5, epochs: int = OFFICIAL_WARMUP_EPOCHS,
                       filter_by: str = "prune_by_noise_rate", n_jobs: int | None = 1) -> Selection:
    """cleanlab's `find_label_issues` on K-fold out-of-fold probabilities; keeps the non-issues
    (module docstring). Score: out-of-fold p_ỹ(x)."""
    import_cleanlab_filter()  # fail before training when cleanlab is missing
    labels = _noisy_labels(task)
    fold_of = stratified_folds(labels, folds, numpy_rng(task.seed, "selection/cl-folds"))
    n_epochs = warmup_length(epochs, task)
    pred_probs = np.zeros((len(labels), task.num_classes), dtype=np.float64)
    started = time.perf_counter()
    for f in range(folds):
        held = torch.from_numpy(np.flatnonzero(fold_of == f))
        rest = torch.from_numpy(np.flatnonzero(fold_of != f))
        model, _ = train_ce(task, n_epochs, stream=f"cl-fold{f}", split=task.train.subset(rest))
        logits = task.predict(model, task.train.subset(held))
        pred_probs[held.numpy()] = torch.softmax(logits, dim=1).double().cpu().numpy()
    keep = confident_learning_keep(labels, pred_probs, filter_by=filter_by, n_jobs=n_jobs)
    return make_selection("confident-learning", _candidates(task), keep, pred_probs[np.arange(len(labels)), labels],
                          folds=folds, epochs_per_fold=n_epochs, filter_by=filter_by, n_issues=int((~keep).sum()),
                          seconds=time.perf_counter() - started)


SELECTORS.add("small-loss", small_loss)
SELECTORS.add("bltm", bltm)
SELECTORS.add("simifeat", simifeat)
SELECTORS.add("confident-learning", confident_learning)
