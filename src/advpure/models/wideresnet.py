"""WideResNet (Zagoruyko & Komodakis 2016) with the key names of RobustBench's
``model_zoo/architectures/wide_resnet.py`` and of DiffPure's ``WideResNet_70_16_dropout``.

Pre-activation basic blocks; a block that changes width or stride applies BN–ReLU to its input
first and feeds that to both its convolution and its 1×1 shortcut. ``normalize`` puts DiffPure's
CIFAR-10 input normalisation inside ``forward`` as plain (non-state-dict) tensors, as upstream;
RobustBench's ``Standard`` has none (input in [0, 1]).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, 1, 1, bias=False)
        self.drop_rate = drop_rate
        self.equal_in_out = in_planes == out_planes
        self.convShortcut = None if self.equal_in_out else \
            nn.Conv2d(in_planes, out_planes, 1, stride, 0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = self.relu1(self.bn1(x))
        out = self.relu2(self.bn2(self.conv1(activated)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        shortcut = x if self.equal_in_out else self.convShortcut(activated)
        return shortcut + self.conv2(out)


class NetworkBlock(nn.Module):
    def __init__(self, blocks: int, in_planes: int, out_planes: int, stride: int,
                 drop_rate: float):
        super().__init__()
        self.layer = nn.Sequential(*[
            BasicBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1,
                       drop_rate) for i in range(blocks)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN-depth-widen: (depth − 4)/6 blocks per group, widths 16, 16k, 32k, 64k."""

    def __init__(self, depth: int = 28, widen_factor: int = 10, num_classes: int = 10,
                 drop_rate: float = 0.0, bias_last: bool = True, normalize: bool = False):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WideResNet: expected depth = 6n + 4, found {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.block1 = NetworkBlock(n, widths[0], widths[1], 1, drop_rate)
        self.block2 = NetworkBlock(n, widths[1], widths[2], 2, drop_rate)
        self.block3 = NetworkBlock(n, widths[2], widths[3], 2, drop_rate)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.relu = nn.ReLU()
        self.fc = nn.Linear(widths[3], num_classes, bias=bias_last)
        self.normalize = normalize
        self.mean = torch.tensor(CIFAR10_MEAN).view(3, 1, 1)    # not in the state dict
        self.std = torch.tensor(CIFAR10_STD).view(3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.normalize:
            x = (x - self.mean.to(x)) / self.std.to(x)
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = self.relu(self.bn1(out))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)
