"""Uniform n-bit quantized layers: Linear, Conv2d, the EuclidNet and the AdderNet layers with
b-bit weights and (optionally) b-bit inputs.

Forward: y = op(A(x), Q(w)) + b, where op is the layer's own operation (a product for
:class:`UniformLinear` / :class:`UniformConv2d`, the squared distance -1/2 ||x - w||^2 (or its
theta homotopy) for :class:`UniformEuclidLinear` / :class:`UniformEuclidConv2d`: the quantized
EuclidNet, the L1 distance -sum |x - w| for :class:`UniformAdderLinear` /
:class:`UniformAdderConv2d`: the quantized AdderNet), Q the
:class:`~edgecompress.quantizers.uniform.UniformWeightQuantizer` (symmetric per output channel)
and A the optional :class:`~edgecompress.quantizers.uniform.UniformActivationQuantizer`.
Backward: through the quantizers' gradients (straight-through for the weights; LSQ or
straight-through for the inputs), then the operation's gradients (the exact ones; for the adder
layers AdderNet's published rules and adaptive scaling, taken at Q(w) and A(x)). Build them
from trained layers with ``from_layer`` (what ``convert(model, "uniform")`` does).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConversionError
from ..quantizers.uniform import UniformActivationQuantizer, UniformWeightQuantizer
from .adder import AdderConv2d, AdderLinear
from .base import CompressedLayer
from .euclid import EuclidConv2d, EuclidLinear


class _UniformQuantized(CompressedLayer):
    """The quantizers of a uniform n-bit layer; it precedes the layer class in the bases, so its
    ``quantized_weight`` / ``quantized_input`` are the ones the layer's forward calls."""

    weight: nn.Parameter

    def __init__(self, *args: Any, weight_quantizer: UniformWeightQuantizer,
                 input_quantizer: UniformActivationQuantizer | None = None,
                 **kwargs: Any) -> None:
        """The layer's own arguments, then the quantizers."""
        super().__init__(*args, **kwargs)
        self._setup_uniform(weight_quantizer, input_quantizer)

    def _setup_uniform(self, weight_quantizer: UniformWeightQuantizer,
                       input_quantizer: UniformActivationQuantizer | None) -> None:
        if not isinstance(weight_quantizer, UniformWeightQuantizer):
            raise ConversionError(f"weight_quantizer must be a UniformWeightQuantizer, got "
                                  f"{type(weight_quantizer).__name__}")
        if input_quantizer is not None and not isinstance(input_quantizer,
                                                          UniformActivationQuantizer):
            raise ConversionError(f"input_quantizer must be a UniformActivationQuantizer or "
                                  f"None, got {type(input_quantizer).__name__}")
        self.weight_quantizer = weight_quantizer
        self.input_quantizer = input_quantizer

    @property
    def weight_bits(self) -> int:  # type: ignore[override]
        return self.weight_quantizer.bits

    @property
    def input_bits(self) -> int:  # type: ignore[override]
        return self.input_quantizer.bits if self.input_quantizer is not None else 32

    def quantized_weight(self) -> Tensor:
        """Q(w), differentiable (straight-through)."""
        return self.weight_quantizer(self.weight)

    def quantized_input(self, x: Tensor) -> Tensor:
        return x if self.input_quantizer is None else self.input_quantizer(x)

    def hard_weight(self) -> Tensor:
        """Q(w) without autograd."""
        with torch.no_grad():
            return self.weight_quantizer(self.weight).detach()

    def discrete_weight(self) -> Tensor:
        """The integer codes of the weights (int8, whatever the bit width)."""
        return self.weight_quantizer.codes(self.weight)[0]

    @classmethod
    def from_layer(cls, layer: nn.Module, *, weight_quantizer: UniformWeightQuantizer,
                   input_quantizer: UniformActivationQuantizer | None = None) -> Any:
        """A quantized copy of ``layer`` (of the class this one quantizes): same geometry and
        state (weights, bias; theta and its schedule for a Euclid layer, eta for an adder
        layer), device and dtype."""
        if isinstance(layer, (nn.Linear, EuclidLinear, AdderLinear)):
            args: tuple = (layer.in_features, layer.out_features, layer.bias is not None)
        else:
            args = (layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                    layer.padding, layer.dilation, layer.groups, layer.bias is not None,
                    layer.padding_mode)
        options: dict[str, Any] = {}
        if hasattr(layer, "theta"):
            options["theta"] = layer.schedules.get("theta", float(layer.theta))
        if hasattr(layer, "eta"):
            options["eta"] = layer.eta
        new = cls(*args, **options, weight_quantizer=weight_quantizer,
                  input_quantizer=input_quantizer)
        new.to(device=layer.weight.device, dtype=layer.weight.dtype)
        new.load_state_dict(layer.state_dict(), strict=False)  # the quantizers keep their state
        return new

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, weight_bits={self.weight_bits}, "
                f"input_bits={self.input_bits}")


class UniformLinear(_UniformQuantized, nn.Linear):
    """nn.Linear with b-bit weights (and optionally b-bit inputs)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(self.quantized_input(x), self.quantized_weight(), self.bias)


class UniformConv2d(_UniformQuantized, nn.Conv2d):
    """nn.Conv2d with b-bit weights (and optionally b-bit inputs)."""

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(self.quantized_input(x), self.quantized_weight(), self.bias)


class UniformEuclidLinear(_UniformQuantized, EuclidLinear):
    """EuclidLinear on b-bit weights and (optionally) b-bit inputs: the quantized EuclidNet."""


class UniformEuclidConv2d(_UniformQuantized, EuclidConv2d):
    """EuclidConv2d on b-bit weights and (optionally) b-bit inputs: the quantized EuclidNet."""


class UniformAdderLinear(_UniformQuantized, AdderLinear):
    """AdderLinear on b-bit weights and (optionally) b-bit inputs: the quantized AdderNet."""


class UniformAdderConv2d(_UniformQuantized, AdderConv2d):
    """AdderConv2d on b-bit weights and (optionally) b-bit inputs: the quantized AdderNet (the
    C kernels run on Q(w) and A(x) where they take the geometry, as for AdderConv2d)."""


#: the layer class each uniform class quantizes (``convert(model, "uniform")`` reads it)
QUANTIZED: dict[type[nn.Module], type[_UniformQuantized]] = {
    nn.Linear: UniformLinear, nn.Conv2d: UniformConv2d, EuclidLinear: UniformEuclidLinear,
    EuclidConv2d: UniformEuclidConv2d, AdderLinear: UniformAdderLinear,
    AdderConv2d: UniformAdderConv2d}
