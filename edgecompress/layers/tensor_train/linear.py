"""TTLinear: a Linear layer whose weight is a tensor train (MPS or MPO), never formed densely.

Forward: y = W x + b with W the TT of :mod:`.layout` (MPO: Novikov et al. 2015; MPS: Murua et
al. 2020, arXiv 2006.05442), computed by contracting x with the cores one at a time in the
cheapest order for the number of rows. Backward: plain autograd through those contractions.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ...errors import ConversionError
from .layout import TTLayout, frobenius_norm, tt_layout


#: how a TT layer converted from a dense one gets its cores
INITS = ("svd", "random")


def check_init(init: Any) -> None:
    if init not in INITS:
        raise ConversionError(f"tt: init must be one of {', '.join(map(repr, INITS))}, "
                              f"got {init!r}")


class TTLinear(nn.Module):
    """y = W x + b with W (``out_features`` x ``in_features``) stored as TT cores.

    Args:
        factorization: (input factors, output factors), e.g. ``((4, 4, 4), (8, 8, 4))`` for
            64 -> 256 (products must be the sizes; MPO needs as many factors on both sides).
            None factorizes automatically (:func:`~.layout.auto_factorization`: factors near 8,
            2-4 per side; MPS gives a prime size a single core, MPO pads it with ones).
        ranks: the bond ranks, an int (the same on every bond, capped at each bond's TT-rank
            bound) or a list with one rank per bond (checked against the bounds).
        mode: ``"mps"`` (cores (r, s, r'), input-side first) or ``"mpo"`` (cores (r, m, n, r')).

    Initialisation matches nn.Linear's default in output variance: its dense weight is
    U(-1/sqrt(N), 1/sqrt(N)), entries of mean square 1/(3N), so on inputs of unit variance each
    output has variance ~1/3 (+ the bias). The cores are drawn N(0, sigma^2) with
    sigma^2 = (1 / (3N prod_k r_k))^(1/D), which gives E[W_ij^2] = 1/(3N) in expectation (W_ij is
    a sum over prod_k r_k bond paths of products of D independent core entries), and then
    scaled together so that ||W||_F^2 = M N / (3N) exactly: a product of a few small random
    matrices has a heavy-tailed norm, and this removes that spread. The bias is nn.Linear's,
    U(-1/sqrt(N), 1/sqrt(N)).

    The parameters are ``cores.0``, ``cores.1``, ... and ``bias``. The summary counts the
    multiply-adds of the contractions actually run (``edgecompress_macs``).
    """

    def __init__(self, in_features: int, out_features: int, factorization: Any = None, *,
                 ranks: int | list[int], mode: str = "mps", bias: bool = True,
                 device: Any = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.layout: TTLayout = tt_layout(in_features, out_features, factorization, ranks, mode)
        self.in_features, self.out_features = in_features, out_features
        factory = {"device": device, "dtype": dtype}
        self.cores = nn.ParameterList([nn.Parameter(torch.empty(s, **factory))
                                       for s in self.layout.core_shapes])
        if bias:
            self.bias: nn.Parameter | None = nn.Parameter(torch.empty(out_features, **factory))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    @property
    def mode(self) -> str:
        return self.layout.mode

    @property
    def ranks(self) -> tuple[int, ...]:
        return self.layout.ranks

    @property
    def factorization(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        return self.layout.factorization

    @property
    def compression_ratio(self) -> float:
        """Dense weight entries / TT core parameters."""
        return self.in_features * self.out_features / self.layout.params

    def reset_parameters(self, bound: float | None = None) -> None:
        """Random cores matching the variance of a dense weight drawn U(-bound, bound) (default
        nn.Linear's bound 1/sqrt(in_features)); the bias U(-bound, bound)."""
        bound = 1 / math.sqrt(self.in_features) if bound is None else bound
        variance = bound ** 2 / 3
        depth = len(self.cores)
        std = (variance / math.prod(self.layout.ranks)) ** (1 / (2 * depth))
        target = math.sqrt(variance * self.in_features * self.out_features)
        with torch.no_grad():
            for core in self.cores:
                core.normal_(0.0, std)
            scale = (target / frobenius_norm(list(self.cores))) ** (1 / depth)
            for core in self.cores:
                core.mul_(scale)
            if self.bias is not None:
                self.bias.uniform_(-bound, bound)

    @classmethod
    def from_linear(cls, linear: nn.Linear, ranks: int | list[int], mode: str = "mps",
                    factorization: Any = None, init: str = "svd") -> "TTLinear":
        """A TTLinear of ``linear``'s shape with its bias. ``init="svd"``: the cores are the
        TT-SVD of ``linear``'s weight (Oseledets 2011) truncated to ``ranks``; at full rank
        (``ranks`` at least each bond's bound) it reproduces ``linear``. ``init="random"``:
        variance-matched random cores (:meth:`reset_parameters`), for training from scratch:
        the low-rank TT-SVD of an untrained random weight keeps only a few percent of its norm,
        and cores that small barely receive a gradient."""
        if not isinstance(linear, nn.Linear):
            raise ConversionError(f"from_linear needs an nn.Linear, got {type(linear).__name__}")
        check_init(init)
        w = linear.weight
        layer = cls(linear.in_features, linear.out_features, factorization, ranks=ranks,
                    mode=mode, bias=linear.bias is not None, device=w.device, dtype=w.dtype)
        if init == "svd":
            layer.load_dense_(w, linear.bias)
        elif linear.bias is not None:
            with torch.no_grad():
                layer.bias.copy_(linear.bias)
        return layer

    def kept_norm(self, weight: Tensor) -> float:
        """||W_TT||_F / ||weight||_F: how much of a dense ``weight`` this layer's cores keep
        (1 at full rank after :meth:`load_dense_`)."""
        with torch.no_grad():
            total = weight.detach().double().norm()
            kept = frobenius_norm([c.detach().double() for c in self.cores])
            return float(kept / total) if total > 0 else 1.0

    @torch.no_grad()
    def load_dense_(self, weight: Tensor, bias: Tensor | None = None) -> "TTLinear":
        """Set the cores to the TT-SVD of ``weight`` (out x in; computed in float64) and the
        bias to ``bias``; returns self."""
        if tuple(weight.shape) != (self.out_features, self.in_features):
            raise ConversionError(f"weight of shape {tuple(weight.shape)} does not fit "
                                  f"TTLinear({self.in_features} -> {self.out_features})")
        for core, value in zip(self.cores, self.layout.decompose(weight.detach().double())):
            core.copy_(value)
        if bias is not None and self.bias is not None:
            self.bias.copy_(bias)
        return self

    def to_dense(self) -> Tensor:
        """The (out_features, in_features) weight the cores represent (for tests and
        inspection; the forward pass never builds it)."""
        return self.layout.dense(list(self.cores))

    def contract(self, x: Tensor, order: str | None = None) -> Tensor:
        """W x over the last dimension of ``x`` (no bias) in contraction ``order`` (one of
        ``layout.orders``; None: the cheapest for the number of rows)."""
        if x.shape[-1] != self.in_features:
            raise ValueError(f"TTLinear({self.in_features} -> {self.out_features}) got an input "
                             f"whose last dimension is {x.shape[-1]}, not {self.in_features}")
        lead = x.shape[:-1]
        rows = x.reshape(-1, self.in_features)
        order = self.layout.best_order(rows.shape[0]) if order is None else order
        y = self.layout.contract(rows, list(self.cores), order)
        return y.reshape(*lead, self.out_features)

    def forward(self, x: Tensor) -> Tensor:
        y = self.contract(x)
        return y + self.bias if self.bias is not None else y

    def macs(self, rows: int) -> int:
        """Multiply-adds of W x for ``rows`` rows in the order forward runs (bias excluded)."""
        return self.layout.flops(self.layout.best_order(rows), rows) // 2

    def edgecompress_params(self) -> dict[int, int]:
        return {32: sum(p.numel() for p in self.parameters())}

    def edgecompress_macs(self, inputs: tuple, output: Tensor) -> dict[str, int]:
        samples = output.shape[0] if output.dim() > 1 else 1
        return {"w32a32": self.macs(output.shape[:-1].numel()) // samples}

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"mode={self.mode!r}, factorization={self.factorization}, ranks={self.ranks}, "
                f"bias={self.bias is not None}")
