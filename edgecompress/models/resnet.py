"""ResNets (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016).

- CIFAR ResNet-20/32/56: a 3x3 conv(16) stem, three stages of n basic blocks with 16/32/64
  channels (n = 3, 5, 9), global average pooling, Linear.
- ResNet-18: the ImageNet layout (7x7/2 conv + 3x3/2 max-pool stem, four stages of two basic
  blocks with 64..512 channels); ``stem="cifar"`` swaps in a 3x3/1 conv and no max-pool.

Shortcuts that change shape are projections (1x1 conv + BatchNorm, option "B") by default: the
binarization literature keeps them as real layers that a converter can quantize or keep float.
``shortcut="A"`` gives the paper's parameter-free CIFAR shortcut (stride-2 subsampling and zero
channel padding). ``activation="hardtanh"`` replaces every ReLU (for binary activations).
"""

from __future__ import annotations

from typing import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from .activations import make_activation


def _channels(c: int, width: float) -> int:
    return max(1, int(round(c * width)))


class PadShortcut(nn.Module):
    """Option A: subsample spatially by ``stride`` and zero-pad the new channels."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.stride, self.extra = stride, out_ch - in_ch

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, ::self.stride, ::self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))


class BasicBlock(nn.Module):
    """conv3x3 -> BN -> act -> conv3x3 -> BN, plus shortcut, then act."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, shortcut: str,
                 activation: str = "relu") -> None:
        super().__init__()
        self.act1 = make_activation(activation, "resnet")
        self.act2 = make_activation(activation, "resnet")
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            if shortcut == "A":
                self.shortcut = PadShortcut(in_ch, out_ch, stride)
            else:
                self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False),
                                              nn.BatchNorm2d(out_ch))

    def forward(self, x: Tensor) -> Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


class ResNet(nn.Module):
    """A stem, stages of basic blocks, global average pooling and a Linear classifier."""

    def __init__(self, blocks: Sequence[int], channels: Sequence[int], num_classes: int,
                 input_shape: Sequence[int], stem: str, shortcut: str, width: float,
                 activation: str = "relu") -> None:
        super().__init__()
        if stem not in ("cifar", "imagenet"):
            raise ValueError(f"resnet: stem must be 'cifar' or 'imagenet', got {stem!r}")
        if shortcut not in ("A", "B"):
            raise ValueError(f"resnet: shortcut must be 'A' or 'B', got {shortcut!r}")
        self.input_shape = tuple(input_shape)
        chans = [_channels(c, width) for c in channels]
        in_ch = self.input_shape[0]
        if stem == "imagenet":
            self.stem = nn.Sequential(nn.Conv2d(in_ch, chans[0], 7, 2, 3, bias=False),
                                      nn.BatchNorm2d(chans[0]),
                                      make_activation(activation, "resnet"),
                                      nn.MaxPool2d(3, 2, 1))
        else:
            self.stem = nn.Sequential(nn.Conv2d(in_ch, chans[0], 3, 1, 1, bias=False),
                                      nn.BatchNorm2d(chans[0]),
                                      make_activation(activation, "resnet"))
        stages, prev = [], chans[0]
        for i, (n, c) in enumerate(zip(blocks, chans)):
            stride = 1 if i == 0 else 2
            stage = [BasicBlock(prev, c, stride, shortcut, activation)]
            stage += [BasicBlock(c, c, 1, shortcut, activation) for _ in range(n - 1)]
            stages.append(nn.Sequential(*stage))
            prev = c
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(prev, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        x = self.stages(self.stem(x))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def cifar_resnet(depth: int, num_classes: int = 10, input_shape: Sequence[int] = (3, 32, 32),
                 shortcut: str = "B", width: float = 1.0, activation: str = "relu") -> ResNet:
    """CIFAR ResNet of ``depth`` = 6n + 2 layers."""
    n = (depth - 2) // 6
    return ResNet([n, n, n], [16, 32, 64], num_classes, input_shape, "cifar", shortcut, width,
                  activation)


def resnet18(num_classes: int = 10, input_shape: Sequence[int] | None = None,
             stem: str = "imagenet", width: float = 1.0, activation: str = "relu") -> ResNet:
    """ResNet-18; default input 3x224x224 with the ImageNet stem, 3x32x32 with the CIFAR stem."""
    if input_shape is None:
        input_shape = (3, 224, 224) if stem == "imagenet" else (3, 32, 32)
    return ResNet([2, 2, 2, 2], [64, 128, 256, 512], num_classes, input_shape, stem, "B", width,
                  activation)
