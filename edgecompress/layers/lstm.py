"""GateLSTM: nn.LSTM with its stacked gate matrices as Linear modules, so that layer methods
(shift, uniform) convert them and ``freeze`` packs them; and the one recurrence that every LSTM
of the library runs (:func:`run_lstm`).

Each layer l computes, for t = 1..T, with the gates stacked in nn.LSTM's order (i, f, g, o):
    [i; f; g; o] = ih_l(x_t) + hh_l(h_{t-1}),   (ih_l(x) = W_ih x + b_ih, hh_l(h) = W_hh h + b_hh)
    i, f, o = sigmoid(.), g = tanh(.), c_t = f * c_{t-1} + i * g, h_t = o * tanh(c_t).
``ih_l`` runs once for all T * B rows of a layer, ``hh_l`` once per step on the B rows of the
batch (at batch <= 16 a frozen low-bit map then runs the low-bit GEMM at every step). Between
layers, dropout as in nn.LSTM (training only, not after the last layer).

The gate maps are ``ih.<l>`` / ``hh.<l>`` (a ModuleList each): nn.Linear in a GateLSTM, any
module computing ``x -> W x + b`` in a subclass or after conversion (ShiftLinear, UniformLinear,
:class:`~edgecompress.layers.TTLinear` in the TT-LSTM, their packed forms when frozen).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConversionError
from .base import params_by_bits, precision_key

State = tuple[Tensor, Tensor]


def check_lstm(lstm: nn.Module, target: str) -> None:
    """``lstm`` is an nn.LSTM that ``target`` can take: unidirectional, without projection."""
    if not isinstance(lstm, nn.LSTM):
        raise ConversionError(f"{target}.from_lstm needs an nn.LSTM, got {type(lstm).__name__}")
    for option, value, accepted in (("bidirectional", lstm.bidirectional, False),
                                    ("proj_size", lstm.proj_size, 0)):
        if value != accepted:
            raise ConversionError(f"{target} converts unidirectional LSTMs without projection; "
                                  f"got {lstm} with {option}={value!r} (accepted: {accepted!r})")


class GateLSTM(nn.Module):
    """nn.LSTM's interface (unidirectional, no projection) whose gate matrices are Linear
    modules ``ih.<layer>`` (4H x input) and ``hh.<layer>`` (4H x H), each with the bias of
    nn.LSTM's ``bias_ih_l<layer>`` / ``bias_hh_l<layer>``.

    ``forward(input, hx=None) -> (output, (h_n, c_n))`` exactly as nn.LSTM: ``input`` (T, B, F),
    or (B, T, F) with ``batch_first``, or unbatched (T, F); ``hx`` the initial (h_0, c_0), each
    (num_layers, B, H) (or (num_layers, H) unbatched), zeros when None.

    What it is for: ``convert(model, "shift" / "uniform" ...)`` turns an nn.LSTM into a GateLSTM
    (:meth:`from_lstm`, the same outputs) and converts its gate maps like any other inner
    Linear layer; ``freeze`` packs each map as it packs a standalone layer
    (:class:`~edgecompress.deploy.PackedGateLSTM`). :class:`~edgecompress.layers.TTLSTM` is the
    case whose maps are tensor trains. Initialised like nn.LSTM: U(-1/sqrt(H), 1/sqrt(H)).
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0, *,
                 device: Any = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        kind = type(self).__name__
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size),
                            ("num_layers", num_layers)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConversionError(f"{kind} {name} must be a positive int, got {value!r}")
        if not isinstance(dropout, (int, float)) or not 0 <= dropout <= 1:
            raise ConversionError(f"{kind} dropout must be a number in [0, 1], got {dropout!r}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, float(dropout)
        self.ih, self.hh = nn.ModuleList(), nn.ModuleList()
        for layer in range(num_layers):
            self.ih.append(nn.Linear(input_size if layer == 0 else hidden_size, 4 * hidden_size,
                                     bias, device=device, dtype=dtype))
            self.hh.append(nn.Linear(hidden_size, 4 * hidden_size, bias, device=device,
                                     dtype=dtype))
        GateLSTM.reset_parameters(self)

    def reset_parameters(self) -> None:
        """nn.LSTM's initialisation: every weight and bias U(-1/sqrt(H), 1/sqrt(H))."""
        bound = 1 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    @classmethod
    def from_lstm(cls, lstm: nn.LSTM) -> "GateLSTM":
        """A GateLSTM with ``lstm``'s configuration and weights: it computes what ``lstm``
        computes (the same products, in the recurrence's order)."""
        check_lstm(lstm, cls.__name__)
        w = lstm.weight_ih_l0
        new = cls(lstm.input_size, lstm.hidden_size, lstm.num_layers, lstm.bias,
                  lstm.batch_first, lstm.dropout, device=w.device, dtype=w.dtype)
        with torch.no_grad():
            for layer in range(lstm.num_layers):
                for maps, kind in ((new.ih, "ih"), (new.hh, "hh")):
                    copy_gate_map(lstm, layer, kind, maps[layer])
        return new.train(lstm.training)

    def forward(self, input: Tensor, hx: State | None = None) -> tuple[Tensor, State]:
        return run_lstm(self, input, hx)

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
                f"bias={self.bias}, batch_first={self.batch_first}, dropout={self.dropout}")


