"""Packed power-of-two (shift) layers: ``PackedShiftLinear`` / ``PackedShiftConv2d``, the
inference form of :class:`~edgecompress.layers.ShiftLinear` / ``ShiftConv2d`` (see
:class:`_PackedShift`). The file holds every weight as its ``bits``-bit value code.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..layers import ActivationQuantizer, ShiftConv2d, ShiftLinear
from .lowbit import LowBitLinear
from .packed import (PackedConv2dShape, PackedLayer, PackedLinearShape, from_bitstream,
                     register_packed, to_bitstream)


def _channels_last(t: Tensor) -> bool:
    """A 4-D tensor in channels-last memory format and not also contiguous (an ambiguous one,
    e.g. with one channel or 1x1 pixels, counts as contiguous)."""
    return (t.dim() == 4 and not t.is_contiguous()
            and t.is_contiguous(memory_format=torch.channels_last))


def _weight_in_layout_of(weight: Tensor, x: Tensor) -> Tensor:
    """A packed shift convolution's decoded weights in ``x``'s memory format: channels-last
    for an input that is channels-last (and not also contiguous), else contiguous, like the
    training form's weights. For a channels-last input torch reorders contiguous weights to
    channels-last itself, so both give the training form's values; holding them channels-last
    saves that reorder per call. (``freeze`` traces models with packed layers as leaves, so
    this test never meets a torch.fx proxy.)"""
    layout = torch.channels_last if _channels_last(x) else torch.contiguous_format
    return weight if weight.is_contiguous(memory_format=layout) else weight.contiguous(
        memory_format=layout)


class _PackedShift(PackedLayer):
    """Frozen power-of-two layer: every weight stored as a ``bits``-bit code, the index of its
    value in the method's sorted value set (sign and exponent together; the file packs the
    codes ``bits`` per weight). The codes are decoded once (on freezing or loading) into float
    weights, exact powers of two, and the forward pass runs torch's float kernel on them: there
    is no shift or exponent-add kernel. For a convolution the gain is size (``bits`` per weight
    on disk), not speed. A linear layer of 2-4-bit codes runs the low-bit kernel at batch <= 16
    instead (:mod:`.lowbit`: the codes decoded in registers, 4 bits read per weight), equal to
    the float path to float rounding.

    A BatchNorm that follows the layer can be folded in (``freeze`` does): ``scale`` (one value
    per output channel) multiplies the decoded weights and ``bias`` takes the BatchNorm's
    offset, the usual inference fusion; the codes stay the power-of-two values.

    Bit-exact with the training-form layer for the same input (except a linear layer on the
    low-bit kernel, equal to float rounding): a convolution runs in its
    input's memory format. The decoded weights are held in one layout, contiguous by default
    (what the training form computes) and channels-last once the model is moved to it (as
    ``freeze`` does, so that channels-last activations need no weight reorder per call); an
    input in the other layout gets the weights converted for that call. torch then picks the
    same algorithm as for the training form's weights on that input.
    """

    onnx_exportable = True  # float kernels on the decoded weights
    op_kind = "shift-add"  # what the model needs; this layer runs it as float products

    def _init_shift(self, out_features: int, k: int, method: str, bits: int, has_bias: bool,
                    has_scale: bool, activation_bits: int | None) -> None:
        from ..quantizers.shift import PARAMETRIZATIONS

        self.out_features, self.k, self.method, self.weight_bits = out_features, k, method, bits
        values = PARAMETRIZATIONS[method].value_set(bits)
        self.register_buffer("codes", torch.zeros(out_features, k, dtype=torch.uint8))
        self.register_buffer("bias", torch.zeros(out_features) if has_bias else None)
        # a folded BatchNorm's per-channel factor
        self.register_buffer("scale", torch.ones(out_features) if has_scale else None)
        self.register_buffer("table", torch.tensor(values, dtype=torch.float32),
                             persistent=False)
        self.register_buffer("weight", None, persistent=False)
        self.input_quantizer = (ActivationQuantizer(activation_bits)
                                if activation_bits is not None else None)

    def _fill_from(self, layer: ShiftLinear | ShiftConv2d) -> None:
        """Codes and bias of a training layer, and its activation quantizer's clipping level."""
        with torch.no_grad():
            if self.input_quantizer is not None:
                self.input_quantizer.load_state_dict(layer.input_quantizer.state_dict())
            self.encode(layer.hard_weight())
            if layer.bias is not None:
                self.bias.copy_(layer.bias.detach())

    @staticmethod
    def _options(layer: ShiftLinear | ShiftConv2d) -> dict[str, Any]:
        quantizer = layer.input_quantizer
        return dict(method=layer.method, bits=layer.weight_bits, bias=layer.bias is not None,
                    activation_bits=quantizer.bits if quantizer is not None else None)

    def _config(self) -> dict[str, Any]:
        return dict(method=self.method, bits=self.weight_bits, bias=self.bias is not None,
                    has_scale=self.scale is not None, activation_bits=(
                        self.input_quantizer.bits if self.input_quantizer is not None else None))

    def encode_tensor(self, name: str, value: Tensor) -> Tensor:
        """``codes`` is written as a stream of ``bits`` bits per weight."""
        return to_bitstream(value, self.weight_bits) if name == "codes" else value

    def decode_tensor(self, name: str, stored: Tensor) -> Tensor:
        if name != "codes":
            return stored
        codes = from_bitstream(stored, (self.out_features, self.k), self.weight_bits)
        if int(codes.max()) >= len(self.table):
            raise ValueError(f"holds codes beyond the {len(self.table)} values of "
                             f"{self.method} {self.weight_bits}-bit")
        return codes

    @property
    def input_bits(self) -> int:  # type: ignore[override]
        return self.input_quantizer.bits if self.input_quantizer is not None else 32

    def encode(self, weight: Tensor) -> None:
        """Store ``weight`` (values of the method's value set) as codes."""
        flat = weight.detach().reshape(self.out_features, -1).to(torch.float32)
        index = torch.searchsorted(self.table, flat).clamp(max=len(self.table) - 1)
        if not torch.equal(self.table[index], flat):
            bad = flat[self.table[index] != flat][:5].tolist()
            raise ValueError(f"weights {bad} are not in the {self.method} {self.weight_bits}-bit "
                             f"value set {self.table.tolist()}")
        self.codes.copy_(index.to(torch.uint8))
        self.prepare()

    def prepare(self) -> None:
        """Decode the codes into the float weights the forward pass uses (after encoding or
        loading), keeping the memory format the weights were given (``model.to(memory_format=
        ...)`` converts them as any buffer)."""
        weight = self.table[self.codes.long()].view(self._weight_shape())
        if self.scale is not None:
            weight = weight * self.scale.view(-1, *[1] * (weight.dim() - 1))
        if self.weight is not None and _channels_last(self.weight):
            weight = weight.contiguous(memory_format=torch.channels_last)
        self.weight = weight

    def discrete_weight(self) -> Tensor:
        return self.table[self.codes.long()].view(self._weight_shape())

    def _weight_shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    def edgecompress_params(self) -> dict[int, int]:
        floats = sum(t.numel() for t in (self.bias, self.scale) if t is not None) + sum(
            p.numel() for p in self.parameters())
        n = self.out_features * self.k
        return {self.weight_bits: n, 32: floats} if floats else {self.weight_bits: n}

    def _input(self, x: Tensor) -> Tensor:
        return x if self.input_quantizer is None else self.input_quantizer(x)


