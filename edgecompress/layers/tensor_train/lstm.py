"""TTLSTM: an LSTM whose stacked gate matrices are tensor trains (Murua et al. 2020, arXiv
2006.05442): a :class:`~edgecompress.layers.lstm.GateLSTM` whose gate maps W_ih (4H x input) and
W_hh (4H x H) are :class:`TTLinear` (or dense nn.Linear for the side ``which`` leaves out), run
by the same recurrence (:func:`~edgecompress.layers.lstm.run_lstm`; W_ih x_t once for all T * B
rows of a layer, its contraction order chosen for that many rows, W_hh h_{t-1} once per step for
B rows).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ...errors import ConversionError
from ..lstm import GateLSTM, check_lstm, copy_gate_map, gate_macs, gate_params, sequence_macs
from .linear import TTLinear, check_init

WHICH = ("both", "input", "hidden")


def _split_factorization(factorization: Any, hidden: int) -> tuple[Any, Any, Any]:
    """(input factors, hidden factors, 4H gate factors) of a TTLSTM factorization (factors of
    the input size, factors of the hidden size): the 4 gates join the first hidden factor,
    (4 h_1, h_2, ...), which keeps nn.LSTM's gate-major row order (row = gate * H + h)."""
    if not isinstance(factorization, (list, tuple)) or len(factorization) != 2:
        raise ConversionError(f"TTLSTM factorization {factorization!r} is not a pair (factors of "
                              f"the input size, factors of hidden_size)")
    input_factors, hidden_factors = factorization
    if (not isinstance(hidden_factors, (list, tuple)) or not hidden_factors
            or not all(isinstance(f, int) and f >= 1 for f in hidden_factors)
            or math.prod(hidden_factors) != hidden):
        raise ConversionError(f"TTLSTM factorization {factorization!r}: the hidden factors must "
                              f"be positive ints multiplying to hidden_size {hidden}")
    return input_factors, hidden_factors, (4 * hidden_factors[0], *hidden_factors[1:])


class TTLSTM(GateLSTM):
    """nn.LSTM's interface (unidirectional, no projection) with TT gate matrices: a
    :class:`GateLSTM` whose maps on the ``which`` side are :class:`TTLinear` (forward as
    GateLSTM's, i.e. nn.LSTM's).

    Args:
        ranks, mode: as :class:`TTLinear`, for every TT matrix.
        factorization: None (each matrix factorized automatically) or (factors of
            ``input_size``, factors of ``hidden_size``); the 4H gate side is then
            (4 h_1, h_2, ...) and layers after the first use the hidden factors on their input.
        which: the matrices made TT: ``"both"``, ``"input"`` (W_ih only) or ``"hidden"``
            (W_hh only); the others are dense nn.Linear.

    Parameters: ``ih.<layer>`` and ``hh.<layer>`` (TTLinear or nn.Linear), each with the bias
    of nn.LSTM's ``bias_ih_l<layer>`` / ``bias_hh_l<layer>``. Initialised like nn.LSTM: every
    weight and bias U(-1/sqrt(H), 1/sqrt(H)), TT cores matching that variance
    (:meth:`TTLinear.reset_parameters`).
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0, *,
                 ranks: int | list[int], mode: str = "mps", factorization: Any = None,
                 which: str = "both", device: Any = None,
                 dtype: torch.dtype | None = None) -> None:
        # GateLSTM checks the sizes and builds dense maps; those on the ``which`` side are then
        # replaced by tensor trains (a dense map is allocated once on the way)
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         device=device, dtype=dtype)
        if which not in WHICH:
            raise ConversionError(f"TTLSTM which must be one of {WHICH}, got {which!r}")
        self.which = which
        factory = {"device": device, "dtype": dtype}
        gates = 4 * hidden_size
        factors = None if factorization is None else _split_factorization(factorization,
                                                                           hidden_size)
        for layer in range(num_layers):
            layer_in = input_size if layer == 0 else hidden_size
            for maps, size, tt, side in ((self.ih, layer_in, which != "hidden", "input"),
                                         (self.hh, hidden_size, which != "input", "hidden")):
                if not tt:
                    continue
                fact = None if factors is None else (
                    factors[0] if layer == 0 and side == "input" else factors[1], factors[2])
                try:
                    maps[layer] = TTLinear(size, gates, fact, ranks=ranks, mode=mode, bias=bias,
                                           **factory)
                except ConversionError as exc:
                    raise ConversionError(f"TTLSTM layer {layer}, {side}-to-hidden matrix "
                                          f"({gates} x {size}): {exc}") from None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """nn.LSTM's initialisation: U(-1/sqrt(H), 1/sqrt(H)) (TT cores: that variance)."""
        bound = 1 / math.sqrt(self.hidden_size)
        for module in (*self.ih, *self.hh):
            if isinstance(module, TTLinear):
                module.reset_parameters(bound)
            else:
                for p in module.parameters():
                    nn.init.uniform_(p, -bound, bound)

    @classmethod
    def from_lstm(cls, lstm: nn.LSTM, ranks: int | list[int], mode: str = "mps",
                  factorization: Any = None, which: str = "both",
                  init: str = "svd") -> "TTLSTM":
        """A TTLSTM of ``lstm``'s configuration with its biases (and its dense weights on the
        side ``which`` leaves out). ``init="svd"``: the TT matrices are the TT-SVD of
        ``lstm``'s weights truncated to ``ranks``; at full rank it computes what ``lstm``
        computes. ``init="random"``: variance-matched random cores, for training from scratch
        (see :meth:`TTLinear.from_linear`)."""
        check_lstm(lstm, cls.__name__)
        check_init(init)
        w = lstm.weight_ih_l0
        new = cls(lstm.input_size, lstm.hidden_size, lstm.num_layers, lstm.bias,
                  lstm.batch_first, lstm.dropout, ranks=ranks, mode=mode,
                  factorization=factorization, which=which, device=w.device, dtype=w.dtype)
        with torch.no_grad():
            for layer in range(lstm.num_layers):
                for maps, kind in ((new.ih, "ih"), (new.hh, "hh")):
                    target = maps[layer]
                    if not isinstance(target, TTLinear):
                        copy_gate_map(lstm, layer, kind, target)
                        continue
                    bias = getattr(lstm, f"bias_{kind}_l{layer}") if lstm.bias else None
                    if init == "random":
                        if bias is not None:
                            target.bias.copy_(bias)
                    else:
                        target.load_dense_(getattr(lstm, f"weight_{kind}_l{layer}"), bias)
        new.train(lstm.training)
        return new

    def macs(self, steps: int, rows: int) -> int:
        """Multiply-adds of the gate matrices for a sequence of ``steps`` x ``rows`` (see
        :func:`gate_macs`)."""
        return gate_macs(self, steps, rows)

    def edgecompress_params(self) -> dict[int, int]:
        return gate_params(self)

    def edgecompress_macs(self, inputs: tuple, output: Any) -> dict[str, int]:
        return sequence_macs(self, inputs[0])

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, which={self.which!r}"
