"""Uniform n-bit quantization: :class:`UniformConverter`, registered as ``"uniform"``.

Replaces Linear and Conv2d layers, the EuclidNet layers (EuclidLinear / EuclidConv2d, for a
quantized EuclidNet: ``convert(model, ["euclid", {"name": "uniform", "bits": 4}])``) and the
AdderNet layers (AdderLinear / AdderConv2d, for a quantized AdderNet:
``["adder", {"name": "uniform", "bits": 8}]``) by their :mod:`uniform n-bit forms
<edgecompress.layers.uniform>` with the trained weights copied.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..layers import AdderConv2d, AdderLinear, EuclidConv2d, EuclidLinear
from ..layers.base import CompressedLayer
from ..layers.uniform import QUANTIZED
from ..quantizers.uniform import (UniformActivationQuantizer, UniformWeightQuantizer,
                                  check_bits)
from .engine import Converter, register_method


@register_method("uniform")
class UniformConverter(Converter):
    """Layers -> b-bit weights (``bits``, 2..8, symmetric per output channel) and b-bit inputs
    (``activation_bits``, 2..8, default 8; None keeps the inputs float): unsigned (after a ReLU,
    the default) or ``activation_signed``, their step ``activation_range="learned"`` (LSQ) or
    ``"calibrated"`` (``observer`` "minmax" or "percentile" with ``percentile``; run
    :func:`edgecompress.quantizers.calibrate`). See :mod:`edgecompress.quantizers.uniform` for
    the formulas. The default policy keeps the first and last layers float. An LSTM's gate maps
    always get signed inputs: its input and hidden state h = o tanh(c) are signed, and an
    unsigned quantizer would clamp every negative one to 0."""

    supported_types = (nn.Linear, nn.Conv2d, EuclidLinear, EuclidConv2d, AdderLinear,
                       AdderConv2d)
    converts_lstm = True

    def __init__(self, *, bits: int = 8, activation_bits: int | None = 8,
                 activation_signed: bool = False, activation_range: str = "learned",
                 observer: str = "minmax", percentile: float = 99.99) -> None:
        self.bits = check_bits(bits)
        self.activation = None if activation_bits is None else dict(
            bits=activation_bits, signed=activation_signed, range=activation_range,
            observer=observer, percentile=percentile)
        if self.activation is not None:
            UniformActivationQuantizer(**self.activation)  # a clear error before converting

    def supports(self, module: nn.Module) -> bool:
        """Float Linear / Conv2d layers and the (float-weight) Euclid and adder layers, by exact
        class for compressed ones: a binary or shift layer is an nn.Linear too, and is not
        converted."""
        if type(module) in QUANTIZED:
            return True
        return (isinstance(module, (nn.Linear, nn.Conv2d))
                and not isinstance(module, CompressedLayer))

    def convert_layer(self, module: nn.Module, signed: bool = False) -> nn.Module:
        """``module`` at ``bits``; ``signed`` forces signed inputs (an LSTM's gate maps)."""
        cls = QUANTIZED.get(type(module)) or QUANTIZED[
            nn.Conv2d if isinstance(module, nn.Conv2d) else nn.Linear]
        inputs = None if self.activation is None else UniformActivationQuantizer(
            **{**self.activation, "signed": self.activation["signed"] or signed})
        return cls.from_layer(module, weight_quantizer=UniformWeightQuantizer(self.bits),
                              input_quantizer=inputs)

    def convert_gate_map(self, module: nn.Module) -> nn.Module:
        """An LSTM's gate map, with signed inputs."""
        return self.convert_layer(module, signed=True)
