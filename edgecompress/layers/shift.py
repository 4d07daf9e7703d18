"""Power-of-two (shift) Linear and Conv2d layers.

Forward: y = op(A(x), w) + b with w = the layer's :mod:`~edgecompress.quantizers.shift`
parametrization (every weight 0 or +-2^k) and A an optional activation quantizer. The layer has
no float ``weight`` parameter: its trainable tensors are the parametrization's latents (plus the
bias), so optimizers, ``state_dict`` and DDP see exactly what trains. No weight scale: the
BatchNorm that follows absorbs it (the papers' policy). Keywords beyond the common ones are the
method's own options (``clamp_latent`` for deepshift-q; see
:meth:`~edgecompress.quantizers.shift.ShiftParametrization.check_options`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConversionError
from ..quantizers.shift import (PARAMETRIZATIONS, ShiftParametrization, check_activation_bits,
                                check_bits, ste)
from .base import CompressedLayer


class ActivationQuantizer(nn.Module):
    """Unsigned uniform activation quantizer with a learnable clipping level (PACT, Choi et al.
    2018): y = round(clamp(x, 0, a) (2^b - 1) / a) a / (2^b - 1).
    Backward: straight-through inside [0, a], 0 outside; dL/da = sum of g where x > a."""

    def __init__(self, bits: int, clip: float = 6.0) -> None:
        super().__init__()
        self.bits = check_activation_bits(bits)
        self.clip = nn.Parameter(torch.tensor(float(clip)))

    def forward(self, x: Tensor) -> Tensor:
        levels = 2 ** self.bits - 1
        a = self.clip.abs() + 1e-8
        clipped = torch.minimum(torch.relu(x), a)  # gradient to a where x > a
        step = a / levels
        return ste(torch.round(clipped.detach() / step.detach()) * step.detach(), clipped)

    def extra_repr(self) -> str:
        return f"bits={self.bits}"


class _ShiftWeights(CompressedLayer):
    op_kind = "shift-add"  # type: ignore[assignment]
    weight_param: ShiftParametrization

    def _setup_shift(self, method: str, bits: int, init: str, float_weight: Tensor | None,
                     activation_bits: int | None, method_options: dict[str, bool]) -> None:
        if method not in PARAMETRIZATIONS:
            raise ConversionError(f"unknown shift method {method!r}; available: "
                                  f"{', '.join(PARAMETRIZATIONS)}")
        bits = check_bits(bits, method)
        shape = tuple(self.weight.shape)
        device, dtype = self.weight.device, self.weight.dtype
        del self.weight  # the latents replace it
        self.weight_param = PARAMETRIZATIONS[method](shape, bits, init, float_weight,
                                                     **method_options).to(device=device,
                                                                          dtype=dtype)
        self.method = method
        self.weight_bits = bits
        self.input_quantizer = (ActivationQuantizer(activation_bits)
                                if activation_bits is not None else None)

    @property
    def input_bits(self) -> int:  # type: ignore[override]
        return self.input_quantizer.bits if self.input_quantizer is not None else 32

    def quantized_weight(self) -> Tensor:
        """The power-of-two weight of the forward pass (differentiable in the latents)."""
        return self.weight_param()

    def hard_weight(self) -> Tensor:
        return self.weight_param.hard()

    def discrete_weight(self) -> Tensor:
        return self.weight_param.hard()

    def latent_weight(self) -> Tensor:
        return self.weight_param.latent_weight()

    def regularizer(self) -> Tensor:
        """The method's loss term (S3's dense-weight regularizer; 0 for the others)."""
        return self.weight_param.penalty()

    def quantized_input(self, x: Tensor) -> Tensor:
        return x if self.input_quantizer is None else self.input_quantizer(x)

    def edgecompress_params(self) -> dict[int, int]:
        n = self.weight_param._first().numel()
        floats = sum(p.numel() for name, p in self.named_parameters()
                     if not name.startswith("weight_param."))
        return {self.weight_bits: n, 32: floats} if floats else {self.weight_bits: n}

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, method={self.method!r}, bits={self.weight_bits}"


class ShiftLinear(_ShiftWeights, nn.Linear):
    """nn.Linear with power-of-two weights."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 method: str, bits: int = 3, init: str = "paper",
                 float_weight: Tensor | None = None, activation_bits: int | None = None,
                 **method_options: bool) -> None:
        nn.Linear.__init__(self, in_features, out_features, bias=bias)
        self._setup_shift(method, bits, init, float_weight, activation_bits, method_options)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(self.quantized_input(x), self.quantized_weight(), self.bias)

    @classmethod
    def from_float(cls, linear: nn.Linear, **options) -> "ShiftLinear":
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None,
                    float_weight=linear.weight.detach(), **options)
        _copy_bias(linear, layer)
        return layer


class ShiftConv2d(_ShiftWeights, nn.Conv2d):
    """nn.Conv2d with power-of-two weights."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros", *,
                 method: str, bits: int = 3, init: str = "paper",
                 float_weight: Tensor | None = None, activation_bits: int | None = None,
                 **method_options: bool) -> None:
        nn.Conv2d.__init__(self, in_channels, out_channels, kernel_size, stride, padding,
                           dilation, groups, bias, padding_mode)
        self._setup_shift(method, bits, init, float_weight, activation_bits, method_options)

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(self.quantized_input(x), self.quantized_weight(), self.bias)

    @classmethod
    def from_float(cls, conv: nn.Conv2d, **options) -> "ShiftConv2d":
        layer = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                    conv.padding, conv.dilation, conv.groups, conv.bias is not None,
                    conv.padding_mode, float_weight=conv.weight.detach(), **options)
        _copy_bias(conv, layer)
        return layer


def _copy_bias(src: nn.Module, dst: nn.Module) -> None:
    if getattr(src, "bias", None) is not None:
        with torch.no_grad():
            dst.bias.copy_(src.bias)
    dst.to(next(src.parameters()))  # the float layer's device and dtype
