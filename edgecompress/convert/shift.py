"""Power-of-two (shift) methods (DeepShift-Q, DeepShift-PS, S3, DenseShift):
:class:`ShiftConverter`, registered under every name of
:data:`edgecompress.quantizers.shift.SHIFT_METHODS`."""

from __future__ import annotations

from typing import Any, Mapping

from torch import nn

from ..errors import ConversionError
from ..layers import ShiftConv2d, ShiftLinear
from ..quantizers.shift import (INITS, PARAMETRIZATIONS, SHIFT_METHODS, check_activation_bits,
                                check_bits)
from .engine import Converter, keyword_parameters, register_method


class ShiftConverter(Converter):
    """Makes Linear and Conv2d weights powers of two (see :mod:`edgecompress.quantizers.shift`):
    ``bits`` per weight, the latents initialised by ``init``, and optionally ``activation_bits``
    for the layer's inputs. With the default first/last policy this is the papers' policy:
    first conv and classifier float, every other conv (1x1 downsampling ones included)
    quantized, BatchNorm float. A method's own options are accepted too (deepshift-q's
    ``clamp_latent``, see :mod:`edgecompress.quantizers.shift`)."""

    family = True
    supported_types = (nn.Linear, nn.Conv2d)
    converts_lstm = True

    def __init__(self, method: str, /, *, bits: int = 3, init: str = "paper",
                 activation_bits: int | None = None, **method_options: Any) -> None:
        bits = check_bits(bits, method)  # an int (not a bool or 3.0) among BITS
        if init not in INITS:
            raise ConversionError(f"{method}: init must be one of {INITS}, got {init!r}")
        if activation_bits is not None:
            activation_bits = check_activation_bits(activation_bits)
        PARAMETRIZATIONS[method].check_options(method_options)  # a clear error, before converting
        self.layer_options = dict(method=method, bits=bits, init=init,
                                  activation_bits=activation_bits, **method_options)

    @classmethod
    def options(cls, method: str, chosen: Mapping[str, Any]) -> set[str]:
        """The constructor's keywords and the options of ``method``'s parametrization."""
        return keyword_parameters(cls) | set(PARAMETRIZATIONS[method].options)

    def convert_layer(self, module: nn.Module) -> nn.Module:
        if isinstance(module, nn.Conv2d):
            return ShiftConv2d.from_float(module, **self.layer_options)
        return ShiftLinear.from_float(module, **self.layer_options)


for _name in SHIFT_METHODS:
    register_method(_name)(ShiftConverter)
