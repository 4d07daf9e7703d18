"""Packed tensor-train layers: ``PackedTTLinear`` and ``PackedTTLSTM``, the inference forms of
:class:`~edgecompress.layers.TTLinear` and :class:`~edgecompress.layers.TTLSTM`.

The file holds the TT cores, never the dense weight: float32 by default, or with
``freeze(model, core_bits=8)`` as 8-bit symmetric integers with one float32 scale per core
slice (``G_k[:, i, :]``, ``i`` the core's mode index; MPO: the (m, n) index pair):
``q = round(G / scale)`` in -127..127 with ``scale = max |slice| / 127``. Loading (and
freezing) dequantizes the cores and multiplies them once into their run-time form, held in
memory only (:mod:`~edgecompress.layers.tensor_train.precontracted`: per batch size the plan of
least counted cost among MPS y = (x L) R + b, MPO sweeps over merged groups of cores, and the
dense W itself). It computes the same sums as the training layer in
another order, so float cores give the training layer's outputs up to float rounding (a few
units in the last place), and 8-bit cores up to the rounding of the cores (:func:`core_error`
measures it).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn

from ..errors import ConversionError
from ..layers import TTLSTM, TTLinear
from ..layers.tensor_train.layout import tt_layout
from ..layers.lstm import gate_macs, run_lstm, sequence_macs
from ..layers.tensor_train.precontracted import Precontracted, dense_plan, precontract
from .packed import PackedLayer, register_packed

#: core widths ``core_bits`` accepts (None: float32)
CORE_BITS = (None, 8)
#: the fewest time steps of a call that the fused LSTM kernel runs: it has a fixed cost per call
#: of about one or two steps of the step-by-step recurrence (measured on one CPU thread: one
#: token at a time, the recurrence with dense maps takes 0.5-0.95x the time of nn.LSTM; from 4
#: steps on, nn.LSTM is faster)
FUSED_MIN_STEPS = 4
#: how many times faster torch's fused LSTM kernel runs the dense gate products of a sequence
#: than the step-by-step recurrence (measured on one CPU thread, 2 x 200 LSTM, batch 32 x 35
#: steps: the recurrence with the same dense maps takes 1.6-1.8x nn.LSTM's time)
FUSED_SPEEDUP = 2

def _check_bits(core_bits: Any) -> int | None:
    if core_bits not in CORE_BITS or isinstance(core_bits, bool):
        raise ConversionError(f"core_bits={core_bits!r} is not supported for tensor-train "
                              f"cores; accepted: None (float32) or 8")
    return core_bits


def quantize_core(core: Tensor, bits: int = 8) -> tuple[Tensor, Tensor]:
    """(int8 codes, float32 scales) of ``core`` (r, modes..., r'): one symmetric scale per
    slice over the mode index, ``max |slice| / (2^(bits-1) - 1)`` (1 for an all-zero slice)."""
    levels = 2 ** (bits - 1) - 1
    g = core.detach().to(torch.float32)
    slices = g.reshape(g.shape[0], -1, g.shape[-1])
    scale = slices.abs().amax(dim=(0, 2)) / levels
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    codes = torch.round(slices / scale[None, :, None]).clamp(-levels, levels)
    return codes.to(torch.int8).reshape(core.shape), scale


def dequantize_core(codes: Tensor, scale: Tensor) -> Tensor:
    """The float32 core that :func:`quantize_core` encoded."""
    slices = codes.to(torch.float32).reshape(codes.shape[0], -1, codes.shape[-1])
    return (slices * scale[None, :, None]).reshape(codes.shape)


@register_packed(TTLinear)
class PackedTTLinear(PackedLayer):
    """Frozen TTLinear: the cores as buffers ``core0``, ``core1``, ... (float32, or int8 codes
    with ``scale0``, ``scale1``, ... when ``core_bits=8``) and ``bias``; y = W x + b by the
    precontracted form of the cores (:attr:`fast`, derived on freezing and loading).
    """

    freeze_options = ("core_bits",)

    def __init__(self, in_features: int, out_features: int, *, mode: str,
                 factorization: Sequence[Sequence[int]], ranks: Sequence[int],
                 bias: bool = True, core_bits: int | None = None) -> None:
        super().__init__()
        self.layout = tt_layout(in_features, out_features,
                                tuple(tuple(side) for side in factorization), list(ranks), mode)
        self.in_features, self.out_features = in_features, out_features
        self.core_bits = _check_bits(core_bits)
        dtype = torch.int8 if core_bits else torch.float32
        for k, shape in enumerate(self.layout.core_shapes):
            self.register_buffer(f"core{k}", torch.zeros(shape, dtype=dtype))
            if core_bits:
                self.register_buffer(f"scale{k}", torch.ones(
                    shape[1] if len(shape) == 3 else shape[1] * shape[2]))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)
        self.fast: Precontracted
        self.prepare()

    @classmethod
    def from_trained(cls, layer: TTLinear, core_bits: int | None = None) -> "PackedTTLinear":
        new = cls(layer.in_features, layer.out_features, mode=layer.mode,
                  factorization=layer.factorization, ranks=layer.ranks,
                  bias=layer.bias is not None, core_bits=core_bits)
        with torch.no_grad():
            for k, core in enumerate(layer.cores):
                if core_bits:
                    codes, scale = quantize_core(core, core_bits)
                    getattr(new, f"core{k}").copy_(codes)
                    getattr(new, f"scale{k}").copy_(scale)
                else:
                    getattr(new, f"core{k}").copy_(core.detach())
            if layer.bias is not None:
                new.bias.copy_(layer.bias.detach())
        new.prepare()
        return new

    def config(self) -> dict[str, Any]:
        return dict(in_features=self.in_features, out_features=self.out_features,
                    mode=self.layout.mode,
                    factorization=[list(side) for side in self.layout.factorization],
                    ranks=list(self.layout.ranks), bias=self.bias is not None,
                    core_bits=self.core_bits)

    def float_cores(self) -> list[Tensor]:
        """The cores as float32 (dequantized for 8-bit ones)."""
        stored = [getattr(self, f"core{k}") for k in range(len(self.layout.core_shapes))]
        return stored if not self.core_bits else [
            dequantize_core(c, getattr(self, f"scale{k}")) for k, c in enumerate(stored)]

    def prepare(self) -> None:
        """The run-time form the forward pass uses, from the stored cores."""
        self.fast = precontract(self.layout, self.float_cores())

    def _apply(self, fn: Any, recurse: bool = True) -> "PackedTTLinear":
        super()._apply(fn, recurse)  # .to(device) and friends: derive the cores again
        self.prepare()
        return self

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 2:
            return self.fast(x, self.bias)
        y = self.fast(x.reshape(-1, self.in_features), self.bias)
        return y.reshape(*x.shape[:-1], self.out_features)

    def macs(self, rows: int) -> int:
        """Multiply-adds of W x for ``rows`` rows in the precontracted form (bias excluded)."""
        return self.fast.macs(rows)

    def edgecompress_params(self) -> dict[int, int]:
        cores = self.layout.params
        floats = sum(t.numel() for name, t in self.named_buffers()
                     if name == "bias" or name.startswith("scale"))
        if not self.core_bits:
            return {32: cores + floats}
        return {self.core_bits: cores, 32: floats} if floats else {self.core_bits: cores}

    def edgecompress_macs(self, inputs: tuple, output: Tensor) -> dict[str, int]:
        samples = output.shape[0] if output.dim() > 1 else 1
        return {f"w{self.core_bits or 32}a32": self.macs(output.shape[:-1].numel()) // samples}

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"mode={self.layout.mode!r}, factorization={self.layout.factorization}, "
                f"ranks={self.layout.ranks}, core_bits={self.core_bits}")


@register_packed(TTLSTM)
class PackedTTLSTM(PackedLayer):
    """Frozen TTLSTM: its gate maps ``ih.<layer>`` / ``hh.<layer>`` as :class:`PackedTTLinear`
    (or nn.Linear, the side ``which`` left dense), run by the training form's recurrence
    (:func:`~edgecompress.layers.tensor_train.lstm.run_lstm`), or by torch's fused LSTM kernel
    on the dense matrices for sequences where that costs less (:meth:`fused_weights`);
    nn.LSTM's interface. Inter-layer dropout is off (inference)."""

    freeze_options = ("core_bits",)

    def __init__(self, input_size: int, hidden_size: int, num_layers: int, bias: bool,
                 batch_first: bool, gates: Sequence[dict[str, Any] | None]) -> None:
        """``gates``: per map (``ih.0``, ``hh.0``, ``ih.1``, ...) a PackedTTLinear config, or
        None for a dense map (its shape follows from the sizes)."""
        super().__init__()
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, 0.0
        self.gates = list(gates)
        if len(self.gates) != 2 * num_layers:
            raise ConversionError(f"PackedTTLSTM: {len(self.gates)} gate maps for {num_layers} "
                                  f"layer(s), expected {2 * num_layers}")
        self.ih, self.hh = nn.ModuleList(), nn.ModuleList()
        for k, config in enumerate(self.gates):
            layer, side = divmod(k, 2)
            size = hidden_size if layer or side else input_size
            maps = self.hh if side else self.ih
            maps.append(PackedTTLinear(**config) if config is not None
                        else nn.Linear(size, 4 * hidden_size, bias))

    @classmethod
    def from_trained(cls, layer: TTLSTM, core_bits: int | None = None) -> "PackedTTLSTM":
        maps = [m for pair in zip(layer.ih, layer.hh) for m in pair]
        for k, m in enumerate(maps):
            if not isinstance(m, TTLinear) and type(m) is not nn.Linear:
                # e.g. the dense side of a TT-LSTM that a later method (uniform, s3) quantized:
                # freezing it as nn.Linear would drop that quantization
                raise ConversionError(
                    f"PackedTTLSTM: gate map {'hh' if k % 2 else 'ih'}.{k // 2} is a "
                    f"{type(m).__name__}; a frozen TT-LSTM takes TTLinear or plain nn.Linear "
                    f"gate maps (exclude the LSTM from the method that converted it)")
        packed = [PackedTTLinear.from_trained(m, core_bits) if isinstance(m, TTLinear) else m
                  for m in maps]
        new = cls(layer.input_size, layer.hidden_size, layer.num_layers, layer.bias,
                  layer.batch_first,
                  [m.config() if isinstance(m, PackedTTLinear) else None for m in packed])
        for k, m in enumerate(packed):
            maps = new.hh if k % 2 else new.ih
            maps[k // 2] = m if isinstance(m, PackedTTLinear) else _frozen_linear(m)
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
        to run the step-by-step recurrence with the maps' own plans. Fused when the call has at
        least :data:`FUSED_MIN_STEPS` steps and the dense products, counted at
        1 / :data:`FUSED_SPEEDUP` of their cost, cost less than the plans the recurrence runs
        (``ih`` once on steps x rows rows, ``hh`` on ``rows`` rows per step; costs of
        :meth:`~edgecompress.layers.tensor_train.precontracted.Plan.cost`): always when every
        map runs W anyway (high ranks), and when the maps' factored plans save little."""
        if steps < FUSED_MIN_STEPS:
            return None
        recurrence = dense = 0
        for m, n, times in ((m, n, t) for ih, hh in zip(self.ih, self.hh)
                            for m, n, t in ((ih, steps * rows, 1), (hh, rows, steps))):
            w = dense_plan(m.in_features, m.out_features)
            recurrence += times * (m.fast.plan(n).cost(n) if isinstance(m, PackedTTLinear)
                                   else w.cost(n))
            dense += times * w.cost(n)
        if dense >= FUSED_SPEEDUP * recurrence:
            return None
        weights: list[Tensor] = []
        for ih, hh in zip(self.ih, self.hh):
            weights += [m.weight if isinstance(m, nn.Linear) else m.fast.dense_weight()
                        for m in (ih, hh)]
            weights += [ih.bias, hh.bias] if self.bias else []
        return weights

    def edgecompress_params(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for m in (*self.ih, *self.hh):
            counts = (m.edgecompress_params() if isinstance(m, PackedTTLinear)
                      else {32: sum(t.numel() for t in m.parameters())})
            for bits, n in counts.items():
                out[bits] = out.get(bits, 0) + n
        return out

    def edgecompress_macs(self, inputs: tuple, output: Any) -> dict[str, int]:
        bits = next((m.core_bits for m in self.ih if isinstance(m, PackedTTLinear)), None)
        return {f"w{bits or 32}a32": sequence_macs(self, inputs[0])}

    def macs(self, steps: int, rows: int) -> int:
        return gate_macs(self, steps, rows)


def _frozen_linear(linear: nn.Linear) -> nn.Linear:
    """A copy of a dense gate map with frozen parameters."""
    new = nn.Linear(linear.in_features, linear.out_features, linear.bias is not None)
    with torch.no_grad():
        new.weight.copy_(linear.weight)
        if linear.bias is not None:
            new.bias.copy_(linear.bias)
    return new.requires_grad_(False)


def core_error(trained: TTLinear, packed: PackedTTLinear) -> float:
    """max |W_packed - W_trained| / max |W_trained| of the dense weights the cores represent:
    the relative weight error of 8-bit cores (0 for float ones)."""
    with torch.no_grad():
        w = trained.to_dense()
        return float((packed.layout.dense(packed.float_cores()) - w).abs().max()
                     / w.abs().max())
