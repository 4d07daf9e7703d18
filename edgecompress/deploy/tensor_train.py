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
from torch import Tensor

from ..errors import ConversionError
from ..layers import TTLSTM, TTLinear
from ..layers.tensor_train.layout import tt_layout
from ..layers.tensor_train.precontracted import Precontracted, precontract
from .lstm import PackedGateLSTM
from .packed import PackedLayer, register_packed

#: core widths ``core_bits`` accepts (None: float32)
CORE_BITS = (None, 8)

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

    @property
    def weight_bits(self) -> int:
        """The cores' width (32: float): the precision of this layer's products."""
        return self.core_bits or 32

    def dense_weight(self) -> Tensor:
        """W (out x in), for torch's fused LSTM kernel (formed on first use)."""
        return self.fast.dense_weight()

    def plan_cost(self, rows: int) -> int:
        """The counted cost of the plan that ``rows`` rows run."""
        return self.fast.plan(rows).cost(rows)

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
class PackedTTLSTM(PackedGateLSTM):
    """Frozen TTLSTM: a :class:`~edgecompress.deploy.lstm.PackedGateLSTM` whose TT gate maps
    are :class:`PackedTTLinear` (``core_bits`` goes to them); the side ``which`` left dense is
    an nn.Linear, or the packed form of the method that quantized it (e.g. uniform, s3)."""

    freeze_options = ("core_bits",)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "PackedTTLSTM":
        """Files written before the gate maps named their class hold a bare PackedTTLinear
        config per TT map."""
        gates = [g if g is None or set(g) == {"class", "config"}
                 else {"class": PackedTTLinear.__name__, "config": g} for g in config["gates"]]
        return cls(**{**config, "gates": gates})


def core_error(trained: TTLinear, packed: PackedTTLinear) -> float:
    """max |W_packed - W_trained| / max |W_trained| of the dense weights the cores represent:
    the relative weight error of 8-bit cores (0 for float ones)."""
    with torch.no_grad():
        w = trained.to_dense()
        return float((packed.layout.dense(packed.float_cores()) - w).abs().max()
                     / w.abs().max())
