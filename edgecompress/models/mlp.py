"""Multi-layer perceptron, the BNN-literature MNIST model (Hubara et al., 2016 use 3x4096)."""

from __future__ import annotations

import math
from typing import Sequence

from torch import Tensor, nn

from .activations import make_activation

class MLP(nn.Module):
    """flatten -> [Linear -> BatchNorm1d -> activation -> Dropout] x len(hidden) -> Linear."""

    def __init__(self, num_classes: int = 10, input_shape: Sequence[int] = (1, 28, 28),
                 hidden: Sequence[int] = (256, 256), batchnorm: bool = True,
                 activation: str = "relu", dropout: float = 0.0) -> None:
        super().__init__()
        make_activation(activation, "mlp")  # validate before building
        self.input_shape = tuple(input_shape)
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(self.input_shape)
        for h in hidden:
            layers.append(nn.Linear(width, h, bias=not batchnorm))
            if batchnorm:
                layers.append(nn.BatchNorm1d(h))
            layers.append(make_activation(activation, "mlp"))
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)
