"""A small convolutional network for 28x28 digits (MNIST-family) experiments."""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

from .activations import make_activation


class ConvNet(nn.Module):
    """[conv3x3 -> BatchNorm -> activation -> max-pool 2] x 2 -> conv3x3 -> BatchNorm ->
    activation -> global average pool -> Linear. Channels 32, 64, 128 times ``width``."""

    def __init__(self, num_classes: int = 10, input_shape: Sequence[int] = (1, 28, 28),
                 width: float = 1.0, activation: str = "relu") -> None:
        super().__init__()
        make_activation(activation, "convnet")
        self.input_shape = tuple(input_shape)
        c1, c2, c3 = (max(1, round(c * width)) for c in (32, 64, 128))
        layers: list[nn.Module] = []
        for i, (cin, cout) in enumerate(((self.input_shape[0], c1), (c1, c2), (c2, c3))):
            layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                       make_activation(activation, "convnet")]
            if i < 2:
                layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c3, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))
