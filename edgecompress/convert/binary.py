"""Binarization methods (BinaryConnect family, ProxConnect++, BNN++): :class:`BinaryConverter`,
registered under every name of :data:`edgecompress.quantizers.METHODS`.

Each method is a quantizer pair (see :mod:`edgecompress.quantizers.methods`) for the weights of
Linear and Conv2d layers; in W1A1 mode the layer inputs are binarized too.
"""

from __future__ import annotations

from typing import Any, Mapping

from torch import nn

from ..errors import ConversionError
from ..layers import BinaryConv2d, BinaryLinear
from ..layers.binary import SCALINGS
from ..quantizers import METHODS, method_pair
from .engine import Converter, keyword_parameters, register_method

MODES = ("w1a32", "w1a1")


class BinaryConverter(Converter):
    """Binarizes Linear and Conv2d weights with a method's quantizer pair, and in W1A1 mode also
    their inputs (with the ``activation`` method's pair, BNN's sign / clipped STE by default).
    ``prox=`` / ``backward=`` (quantizer names) replace the method's P or B, e.g.
    ``convert(net, "bnn++", prox="binaryrelax")`` (see
    :func:`edgecompress.quantizers.method_pair`); the scheduled parameters of the resulting pair
    (``mu``, ``beta``, ``lam``...) are options too."""

    family = True
    supported_types = (nn.Linear, nn.Conv2d)

    def __init__(self, method: str, /, *, mode: str = "w1a32", scaling: str = "none",
                 activation: str = "bnn", prox: Any = None, backward: Any = None,
                 **method_params: Any) -> None:
        mode = mode.lower()
        if mode not in MODES:
            raise ConversionError(f"mode must be one of {MODES}, got {mode!r}")
        if scaling not in SCALINGS:
            raise ConversionError(f"scaling must be one of {SCALINGS}, got {scaling!r}")
        activation = activation.lower()
        if activation not in METHODS:
            raise ConversionError(f"activation must be one of {METHODS}, got {activation!r}")
        overrides = {k: v for k, v in (("prox", prox), ("backward", backward)) if v is not None}
        try:
            method_pair(method, **overrides, **method_params)  # validate once, here
        except ValueError as exc:  # unknown method, quantizer or parameter
            raise ConversionError(str(exc)) from None
        self.method, self.method_params = method, {**overrides, **method_params}
        self.activation = activation if mode == "w1a1" else None
        self.scaling = scaling

    @classmethod
    def options(cls, method: str, chosen: Mapping[str, Any]) -> set[str]:
        """The constructor's keywords and the scheduled parameters of the quantizer pair that
        ``method`` with the chosen ``prox`` / ``backward`` makes."""
        try:
            pair = method_pair(method, prox=chosen.get("prox"), backward=chosen.get("backward"))
        except ValueError as exc:  # unknown method or quantizer
            raise ConversionError(f"method {method!r}: {exc}") from None
        return keyword_parameters(cls) | set(pair.prox.params) | set(pair.backward.params)

    def convert_layer(self, module: nn.Module) -> nn.Module:
        options = dict(
            weight_quantizer=method_pair(self.method, **self.method_params),
            input_quantizer=method_pair(self.activation) if self.activation else None,
            scaling=self.scaling,
        )
        if isinstance(module, nn.Conv2d):
            return BinaryConv2d.from_float(module, **options)
        return BinaryLinear.from_float(module, **options)


for _name in METHODS:
    register_method(_name)(BinaryConverter)
