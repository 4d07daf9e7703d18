"""Binary Linear and Conv2d layers: latent float weights, binary weights in the forward pass.

Forward:  y = op(A(x), alpha * F(theta)) + b, where F is the weight quantizer pair's forward map,
A the optional input (activation) quantizer and alpha the optional per-output-channel scale.
Backward: each quantizer pair applies its own backward derivative B'(.) (see
:mod:`edgecompress.quantizers`). With ``scaling="channel"`` alpha = mean|theta| over the fan-in,
detached (XNOR-Net, Rastegari et al. 2016); with ``scaling="learnable"`` alpha is a parameter
initialised to that value.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConversionError
from ..quantizers import QuantizerPair, Sign
from .base import CompressedLayer

SCALINGS = ("none", "channel", "learnable")


class _BinaryWeights(CompressedLayer):
    """Shared state of binary layers: weight quantizer, input quantizer, scaling."""

    weight_bits = 1
    weight: nn.Parameter

    def _setup_binary(
        self,
        weight_quantizer: QuantizerPair,
        input_quantizer: QuantizerPair | None,
        scaling: str,
    ) -> None:
        if scaling not in SCALINGS:
            raise ConversionError(f"scaling must be one of {SCALINGS}, got {scaling!r}")
        if not isinstance(weight_quantizer, QuantizerPair):
            raise ConversionError(
                f"weight_quantizer must be a QuantizerPair, got {type(weight_quantizer).__name__}"
            )
        self.weight_quantizer = weight_quantizer
        self.input_quantizer = input_quantizer
        self.scaling = scaling
        if scaling == "learnable":
            self.alpha = nn.Parameter(self._channel_scale().detach().clone())

    @property
    def input_bits(self) -> int:  # type: ignore[override]
        return 1 if self.input_quantizer is not None else 32

    def _channel_scale(self) -> Tensor:
        dims = tuple(range(1, self.weight.dim()))
        return self.weight.abs().mean(dim=dims, keepdim=True)

    def _scale(self) -> Tensor | None:
        if self.scaling == "channel":
            return self._channel_scale().detach()
        if self.scaling == "learnable":
            return self.alpha
        return None

    def quantized_weight(self) -> Tensor:
        """alpha * F(theta): the weight used in the forward pass (differentiable)."""
        w = self.weight_quantizer(self.weight)
        scale = self._scale()
        return w if scale is None else w * scale

    def hard_weight(self) -> Tensor:
        """The deployed weight alpha * sign(theta), without autograd."""
        with torch.no_grad():
            w = self.weight_quantizer.hard(self.weight)
            scale = self._scale()
            return w if scale is None else w * scale

    def discrete_weight(self) -> Tensor:
        """sign(theta), the binary codes (no scale)."""
        with torch.no_grad():
            return self.weight_quantizer.hard(self.weight)

    def quantized_input(self, x: Tensor) -> Tensor:
        return x if self.input_quantizer is None else self.input_quantizer(x)

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, weight_quantizer={self.weight_quantizer!r}, "
            f"input_quantizer={self.input_quantizer!r}, scaling={self.scaling!r}"
        )


class BinaryLinear(_BinaryWeights, nn.Linear):
    """nn.Linear with binary weights (and optionally binary inputs)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        weight_quantizer: QuantizerPair,
        input_quantizer: QuantizerPair | None = None,
        scaling: str = "none",
    ) -> None:
        nn.Linear.__init__(self, in_features, out_features, bias=bias)
        self._setup_binary(weight_quantizer, input_quantizer, scaling)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(self.quantized_input(x), self.quantized_weight(), self.bias)

    @classmethod
    def from_float(cls, linear: nn.Linear, **options) -> "BinaryLinear":
        """A binary copy of ``linear`` whose latent weights start at its float weights."""
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None, **options)
        _copy_params(linear, layer)
        return layer


class BinaryConv2d(_BinaryWeights, nn.Conv2d):
    """nn.Conv2d with binary weights (and optionally binary inputs)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        *,
        weight_quantizer: QuantizerPair,
        input_quantizer: QuantizerPair | None = None,
        scaling: str = "none",
    ) -> None:
        nn.Conv2d.__init__(
            self, in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
            padding_mode,
        )
        self._setup_binary(weight_quantizer, input_quantizer, scaling)

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(self.quantized_input(x), self.quantized_weight(), self.bias)

    @classmethod
    def from_float(cls, conv: nn.Conv2d, **options) -> "BinaryConv2d":
        """A binary copy of ``conv`` whose latent weights start at its float weights."""
        layer = cls(
            conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
            conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode, **options,
        )
        _copy_params(conv, layer)
        return layer


def _copy_params(src: nn.Module, dst: nn.Module) -> None:
    """Latents start at the float weights, on their device and in their dtype."""
    dst.to(device=src.weight.device, dtype=src.weight.dtype)
    with torch.no_grad():
        dst.weight.copy_(src.weight)
        if getattr(src, "bias", None) is not None:
            dst.bias.copy_(src.bias)
    if getattr(dst, "scaling", None) == "learnable":
        with torch.no_grad():
            dst.alpha.copy_(dst._channel_scale())


def harden(model: nn.Module) -> nn.Module:
    """Switch every quantizer pair in ``model`` (in place) to its deployed form: the forward map
    becomes exactly sign, whatever its schedule had reached (BinaryRelax's and ProxQuant's
    "hard sign at the end"). Returns ``model``."""
    for module in model.modules():
        if isinstance(module, QuantizerPair):
            module.prox = Sign()
            module.backward.schedules.clear()
    return model
