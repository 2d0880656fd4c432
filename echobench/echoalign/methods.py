"""EchoAlign (paper §4, Algorithm 1): treat the noisy labels as accurate and align the images to them.

1. EchoMod rewrites every training image to match its noisy label (`echobench.echoalign.echomod`, cached by
   `echobench.echoalign.cache`).
2. EchoSelect compares features of each original and its modification (`echobench.echoalign.echoselect`): the
   original is kept where the cosine similarity S ≥ τ, otherwise the modified image replaces it.
3. A classifier is trained with cross-entropy on the result, all with the noisy labels.

Methods registered here (the rows of the paper's Tables 1–3):

- ``echoalign``: Algorithm 1 as the paper writes it: one training set of N images (kept originals +
  modifications of the rest), plain CE under the common protocol.
- ``echoalign-released``: the released code's recipe (KevinCarpricorn/EchoAlign `main.py`,
  `trainer.py`): the selected originals (S > τ, strict) plus *all* N modified images, the CE of each
  sample weighted N/(N_sel+N) for originals and N_sel/(N_sel+N) for modified images, averaged over the
  batch; then 40 fine-tune epochs on the selected originals alone with the same optimizer at the final
  learning rate. Deviations, deliberate: the fine-tune length is scaled with the protocol like every
  staged method (40 of 200 epochs; `scale_epochs=False` keeps 40); the validation set stays the noisy
  validation split of the common protocol (the released code distils it too); the released code's
  small-loss selection for symmetric noise (`small_loss_trick.py`) is not used: EchoSelect serves every
  noise kind, as in the paper.
- ``im-only`` (Table 3, "modification only"): all N modified images.
- ``echoselect-only`` (Table 3, "selection only"): the selected originals alone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from echobench.echoalign.echomod import default_engine, generator_taus, make_modifier, modifier_config
from echobench.echoalign.echoselect import check_tau, default_tau, keep_original, paired_cosine
from echobench.errors import EchobenchError
from echobench.echoalign.features import default_extractor, make_extractor, tau_for_rate
from echobench.training.method import Method, Passes, register_method
from echobench.echoalign.cache import SHARD_SIZE, CacheStats, cache_for


@dataclass(frozen=True)
class EchoAlignParams:
    engine: str = ""  # "" → `procedural` on shapes, `eager` (SD1.5 + ControlNet canny) elsewhere
    engine_options: dict = field(default_factory=dict)
    base_seed: int = 0  # EchoMod's seed: part of the cache key, shared by every noise setting and run seed
    extractor: str = ""  # "" → `shapes-hog` on shapes, `open_clip` ViT-B-32 elsewhere
    extractor_options: dict = field(default_factory=dict)
    tau: float | None = None  # None → the extractor's default: CLIP 0.4 below 37.5% noise, 0.52 above (the paper's)
    strict: bool = False  # S > τ instead of S ≥ τ (the released code)
    similarity: str = "auto"  # faiss | torch | auto
    generation_batch_size: int = 64


# --- the data side, on plain arrays (also used by `echobench modify` and `echobench select`) -----------

def modify_pairs(dataset: str, dataset_options: dict | None, class_names: list[str], images: np.ndarray,
                 indices: np.ndarray, labels: np.ndarray, *, engine: str = "", engine_options: dict | None = None,
                 base_seed: int = 0, device: str = "cpu", cache_dir: str | None = None, batch_size: int = 64,
                 progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, CacheStats]:
    """EchoMod outputs for (images[k] = dataset image indices[k], target labels[k]), through the cache.
    When every pair is cached and the cache key is known without building the generator
    (`modifier_config`), the generator is never built: no diffusion model is loaded."""
    engine = engine or default_engine(dataset)
    key = modifier_config(engine, dataset, class_names, images.shape[1], engine_options, device)
    if key is not None:
        started = time.perf_counter()
        cache = cache_for(key, dataset, dataset_options, base_seed=base_seed, root=cache_dir)
        stats = CacheStats(requested=len(indices))
        out, found = cache.lookup(indices, labels, stats)
        if out is not None and found.all():
            stats.cached, stats.seconds = len(indices), time.perf_counter() - started
            return out, stats
        cache.check_writable(int((~found).sum()))  # a read-only cache fails here, before the generator loads
    modifier = make_modifier(engine, dataset, class_names, images.shape[1], engine_options, device)
    cache = cache_for(modifier.config(), dataset, dataset_options, base_seed=base_seed, root=cache_dir)
    return cache.get_or_generate(modifier, images, indices, labels, base_seed=base_seed, batch_size=batch_size,
                                 progress=progress)


@dataclass
class TaskPairs:
    """A task's training pairs as numpy arrays (all of them, or one shard) and EchoMod's outputs for them."""

    originals: np.ndarray  # uint8 NHWC, in `task.train` order
    indices: np.ndarray  # dataset indices
    labels: np.ndarray  # the noisy labels: EchoMod's targets
    modified: np.ndarray  # uint8 NHWC, aligned with `originals`
    stats: CacheStats


def modify_task_pairs(task, params: EchoAlignParams, *, shard: tuple[int, int] = (0, 1),
                      progress: bool = False) -> TaskPairs:
    """The one path of a task's EchoMod pairs through the cache: the training split's images, dataset
    indices and noisy labels leave the device as numpy, and EchoMod's outputs are read from the cache
    or generated into it (`modify_pairs`, with `params`' engine, base seed and batch size, on the
    task's device and cache directory); `split_of` brings images back to the device.

    `shard=(i, n)`: only the pairs in cache shards s with s mod n = i (`echobench modify --shard i/n`).
    `progress`: a bar over the pairs on stderr (those served from the cache are counted at the end)."""
    originals = task.train.images.permute(0, 2, 3, 1).cpu().numpy()
    indices = task.train.indices.cpu().numpy()
    labels = task.train.labels.cpu().numpy()
    i, n = shard
    if n > 1:
        mine = (indices // SHARD_SIZE) % n == i
        originals, indices, labels = originals[mine], indices[mine], labels[mine]

    def run(on_progress):
        return modify_pairs(task.dataset, task.dataset_options, task.class_names, originals, indices, labels,
                            engine=params.engine, engine_options=params.engine_options, base_seed=params.base_seed,
                            device=str(task.device), cache_dir=task.cache_dir, batch_size=params.generation_batch_size,
                            progress=on_progress)

    if not progress:
        modified, stats = run(None)
    else:
        from echobench.progress import progress_bar

        with progress_bar(len(indices), f"EchoMod {task.dataset}", True) as bar:
            modified, stats = run(bar.update)
            bar.update(bar.total - bar.n)  # pairs served from the cache
    return TaskPairs(originals, indices, labels, modified, stats)


def similarity_of_pairs(dataset: str, originals: np.ndarray, modified: np.ndarray, *, extractor: str = "",
                        extractor_options: dict | None = None, device: str = "cpu", backend: str = "auto") -> np.ndarray:
    """EchoSelect's S: cosine similarity of the features of each original and its modification."""
    fx = make_extractor(extractor or default_extractor(dataset), extractor_options, device)
    return paired_cosine(fx.extract(originals), fx.extract(modified), backend)


def resolve_tau(params: EchoAlignParams, noise_rate: float, dataset: str) -> float:
    """`params.tau`, else the generator's calibrated thresholds for the extractor (a trained model's
    calibration.json), else the extractor's defaults; the low one below 37.5% noise, as in the paper."""
    if params.tau is not None:
        return check_tau(params.tau)
    extractor = params.extractor or default_extractor(dataset)
    taus = generator_taus(params.engine or default_engine(dataset), params.engine_options, extractor)
    if taus is not None:
        return tau_for_rate(taus, noise_rate)
    return default_tau(noise_rate, extractor)


@dataclass
class Aligned:
    """EchoMod + EchoSelect on a task's training split (arrays aligned with `task.train`)."""

    modified: np.ndarray  # uint8 NHWC
    similarity: np.ndarray
    keep: np.ndarray  # True: keep the original
    tau: float
    cache: dict[str, Any]
    seconds: dict[str, float]

    def facts(self) -> dict[str, Any]:
        return {"tau": self.tau, "n_train": int(len(self.keep)), "n_kept_original": int(self.keep.sum()),
                "similarity_mean": float(self.similarity.mean()), "cache": self.cache,
                **{f"{k}_s": round(v, 3) for k, v in self.seconds.items()}}


def align_task(task, params: EchoAlignParams) -> Aligned:
    started = time.perf_counter()
    pairs = modify_task_pairs(task, params)
    originals, modified, stats = pairs.originals, pairs.modified, pairs.stats
    generated = time.perf_counter()
    similarity = similarity_of_pairs(task.dataset, originals, modified, extractor=params.extractor,
                                     extractor_options=params.extractor_options, device=str(task.device),
                                     backend=params.similarity)
    tau = resolve_tau(params, task.noise_rate, task.dataset)
    keep = keep_original(similarity, tau, strict=params.strict)
    seconds = {"echomod": generated - started, "echoselect": time.perf_counter() - generated}
    return Aligned(modified, similarity, keep, tau, stats.as_dict(), seconds)


# --- training ------------------------------------------------------------------------------------------

def split_of(task, images_nhwc: np.ndarray, labels: torch.Tensor, indices: torch.Tensor):
    from echobench.training.trainer import DeviceSplit

    x = torch.from_numpy(np.ascontiguousarray(images_nhwc)).permute(0, 3, 1, 2).contiguous().to(task.device)
    return DeviceSplit(x, labels.to(task.device), indices.to(task.device))


def train_ce(task, split, *, epochs: int, loss_fn=None, optimizer=None, model=None, scheduler=True,
             stage: float | None = None, first_epoch: int = 0):
    """CE (or `loss_fn`) on `split` for `epochs` (`echobench.training.trainer.train_epochs`), each epoch
    recorded; returns (model, optimizer)."""
    from echobench.training.trainer import train_epochs

    model = model if model is not None else task.new_model()
    optimizer = optimizer if optimizer is not None else task.new_optimizer(model.parameters())
    sched = task.new_scheduler(optimizer) if scheduler else None
    generator = task.generator(f"batches-stage{stage or 0}")
    train_epochs(task, model, optimizer, generator, epochs, loss_fn=loss_fn, split=split, scheduler=sched,
                 first_epoch=first_epoch, stage=stage)
    return model, optimizer


class _Aligning(Method):
    Params = EchoAlignParams
    uses_echomod = True

    def __init__(self, params=None):
        super().__init__(params)
        self._facts: dict[str, Any] = {}

    def diagnostics(self) -> dict[str, Any]:
        return self._facts

    def align(self, task) -> Aligned:
        aligned = align_task(task, self.params)
        self._facts = aligned.facts()
        return aligned


@register_method("echoalign")
class EchoAlign(_Aligning):
    """Algorithm 1: kept originals + modifications of the rest, one set of N images, CE."""

    def fit(self, task) -> None:
        a = self.align(task)
        keep = torch.from_numpy(a.keep).view(-1, 1, 1, 1).to(task.device)
        modified = split_of(task, a.modified, task.train.labels, task.train.indices).images
        images = torch.where(keep, task.train.images, modified)
        from echobench.training.trainer import DeviceSplit

        train_ce(task, DeviceSplit(images, task.train.labels, task.train.indices), epochs=task.protocol.epochs)


@register_method("im-only")
class ModificationOnly(_Aligning):
    """Table 3 ablation: every training image replaced by its modification."""

    def fit(self, task) -> None:
        a = self.align(task)
        train_ce(task, split_of(task, a.modified, task.train.labels, task.train.indices), epochs=task.protocol.epochs)


@register_method("echoselect-only")
class SelectionOnly(_Aligning):
    """Table 3 ablation: the selected originals alone (the rest dropped)."""

    @classmethod
    def passes(cls, params, protocol, kept_fraction: float = 1.0, n_train: int | None = None) -> Passes:
        return Passes(train=protocol.epochs * kept_fraction, evaluations=protocol.epochs)

    def fit(self, task) -> None:
        a = self.align(task)
        if not a.keep.any():
            raise EchobenchError(f"EchoSelect kept no original at τ = {a.tau}: lower tau (method_params: {{tau: ...}})")
        keep = torch.from_numpy(np.flatnonzero(a.keep))
        train_ce(task, task.train.subset(keep), epochs=task.protocol.epochs)


@dataclass(frozen=True)
class ReleasedParams(EchoAlignParams):
    strict: bool = True  # clip_filter.py: `similarity > threshold`
    finetune_epochs: int = 40  # trainer.py `fine_tune`: range(40)
    reference_epochs: int = 200  # the protocol the 40 epochs belong to
    scale_epochs: bool = True


@register_method("echoalign-released")
class EchoAlignReleased(_Aligning):
    """The released code's recipe (module docstring): weighted union, then fine-tune on the originals."""

    Params = ReleasedParams

    @classmethod
    def passes(cls, params: ReleasedParams, protocol, kept_fraction: float = 1.0, n_train: int | None = None) -> Passes:
        """The union (kept originals + every modified image) for the protocol's epochs, then the
        fine-tune epochs on the kept originals."""
        from echobench.training.stages import scaled_epochs

        tune = scaled_epochs(params.finetune_epochs, params, protocol.epochs)
        return Passes(train=protocol.epochs * (1 + kept_fraction) + tune * kept_fraction,
                      evaluations=protocol.epochs + tune)

    def fit(self, task) -> None:
        from echobench.training.stages import scaled_epochs

        from echobench.training.trainer import DeviceSplit

        a = self.align(task)
        n, n_sel = len(a.keep), int(a.keep.sum())
        if n_sel == 0:
            raise EchobenchError(f"EchoSelect kept no original at τ = {a.tau}: lower tau (method_params: {{tau: ...}})")
        kept = torch.from_numpy(np.flatnonzero(a.keep)).to(task.device)
        originals = task.train.subset(kept)
        modified = split_of(task, a.modified, task.train.labels, -(task.train.indices.cpu() + 1))  # negative = modified
        union = DeviceSplit(torch.cat([originals.images, modified.images]), torch.cat([originals.labels, modified.labels]),
                            torch.cat([originals.indices, modified.indices]))
        w_original, w_modified = n / (n_sel + n), n_sel / (n_sel + n)
        self._facts.update(weight_original=w_original, weight_modified=w_modified)

        def weighted(logits, y, idx):
            w = torch.where(idx < 0, w_modified, w_original).to(logits.dtype)
            return (F.cross_entropy(logits, y, reduction="none") * w).mean()

        model, optimizer = train_ce(task, union, epochs=task.protocol.epochs, loss_fn=weighted, stage=0)
        tune = scaled_epochs(self.params.finetune_epochs, self.params, task.protocol.epochs)
        train_ce(task, originals, epochs=tune, model=model, optimizer=optimizer, scheduler=False, stage=1,
                 first_epoch=task.protocol.epochs)
