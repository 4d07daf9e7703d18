"""Packed uniform n-bit layers: the inference form of :mod:`edgecompress.layers.uniform`
(``PackedUniformLinear`` / ``PackedUniformConv2d``, the quantized EuclidNet's
``PackedUniformEuclidLinear`` / ``PackedUniformEuclidConv2d`` and the quantized AdderNet's
``PackedUniformAdderLinear`` / ``PackedUniformAdderConv2d``).

The layer holds every weight as its signed b-bit integer code (int8 in memory; in the file a
stream of b bits per weight, the code offset by 2^(b-1) to be non-negative, so an 8-bit layer
writes one byte per weight and a 4-bit one half a byte), one float step per output channel and,
for quantized inputs, the input step. The codes are decoded once (on freezing or loading) into
the float weights code * step, and the forward pass runs torch's float kernels on them and on
the fake-quantized input. Both are computed with the very expressions of the training form, so
a frozen layer gives exactly (torch.equal) the training form's eval-mode output for the same
input. The exceptions, equal to the float path to float rounding, their inputs quantized
exactly as before: a linear layer of 2-4-bit codes runs the low-bit kernel at batch <= 16
(:mod:`.lowbit`: table = the integer code values, the codes offset by 2^(b-1), scale = the
per-channel step applied after the sum over k; 4 bits read per weight); a convolution with
quantized inputs runs the integer kernel on CPUs with AVX-512 VNNI
(:class:`PackedUniformConv2d`'s ``integer_kernel``: exact int32 sums of the codes, then one
scale per channel).

A BatchNorm that follows a product layer is folded by ``freeze`` into the per-channel weight
step and the bias (the codes stay; float rounding reorders, so close, not equal); one that
follows a Euclid layer is kept (its output is not linear in its weights), and the Euclid layer
computes ||w_j||^2 of its decoded weights once. An adder layer keeps its BatchNorm too and
runs the frozen float adder layer's forward (:mod:`.distance`: the direct L1 C kernel where it
takes the geometry) on the decoded weights and the fake-quantized input: the same numbers as the
training form's eval-mode output up to float rounding (the kernel adds the bias inside, a linear
layer sums in another order than the training form's cdist), exactly for a bias-free
convolution.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import kernels
from ..kernels import exporting
from ..kernels.ops import int8_conv_op
from ..layers.euclid import euclid_linear
from ..layers.uniform import (UniformAdderConv2d, UniformAdderLinear, UniformConv2d,
                              UniformEuclidConv2d, UniformEuclidLinear, UniformLinear)
from ..quantizers.uniform import check_bits, code_range, fake_quantize
from .distance import (EuclidConvShift, PackedAdderConvForward, PackedAdderLinearForward,
                       PackedEuclid)
from .lowbit import LowBitLinear
from .packed import (PackedConv2dShape, PackedLayer, PackedLinearShape, from_bitstream,
                     register_packed, to_bitstream)


class _PackedUniform(PackedLayer):
    """Shared state: ``codes`` (int8, out x k), ``scale`` (the weight step per output channel),
    ``bias``, ``input_step`` (when the inputs are quantized) and the decoded ``weight``."""

    onnx_exportable = True  # float kernels on the decoded weights

    def _init_uniform(self, out_features: int, k: int, bits: int, has_bias: bool,
                      activation_bits: int | None, activation_signed: bool) -> None:
        self.out_features, self.k = out_features, k
        self.weight_bits = check_bits(bits)
        self.activation_bits = (None if activation_bits is None
                                else check_bits(activation_bits, "activation_bits"))
        self.activation_signed = activation_signed
        self.register_buffer("codes", torch.zeros(out_features, k, dtype=torch.int8))
        self.register_buffer("scale", torch.ones(out_features))
        self.register_buffer("bias", torch.zeros(out_features) if has_bias else None)
        self.register_buffer("input_step",
                             torch.ones(()) if activation_bits is not None else None)
        self.register_buffer("weight", None, persistent=False)

    @staticmethod
    def _options(layer: UniformLinear) -> dict[str, Any]:
        quantizer = layer.input_quantizer
        if quantizer is not None and not bool(quantizer.initialized):
            raise ValueError(f"{type(layer).__name__}: its input quantizer's step was never set "
                             f"(train the model, or run edgecompress.quantizers.calibrate on "
                             f"it) before freezing")
        if getattr(layer, "padding_mode", "zeros") != "zeros":
            raise ValueError(f"{type(layer).__name__}: padding_mode={layer.padding_mode!r} "
                             f"cannot be frozen; only 'zeros'")
        return dict(bits=layer.weight_bits, bias=layer.bias is not None,
                    activation_bits=quantizer.bits if quantizer is not None else None,
                    activation_signed=quantizer.signed if quantizer is not None else False)

    def _config(self) -> dict[str, Any]:
        return dict(bits=self.weight_bits, bias=self.bias is not None,
                    activation_bits=self.activation_bits,
                    activation_signed=self.activation_signed)

    def _fill_from(self, layer: UniformLinear) -> None:
        with torch.no_grad():
            codes, step = layer.weight_quantizer.codes(layer.weight)
            self.codes.copy_(codes.reshape(self.out_features, -1))
            self.scale.copy_(step)
            if layer.bias is not None:
                self.bias.copy_(layer.bias.detach())
            if self.input_step is not None:
                self.input_step.copy_(layer.input_quantizer.step.detach())
        self.prepare()

    def encode_tensor(self, name: str, value: Tensor) -> Tensor:
        """``codes`` is written as a stream of ``bits`` bits per weight (offset binary)."""
        if name != "codes":
            return value
        return to_bitstream((value.to(torch.int16) + 2 ** (self.weight_bits - 1)),
                            self.weight_bits)

    def decode_tensor(self, name: str, stored: Tensor) -> Tensor:
        if name != "codes":
            return stored
        offset = from_bitstream(stored, (self.out_features, self.k), self.weight_bits)
        return (offset.to(torch.int16) - 2 ** (self.weight_bits - 1)).to(torch.int8)

    @property
    def input_bits(self) -> int:  # type: ignore[override]
        return self.activation_bits if self.activation_bits is not None else 32

    def prepare(self) -> None:
        """Decode the codes into the float weights code * step."""
        shape = self._weight_shape()
        step = self.scale.view(-1, *[1] * (len(shape) - 1))
        self.weight = self.codes.to(step.dtype).view(shape) * step

    def _conv_weight(self) -> Tensor:
        """The decoded weights contiguous, as the training form holds them: torch's convolution
        of a channels-last input rounds differently with channels-last weights, and the frozen
        layer must give the training form's values exactly (freeze's ``to(channels_last)``
        makes this a copy per call)."""
        return self.weight.contiguous()

    def forward_weight(self) -> Tensor:
        """The decoded weights, contiguous (what the distance layers' forward passes read)."""
        return self._conv_weight()

    def discrete_weight(self) -> Tensor:
        return self.codes.view(self._weight_shape())

    def _weight_shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    def _input(self, x: Tensor) -> Tensor:
        if self.input_step is None:
            return x
        return fake_quantize(x, self.input_step,
                             *code_range(self.activation_bits, self.activation_signed))

    def extra_repr(self) -> str:
        return f"{self.config()}"

    def edgecompress_params(self) -> dict[int, int]:
        floats = sum(t.numel() for name, t in self.named_buffers()
                     if name not in ("codes", "weight", "panels", "lowbit_table", "int8_panels",
                                     "int8_wsum", "int8_scale"))
        return {self.weight_bits: self.out_features * self.k, 32: floats}


class _PackedUniformEuclid(PackedEuclid, _PackedUniform):
    """A Euclid layer's extras: ``theta`` and ||w_j||^2 of the decoded weights (see
    :class:`~edgecompress.deploy.distance.PackedEuclid`)."""

    def _init_uniform(self, out_features: int, k: int, bits: int, has_bias: bool,
                      activation_bits: int | None, activation_signed: bool) -> None:
        """The uniform layer's buffers, and theta's."""
        super()._init_uniform(out_features, k, bits, has_bias, activation_bits,
                              activation_signed)
        self._init_theta()

    def _fill_from(self, layer: UniformEuclidLinear) -> None:
        self._fill_theta(layer)
        super()._fill_from(layer)


@register_packed(UniformLinear)
class PackedUniformLinear(PackedLinearShape, LowBitLinear, _PackedUniform):
    def __init__(self, in_features: int, out_features: int, *, bits: int, bias: bool = True,
                 activation_bits: int | None = None, activation_signed: bool = False) -> None:
        super().__init__()
        self.in_features = in_features
        self._init_lowbit()
        self._init_uniform(out_features, in_features, bits, bias, activation_bits,
                           activation_signed)

    def prepare(self) -> None:
        """The decoded float weights, and the low-bit kernel's panels of the codes offset to be
        non-negative (code q is entry q + 2^(b-1) of the table of the integers q_min..q_max)."""
        super().prepare()
        q_min, q_max = code_range(self.weight_bits, True)
        self._prepare_lowbit(self.codes.to(torch.int16) - q_min, self.weight_bits,
                             torch.arange(q_min, q_max + 1, dtype=torch.float32))


class _PackedUniformConv2dShape(PackedConv2dShape, _PackedUniform):
    """The constructor of the uniform convolutions (plain and Euclid): geometry, then buffers."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int],
                 stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int],
                 groups: int, *, bits: int, bias: bool = True,
                 activation_bits: int | None = None, activation_signed: bool = False) -> None:
        super().__init__()
        k = self._set_shape(in_channels, out_channels, kernel_size, stride, padding, dilation,
                            groups)
        self._init_uniform(out_channels, k, bits, bias, activation_bits, activation_signed)


@register_packed(UniformConv2d)
class PackedUniformConv2d(_PackedUniformConv2dShape):
    """A frozen :class:`~edgecompress.layers.UniformConv2d`. With quantized inputs (and
    ``groups`` 1) it can run the integer kernel, :func:`~edgecompress.kernels.int8_conv`: the
    input's codes, their exact int32 sums with the weight codes, then
    ``acc * (weight step x input step) + bias`` per output channel, which equals the float path
    (torch's convolution of the decoded weights and the fake-quantized input, exactly the
    training form's output) to float rounding. ``integer_kernel`` chooses: ``"auto"`` (the
    default) where the kernel multiplies with AVX-512 VNNI
    (:func:`~edgecompress.kernels.int8_conv_vnni`; there a ResNet stem's 7x7 convolution ran
    1.9-2.5x and 3x3 ones 1.6-3x torch's float convolution on an AMD Zen 5), ``True``
    wherever the C kernels load (its AVX2 and scalar paths give the same bits, about half as
    fast as torch's float convolution), ``False`` the float path. Under torch.compile the
    kernel runs as a custom op; under export and tracing, and for inputs that need gradients,
    the float path."""

    #: "auto", True or False (see the class docstring)
    integer_kernel: bool | str = "auto"
    #: whether "auto" runs the kernel: it multiplies with VNNI on this CPU (set by prepare)
    _auto_integer: bool = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name in ("int8_panels", "int8_wsum", "int8_scale"):
            self.register_buffer(name, None, persistent=False)

    def prepare(self) -> None:
        """The decoded float weights, and (quantized inputs, groups 1, the C library loaded)
        the integer kernel's weight panels, code sums and per-channel output scale."""
        super().prepare()
        usable = (self.input_step is not None and self.groups == 1 and kernels.available()
                  and self.k <= kernels.INT8_CONV_MAX_K)
        if usable:
            self.int8_panels, self.int8_wsum = kernels.int8_conv_panels(
                self.codes.view(self._weight_shape()), self.dilation)
            self.int8_scale = (self.scale * self.input_step).to(torch.float32)
        else:
            self.int8_panels = self.int8_wsum = self.int8_scale = None
        self._auto_integer = usable and kernels.int8_conv_vnni()

    def _runs_integer(self, x: Tensor) -> bool:
        mode = self.integer_kernel
        if mode not in ("auto", True, False):
            raise ValueError(f"{type(self).__name__}.integer_kernel must be 'auto', True or "
                             f"False, got {mode!r}")
        return (self.int8_panels is not None and mode is not False
                and (mode is True or self._auto_integer)
                and x.dtype == torch.float32 and x.device.type == "cpu" and x.dim() == 4
                and x.shape[1] == self.in_channels
                and not (x.requires_grad and torch.is_grad_enabled()) and not exporting())

    def forward(self, x: Tensor) -> Tensor:
        if self._runs_integer(x):
            q_min, q_max = code_range(self.activation_bits, self.activation_signed)
            args = (x, self.int8_panels, self.int8_wsum, self.out_channels,
                    list(self.kernel_size), list(self.stride), list(self.padding),
                    list(self.dilation))
            if torch.compiler.is_compiling():
                return int8_conv_op(*args, self.input_step, q_min, q_max, self.int8_scale,
                                    self.bias)
            return kernels.int8_conv(*args, step=self.input_step, q_range=(q_min, q_max),
                                     scale=self.int8_scale, bias=self.bias)
        x = self._input(x)
        return F.conv2d(x, self._conv_weight(), self.bias, self.stride,
                        self.padding, self.dilation, self.groups)


class _PackedUniformLinearShape(PackedLinearShape, _PackedUniform):
    """The constructor of the uniform distance linears (Euclid, adder): size, then buffers."""

    def __init__(self, in_features: int, out_features: int, *, bits: int, bias: bool = True,
                 activation_bits: int | None = None, activation_signed: bool = False) -> None:
        super().__init__()
        self.in_features = in_features
        self._init_uniform(out_features, in_features, bits, bias, activation_bits,
                           activation_signed)


@register_packed(UniformEuclidLinear)
class PackedUniformEuclidLinear(_PackedUniformLinearShape, _PackedUniformEuclid):
    def forward(self, x: Tensor) -> Tensor:
        return euclid_linear(self._input(x), self.weight, None, self._theta, self._shift)


@register_packed(UniformEuclidConv2d)
class PackedUniformEuclidConv2d(EuclidConvShift, _PackedUniformConv2dShape,
                                _PackedUniformEuclid):
    def forward(self, x: Tensor) -> Tensor:
        return self._euclid_conv(self._input(x), self._conv_weight())


@register_packed(UniformAdderLinear)
class PackedUniformAdderLinear(PackedAdderLinearForward, _PackedUniformLinearShape):
    def forward(self, x: Tensor) -> Tensor:
        """The frozen adder layer's forward on the decoded weights and the quantized input."""
        return super().forward(self._input(x))


@register_packed(UniformAdderConv2d)
class PackedUniformAdderConv2d(PackedAdderConvForward, _PackedUniformConv2dShape):
    def forward(self, x: Tensor) -> Tensor:
        """The frozen adder layer's forward on the decoded weights and the quantized input."""
        return super().forward(self._input(x))
