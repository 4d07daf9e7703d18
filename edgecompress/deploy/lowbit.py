"""The low-bit weight kernel in packed linear layers whose weights are 2-4-bit codes into a
value table (shift layers: the power-of-two values; uniform layers: the integer code values,
with the per-channel step as the scale): :class:`LowBitLinear`.

At batch <= ``LOWBIT_KERNEL_MAX_ROWS`` (16) a linear layer reads its weights once per call and is
bound by memory; :func:`~edgecompress.kernels.lowbit_gemm` reads 4 bits per weight (2 at 2 bits)
instead of 32. Above that batch, and wherever the kernel cannot run (no C library, a non-float32
or non-CPU input, an input that needs a gradient, torch.export / ONNX tracing), the layer runs
torch's float linear on its decoded weights, as before. The two paths agree to float rounding,
not bit for bit: the kernel sums over k in order and applies the per-channel scale after the
sum (see ``gemm_lowbit.c``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import kernels
from ..kernels import exporting
from ..kernels.ops import lowbit_gemm_op


class LowBitLinear(nn.Module):
    """Mixin of a packed linear layer with b-bit codes: :meth:`_init_lowbit` in its
    constructor, :meth:`_prepare_lowbit` when its codes are set (freezing or loading) builds the
    kernel's weight panels, :meth:`forward` runs the kernel when it applies (the layer gives
    ``_input``, its decoded ``weight``, ``scale`` and ``bias``)."""

    #: the batch (rows) up to which the kernel runs; 0 keeps every call on the float path, which
    #: gives exactly the training form's output (the kernel: equal to float rounding)
    LOWBIT_KERNEL_MAX_ROWS = kernels.LOWBIT_MAX_ROWS

    in_features: int
    out_features: int
    panels: Tensor | None
    weight: Tensor
    scale: Tensor | None
    bias: Tensor | None

    def _init_lowbit(self) -> None:
        self.register_buffer("panels", None, persistent=False)
        self.register_buffer("lowbit_table", None, persistent=False)
        self.lowbit_bits = 0

    def _prepare_lowbit(self, codes: Tensor, bits: int, table: Tensor) -> None:
        """The panels of the non-negative codes (out, in) into ``table`` (at most 2^bits
        values; padded to 2^bits), or None when the kernel cannot run them (another code width,
        or no C library)."""
        usable = bits in kernels.LOWBIT_BITS and kernels.available()
        self.panels = kernels.lowbit_panels(codes, bits) if usable else None
        self.lowbit_table = torch.zeros(2 ** bits)
        self.lowbit_table[: len(table)] = table
        self.lowbit_bits = bits

    def forward(self, x: Tensor) -> Tensor:
        """The layer's input quantizer (``_input``), then the kernel where it applies, else
        torch's linear on the decoded ``weight``."""
        x = self._input(x)
        y = self._lowbit_linear(x, self.scale, self.bias)
        return F.linear(x, self.weight, self.bias) if y is None else y

    def _lowbit_linear(self, x: Tensor, scale: Tensor | None,
                       bias: Tensor | None) -> Tensor | None:
        """``x @ table[codes].T * scale + bias`` (..., out) by the low-bit kernel, or None when
        the layer must run its float path."""
        if (self.panels is None or x.dtype != torch.float32 or x.device.type != "cpu"
                or x.dim() == 0 or x.shape[-1] != self.in_features  # torch's error message
                or (x.requires_grad and torch.is_grad_enabled()) or exporting()):
            return None
        flat = x.reshape(-1, self.in_features)
        if flat.shape[0] > self.LOWBIT_KERNEL_MAX_ROWS:
            return None
        gemm = lowbit_gemm_op if torch.compiler.is_compiling() else kernels.lowbit_gemm
        y = gemm(flat, self.panels, self.lowbit_table, self.out_features, self.lowbit_bits,
                 scale, bias)
        return y.reshape(*x.shape[:-1], self.out_features)
