"""Proximal quantizers P: maps that pull a value towards {-1, +1}, by a parameter that grows
during training until P is sign. Their derivatives are given for completeness; in a
:class:`~edgecompress.quantizers.QuantizerPair` the gradient uses B' only."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import kernels
from .base import Elementwise, sign
from .elementary import SignSwish


class BinaryRelaxProx(Elementwise):
    """BinaryRelax (Yin et al. 2018), the relaxed projection onto {-1, +1}:

    P(v)  = (v + lam sign(v)) / (1 + lam)
    P'(v) = 1 / (1 + lam)

    lam = 0 is the identity; lam -> infinity gives sign. lam grows over training.

    F = P o B: as P, yes (binaryrelax is P = this, B = identity, so F = P).
    """

    params = ("lam",)

    def __init__(self, lam: float = 0.0) -> None:
        super().__init__(lam=lam)

    def value(self, x: Tensor) -> Tensor:
        return sign(x).mul_(self.lam).add_(x).div_(1 + self.lam)

    def derivative(self, x: Tensor) -> Tensor:
        return torch.full_like(x, 1.0) / (1 + self.lam)


class ProxQuantProx(Elementwise):
    """ProxQuant (Bai et al. 2019), the prox of lam * (L1 distance to {-1, +1}):

    P(v)  = sign(v) + sign(v - sign(v)) * max(|v - sign(v)| - lam, 0)
    P'(v) = 1{|v - sign(v)| > lam}

    lam = 0 is the identity; once lam >= |v - sign(v)|, P(v) = sign(v). lam grows over training.

    F = P o B: as P, yes (proxquant is P = this, B = identity, so F = P).
    """

    params = ("lam",)

    def __init__(self, lam: float = 0.0) -> None:
        super().__init__(lam=lam)

    def value(self, x: Tensor) -> Tensor:
        # sign(r) max(|r| - lam, 0) is r - clamp(r, -lam, lam): the same numbers in fewer passes
        s = sign(x)
        r = x - s
        return r.sub_(r.clamp(min=-self.lam, max=self.lam)).add_(s)

    def derivative(self, x: Tensor) -> Tensor:
        return ((x - sign(x)).abs() > self.lam).to(x.dtype)


class ProxConnectProx(Elementwise):
    """The ProxConnect linear proximal quantizer (Dockhorn et al. 2021; our reading of it, see
    :mod:`edgecompress.quantizers.methods`):

    P^mu(v)  = clip(v + mu sign(v), -1, 1)
    P^mu'(v) = 1{|v + mu sign(v)| <= 1}

    mu = 0 gives clip; mu >= 1 gives sign for every v. mu grows from 0 to 1 over training.

    F = P o B: as P, yes (pc: F = P^mu o identity; bnn++: F = P^mu o SignSwish). Another
    proximal map in its place: ``convert(net, "pc", prox="proxquant")``.
    """

    params = ("mu",)

    def __init__(self, mu: float = 0.0) -> None:
        if mu < 0:
            raise ValueError(f"ProxConnectProx needs mu >= 0, got {mu}")
        super().__init__(mu=mu)

    def value(self, x: Tensor) -> Tensor:
        return sign(x).mul_(self.mu).add_(x).clamp_(-1.0, 1.0)

    def value_after(self, inner: Elementwise, x: Tensor) -> Tensor:
        """P(inner(x)); after SignSwish (bnn++) one pass of the C kernel when it can run."""
        if isinstance(inner, SignSwish) and kernels.signswish_usable(x):
            return kernels.signswish(x, inner.beta.item(), "prox", mu=self.mu.item())
        return super().value_after(inner, x)

    def derivative(self, x: Tensor) -> Tensor:
        return ((x + self.mu * sign(x)).abs() <= 1).to(x.dtype)
