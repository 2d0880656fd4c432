"""Classifiers: CIFAR ResNet-18/34 and small CNNs for CPU runs, in one registry.

The ResNets are the CIFAR variant used by the paper and its baselines (kuangliu/pytorch-cifar
`models/resnet.py`): a 3×3 stride-1 stem and no max-pool, so 32×32 inputs keep their resolution into
the first stage. `small-cnn` and `tiny-cnn` are the registered twins that make CPU runs and tests fast;
`small-cnn-mlp` (a 512-unit ReLU layer between the pooled features and the classifier) is the `shapes`
protocol's network, and `medium-cnn` (twice the widths) the wider one its probes tried
(reports/shapes-protocol/).
"""

from __future__ import annotations

from typing import Callable

from echobench.registry import Registry

# A network factory: fn(num_classes) -> torch.nn.Module. The registry's kind stays "model": protocols
# name a network with `model:`, and `echobench ls models` lists these (not the diffusion configs of
# `echobench.echoalign.diffusion_configs`).
NETWORKS: Registry[Callable] = Registry("model")


def _nn():
    import torch.nn as nn

    return nn


class _Blocks:
    """Builders kept in functions so importing this module does not import torch."""

    @staticmethod
    def basic_block(in_planes: int, planes: int, stride: int):
        nn = _nn()
        import torch.nn.functional as F

        class BasicBlock(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
                self.bn1 = nn.BatchNorm2d(planes)
                self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
                self.bn2 = nn.BatchNorm2d(planes)
                self.shortcut = nn.Sequential()
                if stride != 1 or in_planes != planes:
                    self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

            def forward(self, x):
                out = F.relu(self.bn1(self.conv1(x)))
                out = self.bn2(self.conv2(out))
                return F.relu(out + self.shortcut(x))

        return BasicBlock()


def cifar_resnet(num_blocks: list[int], num_classes: int, width: int = 64):
    """ResNet with BasicBlocks, 3×3 stem, no max-pool; `features()` gives the penultimate layer."""
    nn = _nn()
    import torch.nn.functional as F

    class CifarResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            layers, in_planes = [], width
            for i, blocks in enumerate(num_blocks):
                planes, stride = width * 2**i, 1 if i == 0 else 2
                for s in [stride] + [1] * (blocks - 1):
                    layers.append(_Blocks.basic_block(in_planes, planes, s))
                    in_planes = planes
            self.layers = nn.Sequential(*layers)
            self.linear = nn.Linear(in_planes, num_classes)

        def features(self, x):
            out = self.layers(F.relu(self.bn1(self.conv1(x))))
            return F.adaptive_avg_pool2d(out, 1).flatten(1)

        def forward(self, x):
            return self.linear(self.features(x))

    return CifarResNet()


def simple_cnn(num_classes: int, widths: tuple[int, ...], hidden: int = 0):
    """conv-BN-ReLU stages at full, 1/2, 1/4, ... resolution (2× max-pool between them), then global
    average pooling and a linear head. One narrow conv at full resolution keeps corners visible
    while staying cheap on CPU; the widths double as the resolution halves."""
    nn = _nn()

    class SimpleCNN(nn.Module):
        def __init__(self):
            super().__init__()
            layers, in_ch = [], 3
            for i, w in enumerate(widths):
                if i > 0:
                    layers.append(nn.MaxPool2d(2))
                layers += [nn.Conv2d(in_ch, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
                in_ch = w
            self.body = nn.Sequential(*layers)
            self.head = nn.Sequential(nn.Linear(in_ch, hidden), nn.ReLU(inplace=True)) if hidden else nn.Identity()
            self.linear = nn.Linear(hidden or in_ch, num_classes)

        def features(self, x):
            return self.head(self.body(x).mean(dim=(2, 3)))

        def forward(self, x):
            return self.linear(self.features(x))

    return SimpleCNN()


NETWORKS.add("resnet18", lambda num_classes: cifar_resnet([2, 2, 2, 2], num_classes))
NETWORKS.add("resnet34", lambda num_classes: cifar_resnet([3, 4, 6, 3], num_classes))
NETWORKS.add("small-cnn", lambda num_classes: simple_cnn(num_classes, (16, 32, 64, 128)))
NETWORKS.add("medium-cnn", lambda num_classes: simple_cnn(num_classes, (32, 64, 128, 256), hidden=512))
NETWORKS.add("small-cnn-mlp", lambda num_classes: simple_cnn(num_classes, (16, 32, 64, 128), hidden=512))
NETWORKS.add("tiny-cnn", lambda num_classes: simple_cnn(num_classes, (8, 16, 32)))
NETWORKS.add("co-teaching-cnn", "echobench.baselines.co_teaching:co_teaching_cnn")  # Co-teaching's 9-layer CNN


def build_model(name: str, num_classes: int):
    return NETWORKS.get(name)(num_classes)
