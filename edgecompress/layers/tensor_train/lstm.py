"""TTLSTM: an LSTM whose stacked gate matrices are tensor trains (Murua et al. 2020, arXiv
2006.05442).

Each layer l computes, for t = 1..T, with the gates stacked in nn.LSTM's order (i, f, g, o):
    [i; f; g; o] = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh,
    i, f, o = sigmoid(.), g = tanh(.), c_t = f * c_{t-1} + i * g, h_t = o * tanh(c_t),
where W_ih (4H x input) and W_hh (4H x H) are :class:`TTLinear` (or dense nn.Linear for the side
``which`` leaves out). W_ih x_t runs once for all T * B rows of a layer (its contraction order
chosen for that many rows), W_hh h_{t-1} once per step for B rows. Between layers, dropout as in
nn.LSTM (training only, not after the last layer).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ConversionError
from .linear import TTLinear, check_init

WHICH = ("both", "input", "hidden")
State = tuple[Tensor, Tensor]


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


class TTLSTM(nn.Module):
    """nn.LSTM's interface (unidirectional, no projection) with TT gate matrices.

    ``forward(input, hx=None) -> (output, (h_n, c_n))`` exactly as nn.LSTM: ``input`` (T, B, F),
    or (B, T, F) with ``batch_first``, or unbatched (T, F); ``hx`` the initial (h_0, c_0), each
    (num_layers, B, H) (or (num_layers, H) unbatched), zeros when None.

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
        super().__init__()
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size),
                            ("num_layers", num_layers)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConversionError(f"TTLSTM {name} must be a positive int, got {value!r}")
        if not isinstance(dropout, (int, float)) or not 0 <= dropout <= 1:
            raise ConversionError(f"TTLSTM dropout must be a number in [0, 1], got {dropout!r}")
        if which not in WHICH:
            raise ConversionError(f"TTLSTM which must be one of {WHICH}, got {which!r}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, float(dropout)
        self.which = which
        factory = {"device": device, "dtype": dtype}
        self.ih, self.hh = nn.ModuleList(), nn.ModuleList()
        gates = 4 * hidden_size
        factors = None if factorization is None else _split_factorization(factorization,
                                                                           hidden_size)
        for layer in range(num_layers):
            layer_in = input_size if layer == 0 else hidden_size
            for maps, size, tt, side in ((self.ih, layer_in, which != "hidden", "input"),
                                         (self.hh, hidden_size, which != "input", "hidden")):
                if not tt:
                    maps.append(nn.Linear(size, gates, bias, **factory))
                    continue
                fact = None if factors is None else (
                    factors[0] if layer == 0 and side == "input" else factors[1], factors[2])
                try:
                    maps.append(TTLinear(size, gates, fact, ranks=ranks, mode=mode, bias=bias,
                                         **factory))
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
        if not isinstance(lstm, nn.LSTM):
            raise ConversionError(f"from_lstm needs an nn.LSTM, got {type(lstm).__name__}")
        check_init(init)
        if lstm.bidirectional or lstm.proj_size:
            raise ConversionError(f"TTLSTM converts unidirectional LSTMs without projection; "
                                  f"got {lstm} (bidirectional={lstm.bidirectional}, "
                                  f"proj_size={lstm.proj_size})")
        w = lstm.weight_ih_l0
        new = cls(lstm.input_size, lstm.hidden_size, lstm.num_layers, lstm.bias,
                  lstm.batch_first, lstm.dropout, ranks=ranks, mode=mode,
                  factorization=factorization, which=which, device=w.device, dtype=w.dtype)
        with torch.no_grad():
            for layer in range(lstm.num_layers):
                for maps, kind in ((new.ih, "ih"), (new.hh, "hh")):
                    weight = getattr(lstm, f"weight_{kind}_l{layer}")
                    bias = getattr(lstm, f"bias_{kind}_l{layer}") if lstm.bias else None
                    target = maps[layer]
                    if isinstance(target, TTLinear) and init == "random":
                        if bias is not None:
                            target.bias.copy_(bias)
                    elif isinstance(target, TTLinear):
                        target.load_dense_(weight, bias)
                    else:
                        target.weight.copy_(weight)
                        if bias is not None:
                            target.bias.copy_(bias)
        new.train(lstm.training)
        return new

    def forward(self, input: Tensor, hx: State | None = None) -> tuple[Tensor, State]:
        return run_lstm(self, input, hx)

    def macs(self, steps: int, rows: int) -> int:
        """Multiply-adds of the gate matrices for a sequence of ``steps`` x ``rows`` (see
        :func:`gate_macs`)."""
        return gate_macs(self, steps, rows)

    def edgecompress_params(self) -> dict[int, int]:
        return {32: sum(p.numel() for p in self.parameters())}

    def edgecompress_macs(self, inputs: tuple, output: Any) -> dict[str, int]:
        return {"w32a32": sequence_macs(self, inputs[0])}

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
                f"bias={self.bias}, batch_first={self.batch_first}, dropout={self.dropout}, "
                f"which={self.which!r}")


