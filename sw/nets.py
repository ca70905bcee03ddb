"""The built-in residual networks for 1x28x28 inputs (MNIST): a CIFAR-style ResNet-20 and a
tiny MobileNetV2.

Both use only what ``sqaccel.sw.plan`` lowers: Conv2d (grouped for the depthwise ones),
BatchNorm2d directly after a convolution, ReLU / ReLU6, residual adds written ``x + y``,
AdaptiveAvgPool2d(1), ``torch.flatten(x, 1)`` and Linear.
"""

from __future__ import annotations

import torch
from torch import nn

NUM_CLASSES = 10


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    )


class BasicBlock(nn.Module):
    """Two 3x3 conv + BN, the ReLU after the add; a 1x1 conv + BN projection shortcut when
    the stride or the channel count changes."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv_bn(cin, cout, 3, stride)
        self.relu1 = nn.ReLU()
        self.conv2 = _conv_bn(cout, cout, 3)
        self.shortcut = (_conv_bn(cin, cout, 1, stride) if stride != 1 or cin != cout
                         else nn.Identity())
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(self.relu1(self.conv1(x)))
        return self.relu2(y + self.shortcut(x))


class ResNet20(nn.Module):
    """He et al.'s CIFAR ResNet-20 (3 stages of 3 basic blocks, 16/32/64 channels) on 1x28x28.

    The stem is a 3x3 convolution with stride 2 (the CIFAR original has stride 1): the
    stages then run at 14x14, 7x7 and 4x4 instead of 28x28, 14x14 and 7x7, about 4x fewer
    MACs, which keeps the whole-network RTL cosimulation cheap; MNIST loses nothing to it.
    """

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.stem = _conv_bn(1, 16, 3, stride=2)
        self.relu = nn.ReLU()
        blocks: list[nn.Module] = []
        cin = 16
        for cout, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(3):
                blocks.append(BasicBlock(cin, cout, stride if i == 0 else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.relu(self.stem(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1x1 expand + BN + ReLU6, 3x3 depthwise + BN + ReLU6, 1x1
    project + BN (linear), and the residual add when the stride is 1 and in == out."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = cin * expansion
        self.expand = _conv_bn(cin, hidden, 1)
        self.act1 = nn.ReLU6()
        self.depthwise = _conv_bn(hidden, hidden, 3, stride, groups=hidden)
        self.act2 = nn.ReLU6()
        self.project = _conv_bn(hidden, cout, 1)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.act2(self.depthwise(self.act1(self.expand(x)))))
        return x + y if self.residual else y


# (out channels, stride) of the inverted residual blocks: 14x14 -> 7x7 -> 4x4.
MOBILENET_TINY_BLOCKS = ((16, 1), (24, 2), (24, 1), (32, 2), (32, 1))
MOBILENET_TINY_EXPANSION = 4


class MobileNetV2Tiny(nn.Module):
    """A MobileNetV2 cut down for 1x28x28: stem 3x3 stride 2 + BN + ReLU6, five inverted
    residual blocks (16 -> 16 -> 24 -> 24 -> 32 -> 32 channels, expansion 4), 1x1 conv to 64
    + BN + ReLU6, global average pool and a linear classifier (about 1.5 M MACs an image)."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.stem = _conv_bn(1, 16, 3, stride=2)
        self.stem_act = nn.ReLU6()
        blocks: list[nn.Module] = []
        cin = 16
        for cout, stride in MOBILENET_TINY_BLOCKS:
            blocks.append(InvertedResidual(cin, cout, stride, MOBILENET_TINY_EXPANSION))
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.head = _conv_bn(cin, 64, 1)
        self.head_act = nn.ReLU6()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem_act(self.stem(x)))
        x = self.head_act(self.head(x))
        return self.fc(torch.flatten(self.pool(x), 1))


def resnet20() -> ResNet20:
    return ResNet20()


def mobilenetv2_tiny() -> MobileNetV2Tiny:
    return MobileNetV2Tiny()
