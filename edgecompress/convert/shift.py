"""Power-of-two (shift) methods (DeepShift-Q, DeepShift-PS, S3, DenseShift):
:class:`ShiftConverter`, registered under every name of
:data:`edgecompress.quantizers.shift.SHIFT_METHODS`."""

from __future__ import annotations

from torch import nn

from ..errors import ConversionError
from ..layers import ShiftConv2d, ShiftLinear
from ..quantizers.shift import INITS, SHIFT_METHODS, check_activation_bits, check_bits
from .engine import Converter, register_method


class ShiftConverter(Converter):
    """Makes Linear and Conv2d weights powers of two (see :mod:`edgecompress.quantizers.shift`):
    ``bits`` per weight, the latents initialised by ``init``, and optionally ``activation_bits``
    for the layer's inputs. With the default first/last policy this is the papers' policy:
    first conv and classifier float, every other conv (1x1 downsampling ones included)
    quantized, BatchNorm float."""

    family = True
    supported_types = (nn.Linear, nn.Conv2d)

    def __init__(self, method: str, /, *, bits: int = 3, init: str = "paper",
                 activation_bits: int | None = None) -> None:
        bits = check_bits(bits, method)  # an int (not a bool or 3.0) among BITS
        if init not in INITS:
            raise ConversionError(f"{method}: init must be one of {INITS}, got {init!r}")
        if activation_bits is not None:
            activation_bits = check_activation_bits(activation_bits)
        self.layer_options = dict(method=method, bits=bits, init=init,
                                  activation_bits=activation_bits)

    def convert_layer(self, module: nn.Module) -> nn.Module:
        if isinstance(module, nn.Conv2d):
            return ShiftConv2d.from_float(module, **self.layer_options)
        return ShiftLinear.from_float(module, **self.layer_options)


for _name in SHIFT_METHODS:
    register_method(_name)(ShiftConverter)
