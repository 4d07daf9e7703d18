"""The binary GEMM as a PyTorch custom operator (``torch.ops.edgecompress.binary_gemm``), so
frozen models are ordinary nn.Modules that torch.compile and torch.export see as one opaque op."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import binary_gemm as _binary_gemm


@torch.library.custom_op("edgecompress::binary_gemm", mutates_args=())
def binary_gemm_op(a: Tensor, b: Tensor, panels: Tensor, k: int, mask: Optional[Tensor]) -> Tensor:
    """int32 (M, N): dot products of packed +-1 rows ``a`` with the weight rows ``b`` (whose
    GEMM layout is ``panels = pack_panels(b)``), over ``mask``-valid positions."""
    return _binary_gemm(a, b, k, mask, panels=panels)


@binary_gemm_op.register_fake
def _(a: Tensor, b: Tensor, panels: Tensor, k: int, mask: Optional[Tensor]) -> Tensor:
    return a.new_empty((a.shape[0], b.shape[0]), dtype=torch.int32)
