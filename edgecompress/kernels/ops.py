"""The binary GEMM as a PyTorch custom operator (``torch.ops.edgecompress.binary_gemm``), so
frozen models are ordinary nn.Modules that torch.compile and torch.export see as one opaque op."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import binary_gemm as _binary_gemm


@torch.library.custom_op("edgecompress::binary_gemm", mutates_args=())
def binary_gemm_op(a: Tensor, panels: Tensor, n: int, k: int, mask: Optional[Tensor]) -> Tensor:
    """int32 (M, n): dot products of packed +-1 rows ``a`` with the ``n`` weight rows in
    ``panels`` (see :func:`edgecompress.kernels.pack_panels`), over ``mask``-valid positions."""
    kw = a.shape[1]
    rows = panels.transpose(1, 2).reshape(-1, kw)[:n].contiguous()
    return _binary_gemm(a, rows, k, mask, panels=panels)


@binary_gemm_op.register_fake
def _(a: Tensor, panels: Tensor, n: int, k: int, mask: Optional[Tensor]) -> Tensor:
    return a.new_empty((a.shape[0], n), dtype=torch.int32)
