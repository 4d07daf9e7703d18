"""Tensor-train layers (Murua et al. 2020, arXiv 2006.05442): :class:`TTLinear` in MPS or MPO
form and :class:`TTLSTM`; :mod:`.layout` holds the format itself (shapes, rank bounds, TT-SVD,
contraction orders) and its analytic cost model, :func:`tt_params` and :func:`tt_flops`."""

from .layout import LAYOUTS, auto_factorization, tt_flops, tt_params
from .linear import TTLinear
from .lstm import TTLSTM

__all__ = ["TTLinear", "TTLSTM", "tt_params", "tt_flops", "auto_factorization", "LAYOUTS"]
