"""The kernels as PyTorch custom operators (``torch.ops.edgecompress.binary_gemm_affine``
for W1A1 and ``binary_conv``, its implicit-GEMM convolution on packed pixels,
``torch.ops.edgecompress.w1a32_gemm`` for W1A32, ``lowbit_gemm`` for 2-4-bit weight codes, the packing of W1A1 inputs:
``pack_signs``, ``pack_pixels``, ``im2col_words``, and the float ``conv2d_direct``), so frozen models are ordinary nn.Modules
that torch.compile (fullgraph) and torch.export see as opaque ops.

Each op calls the kernel function of the same name in :mod:`.dispatch` (which runs the C kernel
or its reference) and registers a fake implementation that gives only the output's shape."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .dispatch import binary_conv as _binary_conv
from .dispatch import binary_gemm_affine as _binary_gemm_affine
from .dispatch import binary_gemm_signs as _binary_gemm_signs
from .dispatch import conv2d_direct as _conv2d_direct
from .dispatch import conv2d_direct_usable, conv2d_torch
from .dispatch import conv_output_size
from .dispatch import im2col_words as _im2col_words
from .dispatch import int8_conv as _int8_conv
from .dispatch import lowbit_gemm as _lowbit_gemm
from .dispatch import pack_pixels as _pack_pixels
from .dispatch import pack_signs as _pack_signs
from .dispatch import w1a32_gemm as _w1a32_gemm


@torch.library.custom_op("edgecompress::binary_gemm_affine", mutates_args=())
def binary_gemm_affine_op(a: Tensor, b: Tensor, panels: Tensor, k: int, mask: Optional[Tensor],
                          scale: Optional[Tensor], bias: Optional[Tensor], signs: bool = False,
                          residual: Optional[Tensor] = None, clamp_lo: Optional[float] = None,
                          clamp_hi: Optional[float] = None) -> Tensor:
    """float32 (M, N): dot products of packed +-1 rows ``a`` with the weight rows ``b`` (whose
    GEMM layout is ``panels = pack_panels(b)``) over ``mask``-valid positions, times ``scale``
    plus ``bias`` per column, plus ``residual``, clamped to [clamp_lo, clamp_hi]; with
    ``signs`` the signs of the affine values, packed: int64 (M, ceil(N / 64))."""
    if signs:
        return _binary_gemm_signs(a, b, k, mask, scale, bias, panels=panels)
    clamp = None if clamp_lo is None or clamp_hi is None else (clamp_lo, clamp_hi)
    return _binary_gemm_affine(a, b, k, mask, scale, bias, residual=residual, clamp=clamp,
                               panels=panels)


@binary_gemm_affine_op.register_fake
def _(a: Tensor, b: Tensor, panels: Tensor, k: int, mask: Optional[Tensor],
      scale: Optional[Tensor], bias: Optional[Tensor], signs: bool = False,
      residual: Optional[Tensor] = None, clamp_lo: Optional[float] = None,
      clamp_hi: Optional[float] = None) -> Tensor:
    if signs:
        return a.new_empty((a.shape[0], (b.shape[0] + 63) // 64), dtype=torch.int64)
    return a.new_empty((a.shape[0], b.shape[0]), dtype=torch.float32)


@torch.library.custom_op("edgecompress::binary_conv", mutates_args=())
def binary_conv_op(pixels: Tensor, channels: int, b: Tensor, panels: Tensor, kernel: list[int],
                   stride: list[int], padding: list[int], dilation: list[int],
                   scale: Optional[Tensor], bias: Optional[Tensor], signs: bool = False,
                   residual: Optional[Tensor] = None, clamp_lo: Optional[float] = None,
                   clamp_hi: Optional[float] = None) -> Tensor:
    """:func:`binary_gemm_affine_op` on the im2col rows of packed pixels (n, h, w, words), as
    an implicit GEMM that reads the windows from the pixels (see
    :func:`edgecompress.kernels.binary_conv`): float32 (n * oh * ow, N), or with ``signs``
    int64 (n * oh * ow, ceil(N / 64))."""
    clamp = None if clamp_lo is None or clamp_hi is None else (clamp_lo, clamp_hi)
    return _binary_conv(pixels, channels, b, tuple(kernel), tuple(stride), tuple(padding),
                        tuple(dilation), output="signs" if signs else "float32", scale=scale,
                        bias=bias, residual=residual, clamp=clamp, panels=panels)


@binary_conv_op.register_fake
def _(pixels: Tensor, channels: int, b: Tensor, panels: Tensor, kernel: list[int],
      stride: list[int], padding: list[int], dilation: list[int], scale: Optional[Tensor],
      bias: Optional[Tensor], signs: bool = False, residual: Optional[Tensor] = None,
      clamp_lo: Optional[float] = None, clamp_hi: Optional[float] = None) -> Tensor:
    n, h, w, _ = pixels.shape
    rows = n * conv_output_size(h, kernel[0], stride[0], padding[0], dilation[0]) * \
        conv_output_size(w, kernel[1], stride[1], padding[1], dilation[1])
    if signs:
        return pixels.new_empty((rows, (b.shape[0] + 63) // 64), dtype=torch.int64)
    return pixels.new_empty((rows, b.shape[0]), dtype=torch.float32)


@torch.library.custom_op("edgecompress::w1a32_gemm", mutates_args=())
def w1a32_gemm_op(x: Tensor, panels: Tensor, n: int, scale: Optional[Tensor],
                  bias: Optional[Tensor]) -> Tensor:
    """float32 (M, N): float rows ``x`` times +-1 weights given as sign panels, then
    ``* scale + bias`` (see :func:`edgecompress.kernels.w1a32_gemm`)."""
    return _w1a32_gemm(x, panels, n, scale, bias)


@w1a32_gemm_op.register_fake
def _(x: Tensor, panels: Tensor, n: int, scale: Optional[Tensor],
      bias: Optional[Tensor]) -> Tensor:
    return x.new_empty((x.shape[0], n), dtype=torch.float32)


@torch.library.custom_op("edgecompress::lowbit_gemm", mutates_args=())
def lowbit_gemm_op(x: Tensor, panels: Tensor, table: Tensor, n: int, bits: int,
                   scale: Optional[Tensor], bias: Optional[Tensor]) -> Tensor:
    """float32 (M, N): float rows ``x`` times weights ``table[codes]`` given as low-bit panels,
    then ``* scale + bias`` (see :func:`edgecompress.kernels.lowbit_gemm`)."""
    return _lowbit_gemm(x, panels, table, n, bits, scale, bias)


@lowbit_gemm_op.register_fake
def _(x: Tensor, panels: Tensor, table: Tensor, n: int, bits: int, scale: Optional[Tensor],
      bias: Optional[Tensor]) -> Tensor:
    return x.new_empty((x.shape[0], n), dtype=torch.float32)


@torch.library.custom_op("edgecompress::int8_conv", mutates_args=())
def int8_conv_op(x: Tensor, panels: Tensor, wsum: Tensor, n_out: int, kernel: list[int],
                 stride: list[int], padding: list[int], dilation: list[int], step: Tensor,
                 q_min: int, q_max: int, scale: Tensor, bias: Optional[Tensor]) -> Tensor:
    """float32 (n, n_out, oh, ow) channels-last: the integer convolution of the input's codes
    (see :func:`edgecompress.kernels.int8_conv`)."""
    return _int8_conv(x, panels, wsum, n_out, kernel, stride, padding, dilation, step=step,
                      q_range=(q_min, q_max), scale=scale, bias=bias)


@int8_conv_op.register_fake
def _(x: Tensor, panels: Tensor, wsum: Tensor, n_out: int, kernel: list[int],
      stride: list[int], padding: list[int], dilation: list[int], step: Tensor, q_min: int,
      q_max: int, scale: Tensor, bias: Optional[Tensor]) -> Tensor:
    oh, ow = (conv_output_size(size, k, s, p, d) for size, k, s, p, d in
              zip(x.shape[2:], kernel, stride, padding, dilation))
    return torch.empty((x.shape[0], n_out, oh, ow), dtype=torch.float32, device=x.device,
                       memory_format=torch.channels_last)


@torch.library.custom_op("edgecompress::pack_signs", mutates_args=())
def pack_signs_op(x: Tensor, offset: Optional[Tensor] = None) -> Tensor:
    """int64 (rows, ceil(k / 64)): the signs of float rows x (rows, k), plus ``offset`` per
    column if given, packed (see :func:`edgecompress.kernels.pack_signs`)."""
    return _pack_signs(x, offset)


@pack_signs_op.register_fake
def _(x: Tensor, offset: Optional[Tensor] = None) -> Tensor:
    return x.new_empty((x.shape[0], (x.shape[1] + 63) // 64), dtype=torch.int64)


@torch.library.custom_op("edgecompress::pack_pixels", mutates_args=())
def pack_pixels_op(x: Tensor) -> Tensor:
    """int64 (n, h, w, ceil(c / 64)): the signs of the channels of every pixel of x
    (n, c, h, w), packed (see :func:`edgecompress.kernels.pack_pixels`)."""
    return _pack_pixels(x)


@pack_pixels_op.register_fake
def _(x: Tensor) -> Tensor:
    n, c, h, w = x.shape
    return x.new_empty((n, h, w, (c + 63) // 64), dtype=torch.int64)


@torch.library.custom_op("edgecompress::im2col_words", mutates_args=())
def im2col_words_op(pixels: Tensor, channels: int, kernel: list[int], stride: list[int],
                    padding: list[int], dilation: list[int],
                    masked: bool) -> tuple[Tensor, Tensor]:
    """Packed im2col rows and their validity mask (an empty tensor when ``masked`` is False)
    from packed pixels (see :func:`edgecompress.kernels.im2col_words`)."""
    rows, mask = _im2col_words(pixels, channels, tuple(kernel), tuple(stride), tuple(padding),
                               tuple(dilation), masked)
    # a custom op's outputs may not alias its inputs (a 1x1 stride-1 view of the pixels)
    rows = rows.clone() if rows.untyped_storage().data_ptr() == \
        pixels.untyped_storage().data_ptr() else rows
    return rows, mask if mask is not None else rows.new_empty((0, rows.shape[1]))


@im2col_words_op.register_fake
def _(pixels: Tensor, channels: int, kernel: list[int], stride: list[int], padding: list[int],
      dilation: list[int], masked: bool) -> tuple[Tensor, Tensor]:
    n, h, w, cw = pixels.shape
    oh = conv_output_size(h, kernel[0], stride[0], padding[0], dilation[0])
    ow = conv_output_size(w, kernel[1], stride[1], padding[1], dilation[1])
    rows = pixels.new_empty((n * oh * ow, kernel[0] * kernel[1] * cw))
    return rows, pixels.new_empty((n * oh * ow, kernel[0] * kernel[1] * cw) if masked
                                  else (0, kernel[0] * kernel[1] * cw))


@torch.library.custom_op("edgecompress::conv2d_direct", mutates_args=())
def conv2d_direct_op(x: Tensor, weight: Tensor, bias: Optional[Tensor], stride: list[int],
                     padding: list[int], residual: Optional[Tensor] = None,
                     clamp_lo: Optional[float] = None,
                     clamp_hi: Optional[float] = None) -> Tensor:
    """float32 (n, oc, oh, ow): ``clamp(conv2d(x, weight) + bias + residual)`` by the direct
    float kernel (see :func:`edgecompress.kernels.conv2d_direct`), or torch's convolution when
    the library is missing."""
    clamp = None if clamp_lo is None or clamp_hi is None else (clamp_lo, clamp_hi)
    if not conv2d_direct_usable(x):
        return conv2d_torch(x, weight, bias, tuple(stride), tuple(padding), residual, clamp)
    return _conv2d_direct(x, weight, bias, tuple(stride), tuple(padding), residual=residual,
                          clamp=clamp)


@conv2d_direct_op.register_fake
def _(x: Tensor, weight: Tensor, bias: Optional[Tensor], stride: list[int], padding: list[int],
      residual: Optional[Tensor] = None, clamp_lo: Optional[float] = None,
      clamp_hi: Optional[float] = None) -> Tensor:
    n, _, h, w = x.shape
    oh = conv_output_size(h, weight.shape[2], stride[0], padding[0], 1)
    ow = conv_output_size(w, weight.shape[3], stride[1], padding[1], 1)
    return x.new_empty((n, weight.shape[0], oh, ow), dtype=torch.float32)