@register_packed(ShiftLinear)
class PackedShiftLinear(PackedLinearShape, LowBitLinear, _PackedShift):
    def __init__(self, in_features: int, out_features: int, *, method: str, bits: int,
                 bias: bool = True, has_scale: bool = False,
                 activation_bits: int | None = None) -> None:
        super().__init__()
        self.in_features = in_features
        self._init_lowbit()
        self._init_shift(out_features, in_features, method, bits, bias, has_scale,
                         activation_bits)

    def prepare(self) -> None:
        """The decoded float weights, and the low-bit kernel's panels of the codes."""
        super().prepare()
        self._prepare_lowbit(self.codes, self.weight_bits, self.table)


@register_packed(ShiftConv2d)
class PackedShiftConv2d(PackedConv2dShape, _PackedShift):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int],
                 stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int],
                 groups: int, *, method: str, bits: int, bias: bool = True,
                 has_scale: bool = False, activation_bits: int | None = None) -> None:
        super().__init__()
        k = self._set_shape(in_channels, out_channels, kernel_size, stride, padding, dilation,
                            groups)
        self._init_shift(out_channels, k, method, bits, bias, has_scale, activation_bits)

    def forward(self, x: Tensor) -> Tensor:
        x = self._input(x)
        return F.conv2d(x, _weight_in_layout_of(self.weight, x), self.bias, self.stride,
                        self.padding, self.dilation, self.groups)
