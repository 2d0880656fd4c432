"""Identifiability (Liu, Cheng & Zhang, ICML 2023, "Identifiability of Label Noise Transition
Matrix"): T estimated by HOC from the agreement of noisy labels among nearest neighbours in a feature
space, then forward loss correction. After the official code UCSC-REAL/Identifiability
(`HOC_estimate_T_train.py`, `hoc.py`, `hoc_utils.py`, `CE_select_best.py`), whose HOC estimator is the
one of UCSC-REAL/HOC (Zhu, Song & Liu, ICML 2021).

HOC (`hoc_estimate`): in each of ``rounds`` rounds, ``sample_size`` training samples are drawn without
replacement; every sample x₁ gets its nearest and second-nearest neighbours x₂, x₃ among them by cosine
distance (`count_y`); the frequencies of ỹ₁, (ỹ₁, ỹ₂) and (ỹ₁, ỹ₂, ỹ₃), averaged over rounds, are matched
by the model's consensus probabilities Σ_r p_r T_ra, Σ_r p_r T_ra T_rb, Σ_r p_r T_ra T_rb T_rc
(`count_real`, assuming that a sample and its two neighbours share the clean label) with
T = softmax(logits, rows) and p = softmax(logits): loss = Σ_k ‖estimate_k − model_k‖_F, Adam
(`func`, `calc_func`; T logits start at 5I − 1, p logits at 1/C + U(0, 0.1)).

Stages, in order, recorded in `task.history` with consecutive epoch numbers and
`extra={"stage": k, "stage_epoch": e}` (k = 0 warmup, 1 forward; `STAGES`) and timed in
`task.history.stage_seconds` (``warmup``, ``estimate``, ``forward``; ``estimate`` has no epochs):
1. ``warmup`` — cross-entropy on the noisy labels; the epoch with the best noisy-validation accuracy is
   kept (the official `CE_select_best.py` keeps the best *test* epoch; echobench does not peek).
2. ``estimate`` — features of the training images (see below) → `hoc_estimate` → T̂ (kept on the
   method instance as `transition` for inspection).
3. ``forward`` — the kept warm-up network is fine-tuned with the forward-corrected loss
   −log((softmax(f(x))·T̂)_ỹ) (`forward_loss`), as the README says ("we first select the model based
   on vanilla cross entropy loss, then finetune the model with estimated transition matrix"). The last
   epoch's model is the final one.

Feature space (deliberate deviation). The paper's point is that T is identifiable from kNN label
agreement when features are good (the official runs use SimCLR / IP-IRM ResNet-50 models trained
without labels). echobench has no self-supervised model offline, so by default
(``feature_space="warmup"``) it uses the penultimate layer (`model.features`) of the kept warm-up CE
network on the un-augmented training images, in eval mode. The official `HOC_estimate_T.py` offers the
same kind of space as its ``--self_sup_type weak`` option (features of a CE-trained network), so this
is one of the official variants, the weakest one. Its known bias: the warm-up network has started to fit
the noisy labels, which pulls a mislabelled sample toward its noisy class's neighbours, so neighbours'
labels agree more than the clean-label clusterability assumes and T̂ tends toward the identity (best-
validation early stopping limits this). ``feature_space="pixels"`` (normalised raw pixels) is offered
for comparison; nearest neighbours in pixel space rarely share the clean label on natural images, which
breaks HOC's assumption, so it is not the default.

Training (deliberate deviation). The official `HOC_estimate_T_train.py` trains a linear head on the
frozen self-supervised encoder. echobench's default (``head_only=False``) fine-tunes the whole network
under the protocol, as the paper's common protocol trains every method's ResNet; ``head_only=True``
trains only the final linear layer on the frozen warm-up encoder (kept in eval mode).

Defaults (same for every dataset; the official scripts are CIFAR-10 ones and the CIFAR-100 runs use the
same constants):
- ``rounds`` 50 (`args.G`), ``sample_size`` 15000 (`all_point_cnt` of `get_T_global_min`),
  ``hoc_steps`` 1500 (`args.max_iter`), ``hoc_lr`` 0.1 (`lr = 0.1` of `get_T_global_min`):
  `HOC_estimate_T_train.py`; neighbours: 2, cosine (`count_y`, `distCosine`).
- ``warmup_epochs`` 150, ``warmup_lr`` 0.1 → 0.01 after epoch 50: `CE_select_best.py` (SGD, no
  momentum, no weight decay); ``forward_epochs`` 100, ``forward_lr`` 0.1 → 0.01 after epoch 50:
  `HOC_estimate_T_train.py` (SGD, no momentum, no weight decay, batch 256).

How echobench maps these onto a protocol and a dataset:
- Epochs: the stage-length rule of `echobench.training.stages`, shared by every multi-stage method:
  with ``scale_epochs`` and a protocol of E < 200 epochs every stage gets max(1, round(n·E/200))
  epochs, and the warm-up (whose network gives HOC its features) at least the protocol's
  ``ce_levels_off``.
- Learning rates: ``lr_source="protocol"`` (default): both stages use the protocol's optimizer and rate;
  ``"official"``: SGD without momentum or weight decay at ``warmup_lr``/``forward_lr``·lr_p/0.1. Both
  stages follow the protocol's milestones scaled to their length (officially ×0.1 at epoch 50).
- HOC on small datasets: the sample size is min(``sample_size``, N); when that is all N samples every
  round would see the same set, so one round is run. On CIFAR (N = 45,000) the official 50 × 15,000.
- HOC returns the iterate of lowest loss (the official `calc_func` means to, but its `T.detach()` shares
  storage with the parameters, so it returns the last iterate).
- Nearest neighbours are found in torch in row chunks (never an N×N matrix beyond a chunk); a sample's
  own row entry is excluded by index (the official code drops each row's minimum, normally itself).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from echobench.errors import EchobenchError
from echobench.training.knn import knn
from echobench.training.method import Method, Passes, register_method

from echobench.training.stages import ce_warmup_keep_best, reading_epochs, scaled_epochs, scaled_milestones

STAGES = ("warmup", "forward")
PAPER_LR = 0.1


def forward_loss(logits: torch.Tensor, targets: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """Forward-corrected cross-entropy: mean_i −log((softmax(logits_i)·T)_{y_i}).

    Computed in log space (logsumexp_k log p_k + log T_{k,y}), so T = I gives exactly cross-entropy.
    T's rows are the clean classes, its columns the noisy ones (T_ij = P(ỹ=j | y=i)).
    """
    log_p = F.log_softmax(logits, dim=1)
    log_t = torch.log(T.to(log_p.dtype).clamp_min(0.0))  # zero entries → −inf, dropped by logsumexp
    return -torch.logsumexp(log_p + log_t.t()[targets], dim=1).mean()


def nearest_two(features: torch.Tensor) -> torch.Tensor:
    """Indices (N, 2) of each row's nearest and second-nearest other rows by cosine similarity
    (`echobench.training.knn`'s chunked torch backend: the official code's full N×N matrix is never built)."""
    n = features.shape[0]
    if n < 3:
        raise EchobenchError(f"HOC needs at least 3 samples for two neighbours each, got {n}")
    _, indices = knn(features.float(), 2, backend="torch")
    return indices


def hoc_statistics(features: torch.Tensor, noisy_labels: torch.Tensor, num_classes: int) -> list[torch.Tensor]:
    """First-, second- and third-order label frequencies of (x, its 1st and 2nd nearest neighbour)."""
    c = num_classes
    nn_idx = nearest_two(features)
    y1, y2, y3 = noisy_labels, noisy_labels[nn_idx[:, 0]], noisy_labels[nn_idx[:, 1]]
    n = float(len(y1))
    first = torch.bincount(y1, minlength=c).float() / n
    second = torch.bincount(y1 * c + y2, minlength=c * c).float().view(c, c) / n
    third = torch.bincount((y1 * c + y2) * c + y3, minlength=c ** 3).float().view(c, c, c) / n
    return [first, second, third]


def hoc_consensus(T: torch.Tensor, prior: torch.Tensor) -> list[torch.Tensor]:
    """The model's first-, second- and third-order consensus probabilities (`count_real`)."""
    weighted = prior[:, None] * T
    return [weighted.sum(0), weighted.t() @ T, torch.einsum("ra,rb,rc->abc", weighted, T, T)]


