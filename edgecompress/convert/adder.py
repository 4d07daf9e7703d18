"""AdderNet: :class:`AdderConverter`, registered as ``"adder"``.

Replaces Linear and Conv2d layers by :class:`~edgecompress.layers.AdderLinear` /
:class:`~edgecompress.layers.AdderConv2d` (negative L1 distance with AdderNet's gradient rules,
see :mod:`edgecompress.layers.adder`) with the weights copied: the baseline the EuclidNet
method (``"euclid"``) is compared with.
"""

from __future__ import annotations

from torch import nn

from ..layers import AdderConv2d, AdderLinear
from ..layers.adder import DEFAULT_ETA, check_eta
from .engine import Converter, register_method


@register_method("adder")
class AdderConverter(Converter):
    """Linear / Conv2d -> adder layers computing -sum |x - w| + b. ``eta``: AdderNet's adaptive
    learning-rate scale of each layer's weight gradient (0.2 by default; None turns it off).
    The default policy keeps the first and last layers as they are."""

    supported_types = (nn.Linear, nn.Conv2d)

    def __init__(self, *, eta: float | None = DEFAULT_ETA) -> None:
        self.eta = check_eta(eta)  # a clear error before converting

    def convert_layer(self, module: nn.Module) -> nn.Module:
        if isinstance(module, nn.Conv2d):
            return AdderConv2d.from_float(module, eta=self.eta)
        return AdderLinear.from_float(module, eta=self.eta)
