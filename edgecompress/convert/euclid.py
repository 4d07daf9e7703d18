"""EuclidNet: :class:`EuclidConverter`, registered as ``"euclid"``.

Replaces Linear and Conv2d layers by :class:`~edgecompress.layers.EuclidLinear` /
:class:`~edgecompress.layers.EuclidConv2d` with the trained weights copied, so a float model can
be moved to squared-distance layers by the homotopy (``theta`` scheduled from 0 to 1, see
:mod:`edgecompress.layers.euclid`) or trained as a EuclidNet from the start (``theta=1.0``).
"""

from __future__ import annotations

from torch import nn

from ..layers import EuclidConv2d, EuclidLinear
from ..layers.euclid import ThetaSpec, theta_schedule
from .engine import Converter, register_method


@register_method("euclid")
class EuclidConverter(Converter):
    """Linear / Conv2d -> Euclid layers computing x.w - theta/2 (||x||^2 + ||w||^2) + b.
    ``theta``: a number in [0, 1] (1, the default: -1/2 ||x - w||^2 + b) or a schedule, e.g.
    ``{"kind": "linear", "start": 0, "end": 1}`` for the homotopy from multiplication, stepped
    by the trainer. The default policy keeps the first and last layers as they are."""

    supported_types = (nn.Linear, nn.Conv2d)

    def __init__(self, *, theta: ThetaSpec = 1.0) -> None:
        theta_schedule(theta)  # a clear error before converting
        self.theta = theta

    def convert_layer(self, module: nn.Module) -> nn.Module:
        if isinstance(module, nn.Conv2d):
            return EuclidConv2d.from_float(module, theta=self.theta)
        return EuclidLinear.from_float(module, theta=self.theta)