def fit_hoc(statistics: list[torch.Tensor], num_classes: int, *, steps: int = 1500, lr: float = 0.1,
            generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """T (C, C) and clean prior p (C,) whose consensus matches `statistics` (HOC `calc_func`)."""
    c = num_classes
    device = statistics[0].device
    t_logits = (5 * torch.eye(c) - torch.ones(c, c)).to(device).requires_grad_()
    noise = torch.rand(c, generator=generator) if generator is not None else torch.rand(c)
    p_logits = (torch.full((c,), 1.0 / c) + noise * 0.1).to(device).requires_grad_()
    optimizer = torch.optim.Adam([t_logits, p_logits], lr=lr)
    best = (float("inf"), t_logits.detach().clone(), p_logits.detach().clone())
    for step in range(steps):
        model = hoc_consensus(torch.softmax(t_logits, dim=1), torch.softmax(p_logits, dim=0))
        loss = sum(torch.linalg.norm((s - m).reshape(-1)) for s, m in zip(statistics, model))
        value = float(loss.detach())
        if step > 5 and value < best[0]:  # the official `step > 5` guard
            best = (value, t_logits.detach().clone(), p_logits.detach().clone())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    t_best, p_best = (best[1], best[2]) if best[0] < float("inf") else (t_logits.detach(), p_logits.detach())
    return torch.softmax(t_best, dim=1), torch.softmax(p_best, dim=0)


def hoc_estimate(features: torch.Tensor, noisy_labels: torch.Tensor, num_classes: int, *,
                 rounds: int = 50, sample_size: int = 15000, steps: int = 1500, lr: float = 0.1,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """HOC estimate of the noise transition matrix T (C, C), T_ij = P(ỹ=j | y=i).

    `features` (N, D) on any device, `noisy_labels` (N,) int64 on the same device. Each of `rounds`
    rounds draws min(`sample_size`, N) samples without replacement (one round when that is all N);
    the statistics are averaged and fitted by Adam (`steps`, `lr`). `generator` (CPU) makes the draws
    and the initial prior logits reproducible.
    """
    n = features.shape[0]
    if noisy_labels.shape[0] != n:
        raise EchobenchError(f"hoc_estimate: {n} feature rows but {noisy_labels.shape[0]} labels")
    size = min(sample_size, n)
    rounds = 1 if size == n else max(1, rounds)
    totals = None
    for _ in range(rounds):
        if size == n:
            pick = torch.arange(n, device=features.device)
        else:
            pick = torch.randperm(n, generator=generator)[:size].to(features.device)
        stats = hoc_statistics(features[pick], noisy_labels[pick], num_classes)
        totals = stats if totals is None else [a + b for a, b in zip(totals, stats)]
    statistics = [s / rounds for s in totals]
    T, _ = fit_hoc(statistics, num_classes, steps=steps, lr=lr, generator=generator)
    return T


@dataclass(frozen=True)
class Params:
    """Identifiability (HOC + forward correction) hyperparameters; see the module docstring."""

    warmup_epochs: int = 150
    forward_epochs: int = 100
    scale_epochs: bool = True
    reference_epochs: int = 200
    rounds: int = 50
    sample_size: int = 15000
    hoc_steps: int = 1500
    hoc_lr: float = 0.1
    feature_space: str = "warmup"  # "warmup" (penultimate layer of the warm-up CE network) or "pixels"
    head_only: bool = False
    lr_source: str = "protocol"  # "protocol" or "official"
    warmup_lr: float = 0.1
    forward_lr: float = 0.1

    def __post_init__(self):
        if self.lr_source not in ("protocol", "official"):
            raise EchobenchError(f"identifiability: lr_source must be 'protocol' or 'official', got {self.lr_source!r}")
        if self.feature_space not in ("warmup", "pixels"):
            raise EchobenchError(f"identifiability: feature_space must be 'warmup' or 'pixels', got {self.feature_space!r}")


def stage_epochs(params: Params, protocol) -> dict[str, int]:
    """Epochs of each training stage under `protocol` (the stage-length rule, `echobench.training.stages`)."""
    out = {"warmup": reading_epochs(params.warmup_epochs, params, protocol),
           "forward": scaled_epochs(params.forward_epochs, params, protocol.epochs)}
    if min(out.values()) < 1:
        raise EchobenchError(f"identifiability: every stage needs at least one epoch, got {out}")
    return out


@torch.no_grad()
def train_features(task, model: torch.nn.Module, space: str) -> torch.Tensor:
    """Features (N, D) of the un-augmented training images: `model.features` in eval mode, or pixels."""
    split, bs = task.train, task.protocol.eval_batch_size
    outs = []
    was_training = model.training
    model.eval()
    for start in range(0, len(split), bs):
        x = task.normalizer(split.images[start : start + bs])
        if space == "pixels":
            outs.append(x.float().reshape(len(x), -1))
        else:
            with task.autocast():
                outs.append(model.features(x).float())
    model.train(was_training)
    return torch.cat(outs)


@register_method("identifiability")
class Identifiability(Method):
    """Warm-up CE → HOC estimate of T on warm-up features → forward-corrected fine-tuning."""

    Params = Params

    def _optimizer(self, task, params, official_lr: float) -> torch.optim.Optimizer:
        if self.params.lr_source == "official":
            return torch.optim.SGD(params, lr=official_lr * task.protocol.lr / PAPER_LR, momentum=0.0, weight_decay=0.0)
        return task.new_optimizer(params)

    @classmethod
    def passes(cls, params: Params, protocol, kept_fraction: float = 1.0, n_train: int | None = None) -> Passes:
        """Warm-up and forward-correction epochs (a head-only forward stage is counted as full training:
        an upper bound), and one forward pass over the training split for HOC's features."""
        e = stage_epochs(params, protocol)
        trained = e["warmup"] + e["forward"]
        return Passes(train=trained, train_forward=0 if params.feature_space == "pixels" else 1, evaluations=trained)

    def diagnostics(self) -> dict:
        T = getattr(self, "transition", None)
        return {} if T is None else {"estimated_transition": T.round(decimals=6).tolist()}

    def fit(self, task) -> None:
        p = self.params
        epochs = stage_epochs(p, task.protocol)
        n_warm, n_fwd = epochs["warmup"], epochs["forward"]
        model = task.new_model()
        generator = task.generator("batches")
        epoch = 0

        # --- stage 0: warm-up CE, keep the best-validation epoch --------------------------------
        started_stage = time.perf_counter()
        optimizer = self._optimizer(task, model.parameters(), p.warmup_lr)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, scaled_milestones(task, n_warm), gamma=task.protocol.gamma)
        epoch = ce_warmup_keep_best(task, model, optimizer, generator, n_warm, first_epoch=epoch, scheduler=scheduler)
        task.history.stage_seconds["warmup"] = time.perf_counter() - started_stage

        # --- estimate: HOC on frozen features -------------------------------------------------
        started_stage = time.perf_counter()
        features = train_features(task, model, p.feature_space)
        T = hoc_estimate(features, task.train.labels, task.num_classes, rounds=p.rounds, sample_size=p.sample_size,
                         steps=p.hoc_steps, lr=p.hoc_lr, generator=task.generator("hoc"))
        T = T.to(task.device)
        self.transition = T.detach().cpu()
        del features
        task.history.stage_seconds["estimate"] = time.perf_counter() - started_stage

        # --- stage 1: forward-corrected fine-tuning -------------------------------------------
        started_stage = time.perf_counter()
        if p.head_only:
            for param in model.parameters():
                param.requires_grad_(False)
            head = model.linear
            for param in head.parameters():
                param.requires_grad_(True)
            trainable = list(head.parameters())
        else:
            trainable = list(model.parameters())
        optimizer = self._optimizer(task, trainable, p.forward_lr)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, scaled_milestones(task, n_fwd), gamma=task.protocol.gamma)
        for e in range(1, n_fwd + 1):
            started = time.perf_counter()
            # head_only: the frozen encoder stays in eval mode so its batch-norm statistics stay put too
            sums = task.train_epoch(model, optimizer, generator, lambda logits, y, idx: forward_loss(logits, y, T),
                                train_mode=not p.head_only)
            epoch += 1
            task.record_epoch(epoch, model, optimizer, *sums, started, stage=1.0, stage_epoch=float(e))
            scheduler.step()
        task.history.stage_seconds["forward"] = time.perf_counter() - started_stage
