"""Co-teaching (Han et al., NeurIPS 2018), after bhanML/Co-teaching `loss.py`, `main.py`, `model.py`.

Two networks see the same batches; each ranks the batch by its own cross-entropy and keeps the
(1 − τ_t) smallest-loss fraction, and its PEER is trained on that selection. τ_t follows
`echobench.baselines.two_networks.forget_rate_schedule` (τ = the noise rate, T_k = 10, c = 1).

By default the method runs under the task's protocol (the paper's common one). This module also
provides Co-teaching's original protocol: `CO_TEACHING_PROTOCOL` (Adam lr 0.001, batch 128, 200
epochs, no augmentation) with the 9-layer CNN `co_teaching_cnn`; under it the official lr / Adam-β1
schedule is applied (`two_networks.co_teaching_adam_plan`).

Deliberate deviations from the official code:
- Loss scale. Official `loss_coteaching` returns `F.cross_entropy(y[ind], t[ind]) / num_remember`:
  a mean over the kept samples divided by their number again. Under Adam that only rescales the
  gradient (Adam is nearly scale-invariant), but under SGD it shrinks the step by ~1/100. echobench
  uses the plain mean over the kept samples; `official_loss_scale=True` reproduces the extra division.
- The kept count never drops to 0 and ties are broken by batch position (`two_networks.num_remember`).
- The forget-rate ramp counts completed epochs (first epoch keeps all, τ from epoch T_k + 1); the
  official `np.linspace` ramp reaches τ one epoch earlier (see `two_networks`).
- The 9-layer CNN applies dropout only in training: the official `F.dropout2d(h, p=0.25)` defaults
  to `training=True` and so also drops channels at evaluation. Inputs are normalised by the training
  split's channel statistics (the official loaders only scale to [0, 1]), a 10% validation split is
  held out as everywhere in echobench (the official script trains on all 50,000 images), and the
  last partial batch is kept (`drop_last=True` officially).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from echobench.training.method import register_method, uses_cifar100_defaults
from echobench.training.protocols import Protocol

from echobench.baselines.two_networks import CO_TEACHING_PROTOCOL_NAME, TwoNetworkMethod, mean_over, num_remember, small_loss_order

# Co-teaching's original training protocol (bhanML/Co-teaching `main.py`): Adam (β 0.9, 0.999, no weight
# decay) lr 0.001, batch 128, 200 epochs (`--n_epoch`), `transforms.ToTensor()` only (no crop, no
# flip), the 9-layer CNN of `model.py`. The lr decay and β1 switch from `epoch_decay_start` are
# applied by the two-network loop when `protocol.name == "co-teaching"`, so `milestones` is empty.
CO_TEACHING_PROTOCOL = Protocol(
    CO_TEACHING_PROTOCOL_NAME, model="co-teaching-cnn", epochs=200, batch_size=128, optimizer="adam", lr=0.001,
    weight_decay=0.0, milestones=(), crop_padding=0, flip=False,
)


class CoTeachingCNN(nn.Module):
    """The 9-layer CNN of bhanML/Co-teaching `model.py` (also SIGUA's and CoDis's `model.py`).

    3×(conv3×3-128) → max-pool 2 → dropout2d 0.25 → 3×(conv3×3-256) → max-pool 2 → dropout2d 0.25 →
    conv3×3-512, conv3×3-256, conv3×3-128 (no padding) → global average pool → linear. Every conv has a
    bias and is followed by BatchNorm (PyTorch defaults) and leaky ReLU (slope 0.01). Needs inputs of
    at least 28×28 (the three unpadded convs take 7×7 down to 1×1); 32×32 gives 2×2 before pooling.
    `top_bn` of the original is off in every official configuration and left out.
    """

    def __init__(self, num_classes: int, input_channels: int = 3, dropout_rate: float = 0.25):
        super().__init__()
        widths = [(input_channels, 128, 1), (128, 128, 1), (128, 128, 1), (128, 256, 1), (256, 256, 1),
                  (256, 256, 1), (256, 512, 0), (512, 256, 0), (256, 128, 0)]
        self.convs = nn.ModuleList(nn.Conv2d(i, o, 3, stride=1, padding=p) for i, o, p in widths)
        self.bns = nn.ModuleList(nn.BatchNorm2d(o) for _, o, _ in widths)
        self.dropout = nn.Dropout2d(dropout_rate)
        self.linear = nn.Linear(128, num_classes)

    def _block(self, h: torch.Tensor, k: int) -> torch.Tensor:
        return F.leaky_relu(self.bns[k](self.convs[k](h)), negative_slope=0.01)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for k in range(9):
            h = self._block(h, k)
            if k in (2, 5):
                h = self.dropout(F.max_pool2d(h, kernel_size=2, stride=2))
        return h.mean(dim=(2, 3))  # = avg_pool2d over the whole remaining map

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.features(x))


def co_teaching_cnn(num_classes: int) -> nn.Module:
    """Model factory for the `co-teaching-cnn` registry entry: RGB input, `num_classes` outputs."""
    return CoTeachingCNN(num_classes)


def co_teaching_loss(logits1: torch.Tensor, logits2: torch.Tensor, targets: torch.Tensor, *,
                     forget_rate: float, official_loss_scale: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss1, loss2): each network's cross-entropy, averaged over the samples its PEER keeps.

    Network k keeps the ⌊(1 − τ)·N⌋ samples with the smallest CE under its own logits; loss1 is
    network 1's mean CE over network 2's kept samples and vice versa. `official_loss_scale` divides
    each mean by the kept count once more, as bhanML/Co-teaching `loss.py` does.
    """
    ce1 = F.cross_entropy(logits1, targets, reduction="none")
    ce2 = F.cross_entropy(logits2, targets, reduction="none")
    keep = num_remember(targets.shape[0], forget_rate)
    kept1 = small_loss_order(ce1)[:keep]
    kept2 = small_loss_order(ce2)[:keep]
    loss1, loss2 = mean_over(ce1, kept2), mean_over(ce2, kept1)
    if official_loss_scale and keep > 0:
        loss1, loss2 = loss1 / keep, loss2 / keep
    return loss1, loss2


@register_method("co-teaching")
class CoTeaching(TwoNetworkMethod):
    """Co-teaching: two networks, each trained on its peer's small-loss samples."""

    @dataclass(frozen=True)
    class Params:
        # τ; None: the task's nominal noise rate (`main.py`: forget_rate = noise_rate unless --forget_rate).
        forget_rate: float | None = None
        num_gradual: int = 10  # T_k (`main.py --num_gradual`, default 10)
        exponent: float = 1.0  # c (`main.py --exponent`, default 1)
        # Start of the linear lr decay / β1 = 0.1 under the co-teaching protocol only (`main.py`:
        # 80 for mnist and cifar10, 100 for cifar100).
        epoch_decay_start: int = 80
        # Divide the kept-sample mean by the kept count again, as the official `loss.py` does.
        official_loss_scale: bool = False

    @classmethod
    def default_params(cls, dataset: str) -> "CoTeaching.Params":
        if uses_cifar100_defaults(dataset):
            return cls.Params(epoch_decay_start=100)
        return cls.Params()

    def pair_losses(self, logits1, logits2, targets, forget_rate):
        return co_teaching_loss(logits1, logits2, targets, forget_rate=forget_rate,
                                official_loss_scale=self.params.official_loss_scale)
