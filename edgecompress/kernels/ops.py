"""The binary kernels as PyTorch custom operators (``torch.ops.edgecompress.binary_gemm_affine``
for W1A1, ``torch.ops.edgecompress.w1a32_gemm`` for W1A32), so frozen models are ordinary
nn.Modules that torch.compile and torch.export see as opaque ops."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import binary_gemm_affine as _binary_gemm_affine
from . import binary_gemm_signs as _binary_gemm_signs
from . import w1a32_gemm as _w1a32_gemm


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
