"""Packed binary layers: ``PackedBinaryLinear`` / ``PackedBinaryConv2d``, the inference form
of :class:`~edgecompress.layers.BinaryLinear` / ``BinaryConv2d``.

They hold the signs of the trained latent weights as packed words (1 bit per weight), an
optional per-output-channel scale and the bias. In W1A1 mode the input is binarized with sign
(what the training-form layer's input quantizer deploys) and the product runs as an
XOR-popcount GEMM; in W1A32 mode a linear layer at small batch runs the sign-select kernel (adds
of the inputs whose weight is -1, 1 bit per weight read), and larger batches and convolutions
multiply the float input by the +-1 weights in torch (unpacked once, on first use). Convolution
packs the channels of every input pixel into words and runs the GEMM as an implicit GEMM that
reads each output pixel's window from those packed pixels (or, switched off, on im2col rows
gathered first); the zero padding is masked, so it is exact. The per-channel scale and bias
(BatchNorm folded in) are applied in the GEMM's store loop; in eager inference a W1A1
convolution runs packing, window gathering and GEMM as one planned C call per input shape
(:class:`~edgecompress.kernels.BinaryConvPlan`, the same kernels, so the same bits; under
torch.compile and while a profile times its steps, one call each). A binary convolution returns
its output in channels-last memory layout (what the GEMM produces), which is also the layout
the next binary convolution packs fastest. The file holds the weights as a 1-bit stream (``ceil(n k / 8)``
bytes; rows are re-padded to 64-bit words on load).

W1A1 layers (ungrouped) offer freeze's fusions: they read and emit packed signs
(``signs_layout``: "rows" for linear, "pixels" for convolution) and compute
``act(y + residual)`` in the GEMM's store loop (``fuses_residual``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import kernels
from ..kernels.ops import (binary_conv_op, binary_gemm_affine_op, im2col_words_op, pack_pixels_op,
                           pack_signs_op, w1a32_gemm_op)
from ..layers import BinaryConv2d, BinaryLinear
from .packed import (PackedConv2dShape, PackedLayer, PackedLinearShape, from_bitstream,
                     register_packed, to_bitstream)
from .profile import GEMM, IM2COL, PACK, profiling, timed


# Eager calls go straight to the kernels (timed as their step while a profile is recorded);
# under torch.compile / export through the registered custom ops (which Dynamo treats as
# opaque, so a frozen model compiles as one graph).

def _pack_signs(x: Tensor, offset: Tensor | None = None) -> Tensor:
    if torch.compiler.is_compiling():
        return pack_signs_op(x, offset)
    return timed(PACK, kernels.pack_signs, x, offset)


def _pack_pixels(x: Tensor) -> Tensor:
    if torch.compiler.is_compiling():
        return pack_pixels_op(x)
    return timed(PACK, kernels.pack_pixels, x)


def _im2col_words(pixels: Tensor, channels: int, kernel: tuple[int, int],
                  stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int],
                  masked: bool) -> tuple[Tensor, Tensor | None]:
    if not torch.compiler.is_compiling():
        return timed(IM2COL, kernels.im2col_words, pixels, channels, kernel, stride, padding,
                     dilation, masked)
    rows, mask = im2col_words_op(pixels, channels, list(kernel), list(stride), list(padding),
                                 list(dilation), masked)
    return rows, mask if masked else None


def _gemm(a: Tensor, b: Tensor, panels: Tensor, k: int, mask: Tensor | None,
          scale: Tensor | None, bias: Tensor | None, signs: bool = False,
          residual: Tensor | None = None, clamp: tuple[float, float] | None = None) -> Tensor:
    """The W1A1 GEMM with its epilogue: affine values (plus residual, clamped) or, with
    ``signs``, their packed signs."""
    if torch.compiler.is_compiling():
        lo, hi = clamp if clamp is not None else (None, None)
        return binary_gemm_affine_op(a, b, panels, k, mask, scale, bias, signs, residual, lo, hi)
    if signs:
        return timed(GEMM, kernels.binary_gemm_signs, a, b, k, mask, scale, bias, panels=panels)
    return timed(GEMM, kernels.binary_gemm_affine, a, b, k, mask, scale, bias, residual=residual,
                 clamp=clamp, panels=panels)


def _binary_conv(pixels: Tensor, channels: int, b: Tensor, panels: Tensor,
                 geometry: tuple[tuple[int, int], ...], scale: Tensor | None,
                 bias: Tensor | None, signs: bool, residual: Tensor | None,
                 clamp: tuple[float, float] | None, tap_pop: Tensor | None = None) -> Tensor:
    """:func:`_gemm` on the im2col rows of packed pixels, as an implicit GEMM (geometry: kernel,
    stride, padding, dilation; tap_pop: the weights' kernels.conv_tap_popcounts, or None)."""
    if torch.compiler.is_compiling():
        lo, hi = clamp if clamp is not None else (None, None)
        return binary_conv_op(pixels, channels, b, panels, *(list(g) for g in geometry), scale,
                              bias, signs, residual, lo, hi)
    return timed(GEMM, kernels.binary_conv, pixels, channels, b, *geometry,
                 output="signs" if signs else "float32", scale=scale, bias=bias,
                 residual=residual, clamp=clamp, panels=panels, tap_pop=tap_pop)


class _PackedBinary(PackedLayer):
    """Shared state: packed weight rows (N, W) and, derived from them, the GEMM panels."""

    weight_bits = 1

    def _init_packed(self, out_features: int, k: int, binary_inputs: bool, has_scale: bool,
                     has_bias: bool, emit_signs: bool,
                     fused_clamp: tuple[float, float] | None) -> None:
        self.out_features, self.k, self.binary_inputs = out_features, k, binary_inputs
        self.register_buffer("bits", torch.zeros(out_features, kernels.words(k), dtype=torch.int64))
        self.register_buffer("scale", torch.ones(out_features) if has_scale else None)
        self.register_buffer("bias", torch.zeros(out_features) if has_bias else None)
        self.register_buffer("rows", None, persistent=False)
        self.register_buffer("panels", None, persistent=False)
        self.register_buffer("dense", None, persistent=False)
        self.register_buffer("sign_panels", None, persistent=False)
        #: set by freeze when only the sign of this layer's output is used (by the next binary
        #: layer): forward then returns those signs packed (int64 words) instead of floats
        self.emit_signs = emit_signs
        #: set by freeze when a residual addition and/or a hardtanh / ReLU that follow this
        #: layer are computed in the GEMM's store loop: (lo, hi) of the clamp, or None
        self.fused_clamp = None if fused_clamp is None else tuple(fused_clamp)

    @property
    def input_bits(self) -> int:  # type: ignore[override]
        return 1 if self.binary_inputs else 32

    @property
    def _w1a1_ungrouped(self) -> bool:
        return self.binary_inputs and getattr(self, "groups", 1) == 1

    @property
    def fuses_residual(self) -> bool:
        return self._w1a1_ungrouped

    def _fill_from(self, layer: BinaryLinear | BinaryConv2d) -> None:
        """Signs, scale and bias of a hardened training layer."""
        scale = layer._scale()
        with torch.no_grad():
            self.bits.copy_(kernels.pack_signs(layer.weight.detach().reshape(
                layer.weight.shape[0], -1)))
            if scale is not None:
                self.scale.copy_(scale.detach().reshape(-1))
            if layer.bias is not None:
                self.bias.copy_(layer.bias.detach())
        self.prepare()

    @staticmethod
    def _options(layer: BinaryLinear | BinaryConv2d) -> dict[str, Any]:
        return dict(binary_inputs=layer.input_quantizer is not None,
                    has_scale=layer._scale() is not None, bias=layer.bias is not None)

    def _config(self) -> dict[str, Any]:
        return dict(binary_inputs=self.binary_inputs, has_scale=self.scale is not None,
                    bias=self.bias is not None, emit_signs=self.emit_signs,
                    fused_clamp=self.fused_clamp)

    def encode_tensor(self, name: str, value: Tensor) -> Tensor:
        """``bits`` is written as a 1-bit stream (1 = a -1 weight), ``ceil(n k / 8)`` bytes."""
        if name != "bits":
            return value
        return to_bitstream(kernels.unpack_signs_reference(value, self.k) < 0, 1)

    def decode_tensor(self, name: str, stored: Tensor) -> Tensor:
        if name != "bits":
            return stored
        negative = from_bitstream(stored, (self.out_features, self.k), 1)
        return kernels.pack_signs(1.0 - 2.0 * negative.to(torch.float32))

    def _kernel_bits(self) -> Tensor:
        """Weight rows in the layout the GEMM multiplies (the stored ``bits`` by default)."""
        return self.bits

    def prepare(self) -> None:
        """Derive what the forward pass needs from ``bits`` (after freezing or loading)."""
        if self.binary_inputs:
            self.rows = self._kernel_bits()
            groups = getattr(self, "groups", 1)
            if groups == 1:
                self.panels = kernels.pack_panels(self.rows)
            else:  # one GEMM per group: (groups, panels, words, 16)
                self.panels = torch.stack([kernels.pack_panels(r)
                                           for r in self.rows.chunk(groups)])
            return
        self.dense = None
        if isinstance(self, PackedBinaryLinear):  # dense made on first use (large batches)
            self.sign_panels = kernels.sign_panels(self.bits, self.k)
        else:
            self._dense()

    def _dense(self) -> Tensor:
        """The +-1 weights as float32 (out_features, k), for the float-GEMM path."""
        if self.dense is None:
            signs = kernels.unpack_signs_reference(self.bits, self.k).to(torch.float32)
            self.dense = signs.view(self.out_features, -1)
        return self.dense

    def discrete_weight(self) -> Tensor:
        return kernels.unpack_signs_reference(self.bits, self.k).to(torch.float32)

    def _binary_gemm(self, rows: Tensor, mask: Tensor | None, residual: Tensor | None = None,
                     fused: bool = True) -> Tensor:
        """The W1A1 GEMM with this layer's epilogue (scale, bias, residual, clamp or signs;
        ``fused=False`` leaves out the clamp)."""
        return _gemm(rows, self.rows, self.panels, self.k, mask, self.scale, self.bias,
                     self.emit_signs, residual, self.fused_clamp if fused else None)

    def _unfused_epilogue(self, y: Tensor, residual: Tensor) -> Tensor:
        """The residual and clamp in torch, for a residual that does not have the output's
        shape (broadcasting): the same operations, in the same order."""
        y = y + residual
        return y if self.fused_clamp is None else y.clamp(*self.fused_clamp)

    def _affine(self, y: Tensor, channel_dim: int) -> Tensor:
        shape = [1] * y.dim()
        shape[channel_dim] = -1
        if self.scale is not None:
            y = y * self.scale.view(shape)
        if self.bias is not None:
            y = y + self.bias.view(shape)
        return y

    def edgecompress_params(self) -> dict[int, int]:
        floats = sum(t.numel() for t in (self.scale, self.bias) if t is not None)
        return {1: self.out_features * self.k, 32: floats} if floats else {
            1: self.out_features * self.k}


@register_packed(BinaryLinear)
class PackedBinaryLinear(PackedLinearShape, _PackedBinary):
    #: W1A32 inputs with at most this many rows use the sign-select kernel (which reads 1 bit
    #: per weight and wins where a float GEMM is bound by reading its weights); larger batches
    #: use torch's float GEMM on the +-1 weights. Both compute the same sums; float rounding
    #: differs between them in the last bits.
    W1A32_KERNEL_MAX_ROWS = 16

    def __init__(self, in_features: int, out_features: int, *, binary_inputs: bool,
                 has_scale: bool = False, bias: bool = True, emit_signs: bool = False,
                 fused_clamp: tuple[float, float] | None = None) -> None:
        super().__init__()
        self.in_features = in_features
        self._init_packed(out_features, in_features, binary_inputs, has_scale, bias,
                          emit_signs, fused_clamp)

    @property
    def signs_layout(self) -> str | None:
        return "rows" if self.binary_inputs else None

    def _input_offset(self) -> Tensor | None:
        """Added to a W1A1 layer's float input before its signs are taken (None: plain sign)."""
        return None

    def forward(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        """x: float (..., in_features), or for a W1A1 layer its packed signs
        (..., ceil(in_features / 64)) int64 from a previous layer's ``emit_signs``; residual
        (W1A1, set up by freeze): added to the output in the GEMM's epilogue."""
        lead = x.shape[:-1]
        if not self.binary_inputs:
            flat = x.reshape(-1, self.in_features)
            if flat.shape[0] <= self.W1A32_KERNEL_MAX_ROWS and kernels.available():
                gemm = w1a32_gemm_op if torch.compiler.is_compiling() else kernels.w1a32_gemm
                y = gemm(flat, self.sign_panels, self.out_features, self.scale,
                         self.bias).to(x.dtype)
            else:
                y = self._affine(flat @ self._dense().t(), -1)
            return y.reshape(*lead, self.out_features)
        if x.dtype == torch.int64:
            packed = x.reshape(-1, kernels.words(self.in_features))
        else:
            packed = _pack_signs(x.reshape(-1, self.in_features), self._input_offset())
        if residual is not None and tuple(residual.shape) != (*lead, self.out_features):
            y = self._binary_gemm(packed, None, fused=False).reshape(*lead, self.out_features)
            return self._unfused_epilogue(y, residual)
        if residual is not None:
            residual = residual.reshape(-1, self.out_features)
        y = self._binary_gemm(packed, None, residual)
        if self.emit_signs:
            return y.reshape(*lead, y.shape[-1])
        return y.to(x.dtype if x.is_floating_point() else torch.float32).reshape(
            *lead, self.out_features)


@register_packed(BinaryConv2d)
class PackedBinaryConv2d(PackedConv2dShape, _PackedBinary):
    #: W1A1: True (default) runs the GEMM as an implicit GEMM on the packed pixels
    #: (kernels.binary_conv), which writes no im2col rows; False gathers im2col rows first. Both
    #: give the same outputs bit for bit. On AVX-512 the implicit GEMM measured 1.0-1.5x faster
    #: per layer at ResNet-18's shapes (batch 1 and 8, one thread); on AVX2 (AMD Zen 1) the
    #: whole frozen ResNet-18 1-3 % faster with it, once its border rows dropped their masks row
    #: by row (before, 0.8-1.0x per layer). A 1x1 stride-1 convolution without padding has no
    #: rows to gather (they are its pixels) and always runs the plain GEMM.
    implicit_gemm: bool = True
    process_local = ("_plans",)  # the W1A1 calls' plans, per input

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int],
                 stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int],
                 groups: int, *, binary_inputs: bool, has_scale: bool = False,
                 bias: bool = True, emit_signs: bool = False,
                 fused_clamp: tuple[float, float] | None = None) -> None:
        super().__init__()
        k = self._set_shape(in_channels, out_channels, kernel_size, stride, padding, dilation,
                            groups)
        self._init_packed(out_channels, k, binary_inputs, has_scale, bias, emit_signs,
                          fused_clamp)

    @property
    def signs_layout(self) -> str | None:
        return "pixels" if self._w1a1_ungrouped else None

    def _kernel_bits(self) -> Tensor:
        """The stored rows are in (channel, kernel row, kernel column) order; the convolution
        kernels want (kernel row, kernel column, channel) with channels padded per pixel."""
        signs = self.discrete_weight().view(self.out_features, self.in_channels // self.groups,
                                            *self.kernel_size)
        return kernels.pack_conv_weights(signs)

    def prepare(self) -> None:
        super().prepare()
        self._plans: dict[tuple[torch.Size, torch.dtype], kernels.BinaryConvPlan] = {}
        # the padding correction's weight popcounts for the calls made one by one (a plan
        # finds its own)
        self._tap_pop = kernels.conv_tap_popcounts(
            self.panels, self.out_features, self.kernel_size, self.in_channels) \
            if self._w1a1_ungrouped and self.padding != (0, 0) else None

    def _implicit(self) -> bool:
        """Whether the W1A1 GEMM runs as an implicit GEMM (see :attr:`implicit_gemm`)."""
        # (None, the default before implicit GEMMs ran on every CPU, still means it)
        return self.implicit_gemm is not False and (
            self.kernel_size, self.stride, self.padding) != ((1, 1), (1, 1), (0, 0))

    def _plan(self, x: Tensor) -> kernels.BinaryConvPlan | None:
        """The W1A1 call's plan for this input (made at the first call with its shape, dtype
        and layout: packing, window gathering and GEMM in one C call), or None where the calls
        run one by one: under torch.compile / export and while a profile times them, without
        the C library, for an input the plan does not take (another dtype or layout)."""
        if kernels.recording() or profiling():
            return None
        plan = self._plans.get((x.shape, x.dtype))
        buffers = self._buffers  # (self.panels would go through nn.Module.__getattr__)
        if plan is not None and plan.takes(x) and plan.sources[1] is buffers["panels"] \
                and plan.sources[2] is buffers["scale"] and plan.sources[3] is buffers["bias"] \
                and plan.implicit == self._implicit():
            return plan
        if not kernels.available() or x.dtype not in (torch.int64, torch.float32):
            return None
        try:
            plan = kernels.BinaryConvPlan(
                x, self.in_channels, self.rows, self.panels, self.kernel_size, self.stride,
                self.padding, self.dilation, implicit=self._implicit(),
                output="signs" if self.emit_signs else "float32", scale=self.scale,
                bias=self.bias, clamp=self.fused_clamp)
        except ValueError:  # an input it does not take (e.g. a float input of another layout)
            return None
        self._plans[(x.shape, x.dtype)] = plan
        return plan

    def _grouped(self, x: Tensor) -> Tensor:
        """W1A1 with groups > 1: one packed GEMM per group of channels (freeze does not fuse
        these layers with their neighbours)."""
        if x.dtype == torch.int64:
            raise ValueError("a grouped packed convolution takes float inputs")
        cin = self.in_channels // self.groups
        outputs = [self._conv_gemm(_pack_pixels(x[:, g * cin:(g + 1) * cin]), group=g)
                   for g in range(self.groups)]
        b, _, h, w = x.shape
        oh, ow = (kernels.conv_output_size(size, *geometry) for size, geometry in
                  zip((h, w), zip(self.kernel_size, self.stride, self.padding, self.dilation)))
        y = torch.cat(outputs, dim=1).view(b, oh, ow, self.out_features).permute(0, 3, 1, 2)
        return y.to(x.dtype)

    def _conv_gemm(self, pixels: Tensor, residual: Tensor | None = None, fused: bool = True,
                   group: int | None = None) -> Tensor:
        """The W1A1 GEMM with this layer's epilogue (as :meth:`_binary_gemm`) on packed pixels,
        of one group's channels when ``group`` is given: an implicit GEMM, or on im2col rows."""
        channels, b, panels, scale, bias = (self.in_channels, self.rows, self.panels, self.scale,
                                            self.bias)
        if group is not None:
            channels, n_out = self.in_channels // self.groups, self.out_features // self.groups
            part = slice(group * n_out, (group + 1) * n_out)
            b, panels = b[part], panels[group]
            scale, bias = (None if t is None else t[part] for t in (scale, bias))
        clamp = self.fused_clamp if fused else None
        geometry = (self.kernel_size, self.stride, self.padding, self.dilation)
        if self._implicit():
            return _binary_conv(pixels, channels, b, panels, geometry, scale, bias,
                                self.emit_signs, residual, clamp,
                                self._tap_pop if group is None else None)
        rows, mask = _im2col_words(pixels, channels, *geometry, masked=self.padding != (0, 0))
        return _gemm(rows, b, panels, self.k, mask, scale, bias, self.emit_signs, residual, clamp)

    def forward(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        """x: float (n, c, h, w), or for a W1A1 layer packed pixels (n, h, w, ceil(c / 64))
        int64 from a previous convolution's ``emit_signs``; residual (W1A1, set up by freeze):
        a tensor of the output's shape added in the GEMM's epilogue."""
        if not self.binary_inputs:
            weight = self._dense().view(self.out_features, self.in_channels // self.groups,
                                        *self.kernel_size)
            y = F.conv2d(x, weight, None, self.stride, self.padding, self.dilation, self.groups)
            return self._affine(y, 1)
        if self.groups != 1:
            return self._grouped(x)
        # the common case (an input seen before, a residual of the output's shape) in the
        # fewest calls: at batch 1 this overhead is paid by each binary layer of a network
        plan = self._plan(x)
        if plan is not None and (residual is None or residual.shape == plan.image_shape):
            return plan.image(x, residual)
        if x.dtype == torch.int64:
            b, h, w, _ = x.shape
        else:
            if x.shape[1] != self.in_channels:
                raise ValueError(f"expected {self.in_channels} input channels, got shape "
                                 f"{tuple(x.shape)}")
            b, _, h, w = x.shape
        oh, ow = (kernels.conv_output_size(size, *geometry) for size, geometry in
                  zip((h, w), zip(self.kernel_size, self.stride, self.padding, self.dilation)))
        if residual is not None and tuple(residual.shape) != (b, self.out_features, oh, ow):
            y = self._conv_gemm(x if x.dtype == torch.int64 else _pack_pixels(x), fused=False)
            y = y.view(b, oh, ow, self.out_features).permute(0, 3, 1, 2)
            return self._unfused_epilogue(y, residual)
        if residual is not None:  # (n, C, oh, ow) -> the GEMM's (pixel, channel) rows
            residual = residual.permute(0, 2, 3, 1).reshape(-1, self.out_features)
        y = self._conv_gemm(x if x.dtype == torch.int64 else _pack_pixels(x), residual)
        if self.emit_signs:
            return y.view(b, oh, ow, -1)
        # the GEMM's (pixel, channel) rows are the output in channels-last layout: no copy
        y = y.view(b, oh, ow, self.out_features).permute(0, 3, 1, 2)
        return y.to(x.dtype) if x.is_floating_point() else y

    def edgecompress_macs(self, inputs, output) -> dict[str, int]:
        pixels = output.shape[1] * output.shape[2] if output.dtype == torch.int64 \
            else output.shape[2] * output.shape[3]
        return {f"w1a{self.input_bits}": pixels * self.out_features * self.k}
