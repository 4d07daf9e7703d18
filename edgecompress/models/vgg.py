"""VGG-small, the CIFAR-10 network of the binarization literature (LQ-Nets, Zhang et al. 2018;
IR-Net, Qin et al. 2020): 2x conv(128) -> pool, 2x conv(256) -> pool, 2x conv(512) -> pool,
Linear(512*4*4 -> classes). Every 3x3 conv is followed by BatchNorm and ReLU; the max-pool comes
after the second conv of each pair, before its BatchNorm (the usual binary-network placement). ``activation="hardtanh"`` replaces the
ReLUs for binary activations; ``width`` scales every channel count."""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from .activations import make_activation


def _channels(c: int, width: float) -> int:
    return max(1, int(round(c * width)))


class VGGSmall(nn.Module):
    def __init__(self, num_classes: int = 10, input_shape: Sequence[int] = (3, 32, 32),
                 width: float = 1.0, activation: str = "relu") -> None:
        super().__init__()
        self.input_shape = tuple(input_shape)
        in_ch, h, w = self.input_shape
        layers: list[nn.Module] = []
        for c in (128, 256, 512):
            c = _channels(c, width)
            layers += [nn.Conv2d(in_ch, c, 3, padding=1, bias=False), nn.BatchNorm2d(c),
                       make_activation(activation, "vgg-small"),
                       nn.Conv2d(c, c, 3, padding=1, bias=False), nn.MaxPool2d(2),
                       nn.BatchNorm2d(c), make_activation(activation, "vgg-small")]
            in_ch, h, w = c, h // 2, w // 2
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(in_ch * h * w, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).flatten(1))