def copy_gate_map(lstm: nn.LSTM, layer: int, kind: str, target: nn.Linear) -> None:
    """Copy nn.LSTM's ``weight_<kind>_l<layer>`` (and bias) into the dense map ``target``."""
    target.weight.copy_(getattr(lstm, f"weight_{kind}_l{layer}"))
    if lstm.bias:
        target.bias.copy_(getattr(lstm, f"bias_{kind}_l{layer}"))


def run_lstm(lstm: nn.Module, input: Tensor, hx: State | None = None,
             fused: Callable[[int, int], Sequence[Tensor] | None] | None = None
             ) -> tuple[Tensor, State]:
    """nn.LSTM's forward (see the module docstring) for any module with nn.LSTM's attributes
    (``hidden_size``, ``num_layers``, ``batch_first``, ``dropout``, ``bias``) whose gate maps
    ``ih[l]`` and ``hh[l]`` are callables (nn.Linear, TTLinear, quantized Linear layers or their
    packed forms): the training and the frozen LSTMs run this one recurrence. ``fused(steps,
    rows)``: None, or nn.LSTM's flat weights (w_ih, w_hh[, b_ih, b_hh] per layer, dense) to run
    the recurrence in torch's fused LSTM kernel instead, as nn.LSTM does (the gate maps are then
    not called)."""
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


def gate_map_macs(lstm: nn.Module, steps: int, rows: int) -> list[tuple[nn.Module, int]]:
    """(map, multiply-adds) of each gate map of an LSTM for a sequence of ``steps`` x ``rows``:
    ``ih`` on steps x rows rows at once, ``hh`` on ``rows`` rows at every step (a map with a
    ``macs(rows)`` method, a TT one, in the order it runs; a dense one in x out per row;
    element-wise gate arithmetic not counted, as for nn.LSTM)."""

    def run(module: nn.Module, n: int) -> int:
        if hasattr(module, "macs"):
            return module.macs(n)
        return n * module.in_features * module.out_features

    return [pair for ih, hh in zip(lstm.ih, lstm.hh)
            for pair in ((ih, run(ih, steps * rows)), (hh, steps * run(hh, rows)))]


def gate_macs(lstm: nn.Module, steps: int, rows: int) -> int:
    """The multiply-adds of all gate maps (:func:`gate_map_macs`)."""
    return sum(n for _, n in gate_map_macs(lstm, steps, rows))


def gate_params(lstm: nn.Module) -> dict[int, int]:
    """Parameters of an LSTM's gate maps by bit width, each map counted as the summary counts
    a layer (:func:`~edgecompress.layers.base.params_by_bits`)."""
    out: dict[int, int] = {}
    for m in (*lstm.ih, *lstm.hh):
        for bits, n in params_by_bits(m).items():
            out[bits] = out.get(bits, 0) + n
    return out


def sequence_macs(lstm: nn.Module, x: Tensor) -> dict[str, int]:
    """:func:`gate_map_macs` per sequence of the input ``x`` (batched or not, ``batch_first`` or
    not), by the precision key of each map (:func:`~edgecompress.layers.base.precision_key`):
    the summary's count per sample."""
    if x.dim() == 2:
        steps, rows = x.shape[0], 1
    else:
        steps, rows = (x.shape[1], x.shape[0]) if lstm.batch_first else x.shape[:2]
    out: dict[str, int] = {}
    for m, n in gate_map_macs(lstm, steps, rows):
        key = precision_key(m)
        out[key] = out.get(key, 0) + n
    return {key: n // max(rows, 1) for key, n in out.items()}