def run_lstm(lstm: nn.Module, input: Tensor, hx: State | None = None,
             fused: Callable[[int, int], Sequence[Tensor] | None] | None = None
             ) -> tuple[Tensor, State]:
    """nn.LSTM's forward (see the module docstring) for any module with nn.LSTM's attributes
    (``hidden_size``, ``num_layers``, ``batch_first``, ``dropout``, ``bias``) whose gate maps
    ``ih[l]`` and ``hh[l]`` are callables (TTLinear, nn.Linear or their packed forms): the
    training and the frozen TT-LSTM run this one recurrence. ``fused(steps, rows)``: None, or
    nn.LSTM's flat weights (w_ih, w_hh[, b_ih, b_hh] per layer, dense) to run the recurrence in
    torch's fused LSTM kernel instead, as nn.LSTM does (the gate maps are then not called)."""
    if input.dim() not in (2, 3):
        raise ValueError(f"{type(lstm).__name__} expects an input of 3 dimensions (or 2, "
                         f"unbatched), got shape {tuple(input.shape)}")
    batched = input.dim() == 3
    x = input if not batched or not lstm.batch_first else input.transpose(0, 1)
    if not batched:
        x = x.unsqueeze(1)
    steps, rows = x.shape[0], x.shape[1]
    shape = (lstm.num_layers, rows, lstm.hidden_size)
    if hx is None:
        h0 = c0 = x.new_zeros(shape)
    else:
        h0, c0 = (s if batched else s.unsqueeze(1) for s in hx)
        for name, s in (("h_0", h0), ("c_0", c0)):
            if tuple(s.shape) != shape:
                raise ValueError(f"{type(lstm).__name__} initial state {name} must have shape "
                                 f"{shape if batched else (shape[0], shape[2])}, got "
                                 f"{tuple(s.shape) if batched else tuple(s.shape[::2])}")
    weights = fused(steps, rows) if fused is not None else None
    if weights is not None:
        x, h_n, c_n = torch.lstm(x, (h0, c0), list(weights), lstm.bias, lstm.num_layers,
                                 float(lstm.dropout), lstm.training, False, False)
        return _outputs(lstm, x, h_n, c_n, batched)
    last_h, last_c = [], []
    size = lstm.hidden_size
    for layer in range(lstm.num_layers):
        projected = lstm.ih[layer](x)  # (T, B, 4H): all time steps in one call
        hh, h, c = lstm.hh[layer], h0[layer], c0[layer]
        outputs = []
        for t in range(steps):  # few operations per step: at batch 1 each costs more than its math
            gates = hh(h).add_(projected[t])
            i, f, _, o = torch.sigmoid(gates).chunk(4, dim=-1)  # g's sigmoid unused
            c = torch.addcmul(f * c, i, torch.tanh(gates[:, 2 * size:3 * size]))
            h = o * torch.tanh(c)
            outputs.append(h)
        x = torch.stack(outputs) if steps > 1 else h.unsqueeze(0)
        if layer < lstm.num_layers - 1 and lstm.dropout:
            x = F.dropout(x, lstm.dropout, lstm.training)
        last_h.append(h)
        last_c.append(c)
    return _outputs(lstm, x, torch.stack(last_h), torch.stack(last_c), batched)


def _outputs(lstm: nn.Module, x: Tensor, h_n: Tensor, c_n: Tensor, batched: bool
             ) -> tuple[Tensor, State]:
    """nn.LSTM's (output, (h_n, c_n)) from the time-major output ``x`` (T, B, H)."""
    if not batched:
        return x.squeeze(1), (h_n.squeeze(1), c_n.squeeze(1))
    return (x.transpose(0, 1) if lstm.batch_first else x), (h_n, c_n)


def gate_macs(lstm: nn.Module, steps: int, rows: int) -> int:
    """Multiply-adds of an LSTM's gate maps for a sequence of ``steps`` x ``rows``: per layer
    ``ih`` on steps x rows rows at once, ``hh`` on ``rows`` rows at every step (a map with a
    ``macs(rows)`` method, a TT one, in the order it runs; a dense one in x out per row;
    element-wise gate arithmetic not counted, as for nn.LSTM)."""

    def run(module: nn.Module, n: int) -> int:
        if hasattr(module, "macs"):
            return module.macs(n)
        return n * module.in_features * module.out_features

    return sum(run(ih, steps * rows) + steps * run(hh, rows) for ih, hh in zip(lstm.ih, lstm.hh))


def sequence_macs(lstm: nn.Module, x: Tensor) -> int:
    """:func:`gate_macs` per sequence of the input ``x`` (batched or not, ``batch_first`` or
    not): the summary's count per sample."""
    if x.dim() == 2:
        return gate_macs(lstm, x.shape[0], 1)
    steps, rows = (x.shape[1], x.shape[0]) if lstm.batch_first else x.shape[:2]
    return gate_macs(lstm, steps, rows) // max(rows, 1)
