"""A small residual network for keyword spotting on log-mel spectrograms (res8-style, after
Tang & Lin, "Deep residual learning for small-footprint keyword spotting", ICASSP 2018)."""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from .activations import make_activation


class _Block(nn.Module):
    def __init__(self, channels: int, activation: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.act1 = make_activation(activation, "kws-resnet")
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.act2 = make_activation(activation, "kws-resnet")

    def forward(self, x: Tensor) -> Tensor:
        return self.act2(self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x))))) + x)


class KWSResNet(nn.Module):
    """conv3x3 (1 -> C) -> BatchNorm -> activation -> average pool -> ``blocks`` residual
    blocks of two 3x3 convolutions -> global average pool -> Linear. Input: (1, mel bins,
    frames) log-mel features; C = ``channels`` (45 in res8)."""

    def __init__(self, num_classes: int = 10, input_shape: Sequence[int] = (1, 40, 101),
                 channels: int = 45, blocks: int = 3, pool: Sequence[int] = (2, 2),
                 activation: str = "relu") -> None:
        super().__init__()
        make_activation(activation, "kws-resnet")
        self.input_shape = tuple(input_shape)
        self.stem = nn.Sequential(
            nn.Conv2d(self.input_shape[0], channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels), make_activation(activation, "kws-resnet"),
            nn.AvgPool2d(tuple(pool)))
        self.blocks = nn.Sequential(*[_Block(channels, activation) for _ in range(blocks)])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.pool(self.blocks(self.stem(x))).flatten(1))
