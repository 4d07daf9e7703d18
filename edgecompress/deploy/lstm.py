"""Frozen LSTMs: :class:`PackedGateLSTM`, the inference form of
:class:`~edgecompress.layers.GateLSTM` (and the base of
:class:`~edgecompress.deploy.PackedTTLSTM`).

Each gate map is packed as ``freeze`` packs a standalone layer of its class (the packed-layer
registry): a ShiftLinear map becomes a :class:`~edgecompress.deploy.PackedShiftLinear`, a
UniformLinear one a :class:`~edgecompress.deploy.PackedUniformLinear` (at <= 16 rows per call the
low-bit GEMM: ``hh`` runs on the batch's rows at every step, so at batch <= 16 it does), a
TTLinear one a :class:`~edgecompress.deploy.PackedTTLinear`; a float nn.Linear map stays an
nn.Linear. The file names each packed map's class and config in the LSTM's ``gates``.

Torch's fused LSTM kernel (:meth:`PackedGateLSTM.fused_weights`) runs a call only when every
map is float (nn.Linear) or offers its dense matrix (``dense_weight()`` and ``plan_cost(rows)``,
the TT maps): a quantized map always runs its own forward, its input quantizer and the low-bit
kernel included, so freezing never trades its quantization (or the 4-bit reads) for the fused
kernel.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn

from ..errors import ConversionError
from ..layers import GateLSTM
from ..layers.base import precision_key
from ..layers.lstm import gate_macs, gate_params, run_lstm, sequence_macs
from ..layers.tensor_train.precontracted import dense_plan
from .packed import PackedLayer, pack_layer, packed_class, register_packed

#: the fewest time steps of a call that the fused LSTM kernel runs: it has a fixed cost per call
#: of about one or two steps of the step-by-step recurrence (measured on one CPU thread: one
#: token at a time, the recurrence with dense maps takes 0.5-0.95x the time of nn.LSTM; from 4
#: steps on, nn.LSTM is faster)
FUSED_MIN_STEPS = 4
#: how many times faster torch's fused LSTM kernel runs the dense gate products of a sequence
#: than the step-by-step recurrence (measured on one CPU thread, 2 x 200 LSTM, batch 32 x 35
#: steps: the recurrence with the same dense maps takes 1.6-1.8x nn.LSTM's time)
FUSED_SPEEDUP = 2


@register_packed(GateLSTM)
class PackedGateLSTM(PackedLayer):
    """Frozen GateLSTM: its gate maps ``ih.<layer>`` / ``hh.<layer>`` packed (see the module
    docstring), run by the training form's recurrence
    (:func:`~edgecompress.layers.lstm.run_lstm`), or by torch's fused LSTM kernel where every map
    is dense and that costs less (:meth:`fused_weights`); nn.LSTM's interface. Inter-layer
    dropout is off (inference)."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int, bias: bool,
                 batch_first: bool, gates: Sequence[dict[str, Any] | None]) -> None:
        """``gates``: per map (``ih.0``, ``hh.0``, ``ih.1``, ...) None for a float map
        (nn.Linear, its shape follows from the sizes) or ``{"class": packed class name,
        "config": its config()}``."""
        super().__init__()
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, 0.0
        self.gates = list(gates)
        kind = type(self).__name__
        if len(self.gates) != 2 * num_layers:
            raise ConversionError(f"{kind}: {len(self.gates)} gate maps for {num_layers} "
                                  f"layer(s), expected {2 * num_layers}")
        self.ih, self.hh = nn.ModuleList(), nn.ModuleList()
        for k, entry in enumerate(self.gates):
            layer, side = divmod(k, 2)
            size = hidden_size if layer or side else input_size
            if entry is None:
                module: nn.Module = nn.Linear(size, 4 * hidden_size, bias)
            elif isinstance(entry, dict) and set(entry) == {"class", "config"}:
                module = packed_class(entry["class"]).from_config(entry["config"])
            else:
                raise ConversionError(f"{kind}: gate map {_map_name(k)} is {entry!r:.80}; "
                                      f"expected None or {{'class': ..., 'config': ...}}")
            (self.hh if side else self.ih).append(module)

    @classmethod
    def from_trained(cls, layer: GateLSTM, **options: Any) -> "PackedGateLSTM":
        """Each map packed by its registered packed class (given the freeze ``options`` it
        declares), a float nn.Linear copied."""
        maps = [_pack_map(m, k, options) for k, m in
                enumerate(m for pair in zip(layer.ih, layer.hh) for m in pair)]
        new = cls(layer.input_size, layer.hidden_size, layer.num_layers, layer.bias,
                  layer.batch_first,
                  [{"class": type(m).__name__, "config": m.config()}
                   if isinstance(m, PackedLayer) else None for m in maps])
        for k, m in enumerate(maps):
            (new.hh if k % 2 else new.ih)[k // 2] = m
        return new.eval()

    def config(self) -> dict[str, Any]:
        return dict(input_size=self.input_size, hidden_size=self.hidden_size,
                    num_layers=self.num_layers, bias=self.bias, batch_first=self.batch_first,
                    gates=self.gates)

    def forward(self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None
                ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        return run_lstm(self, input, hx, self.fused_weights)

    def fused_weights(self, steps: int, rows: int) -> list[Tensor] | None:
        """nn.LSTM's flat weights (w_ih, w_hh[, b_ih, b_hh] per layer, dense) to run a call of
        ``steps`` x ``rows`` in torch's fused LSTM kernel, as a frozen dense LSTM does, or None
        to run the step-by-step recurrence with the maps' own forward. None when a map is
        quantized (neither nn.Linear nor offering ``dense_weight()``). Else fused when the call
        has at least :data:`FUSED_MIN_STEPS` steps and the dense products, counted at
        1 / :data:`FUSED_SPEEDUP` of their cost, cost less than what the recurrence runs (``ih``
        once on steps x rows rows, ``hh`` on ``rows`` rows per step; a TT map's plan costs,
        :meth:`~edgecompress.layers.tensor_train.precontracted.Plan.cost`): always for dense
        maps, for TT maps when their factored plans save little."""
        maps = [*self.ih, *self.hh]
        if steps < FUSED_MIN_STEPS or not all(
                type(m) is nn.Linear or hasattr(m, "dense_weight") for m in maps):
            return None
        recurrence = dense = 0
        for m, n, times in ((m, n, t) for ih, hh in zip(self.ih, self.hh)
                            for m, n, t in ((ih, steps * rows, 1), (hh, rows, steps))):
            w = dense_plan(m.in_features, m.out_features)
            recurrence += times * (w.cost(n) if type(m) is nn.Linear else m.plan_cost(n))
            dense += times * w.cost(n)
        if dense >= FUSED_SPEEDUP * recurrence:
            return None
        weights: list[Tensor] = []
        for ih, hh in zip(self.ih, self.hh):
            weights += [m.weight if type(m) is nn.Linear else m.dense_weight() for m in (ih, hh)]
            weights += [ih.bias, hh.bias] if self.bias else []
        return weights

    def _packed_map(self, name: str) -> tuple[PackedLayer | None, str]:
        """The packed gate map owning ``state_dict`` entry ``name`` and the entry's name in it
        (None for a float map's entry)."""
        side, layer, local = name.split(".", 2)
        module = getattr(self, side)[int(layer)]
        return (module if isinstance(module, PackedLayer) else None), local

    def encode_tensor(self, name: str, value: Tensor) -> Tensor:
        """Each packed map's entries in its own on-disk form (shift codes as bits)."""
        owner, local = self._packed_map(name)
        return value if owner is None else owner.encode_tensor(local, value)

    def decode_tensor(self, name: str, stored: Tensor) -> Tensor:
        owner, local = self._packed_map(name)
        return stored if owner is None else owner.decode_tensor(local, stored)

    def edgecompress_params(self) -> dict[int, int]:
        return gate_params(self)

    def edgecompress_macs(self, inputs: tuple, output: Any) -> dict[str, int]:
        return sequence_macs(self, inputs[0])

    def macs(self, steps: int, rows: int) -> int:
        return gate_macs(self, steps, rows)

    @property
    def op_kind(self) -> dict[str, str]:
        """The kind of the maps' operations by their precision key (the summary's; e.g.
        ``"shift-add"`` for power-of-two maps)."""
        return {precision_key(m): getattr(m, "op_kind", "mac") for m in (*self.ih, *self.hh)}

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
                f"bias={self.bias}, batch_first={self.batch_first}")


def _map_name(k: int) -> str:
    """``ih.<layer>`` / ``hh.<layer>`` of the k-th map (ih.0, hh.0, ih.1, ...)."""
    return f"{'hh' if k % 2 else 'ih'}.{k // 2}"


def _pack_map(m: nn.Module, k: int, options: dict[str, Any]) -> nn.Module:
    """Gate map ``k`` frozen: a float nn.Linear copied with frozen parameters, another map by its
    registered packed class (with the freeze options that class declares)."""
    if type(m) is nn.Linear:
        new = nn.Linear(m.in_features, m.out_features, m.bias is not None)
        new.load_state_dict(m.state_dict())
        return new.requires_grad_(False)
    packed = pack_layer(m, options)
    if packed is None:
        raise ConversionError(f"frozen LSTM: gate map {_map_name(k)} is a {type(m).__name__}, "
                              f"which has no packed form; a frozen LSTM takes nn.Linear gate "
                              f"maps or those of a class freeze packs")
    return packed
