"""Elementary quantizers: sign and the backward quantizers B of the binarization literature.

Each one gives its value and its derivative. Used as a backward quantizer B inside a
:class:`~edgecompress.quantizers.QuantizerPair`, only the derivative B' reaches the gradient;
the value enters the forward pass through F = P o B.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import kernels
from .base import Elementwise, pass_through_unit_interval, sign


class Sign(Elementwise):
    """sign(x): +1 for x >= 0, -1 otherwise; derivative 0 almost everywhere.

    It is the proximal map of the indicator of {-1, +1} (the projection onto it), so as P it
    makes every pair end in exact binary values: BinaryConnect is P = Sign, B = Identity.

    F = P o B: as P, yes for any B (F = sign o B); used alone it is the pair (sign, identity).
    """

    is_sign = True
    preserves_sign = True

    def value(self, x: Tensor) -> Tensor:
        return sign(x)

    def derivative(self, x: Tensor) -> Tensor:
        return torch.zeros_like(x)


class Identity(Elementwise):
    """B(x) = x, B'(x) = 1: the straight-through estimator (BinaryConnect,
    Courbariaux et al. 2015).

    F = P o B: as B, yes: every pair (P, Identity) has F = P (bc, binaryrelax, proxquant, pc).
    """

    preserves_sign = True

    def value(self, x: Tensor) -> Tensor:
        return x

    def derivative(self, x: Tensor) -> Tensor:
        return torch.ones_like(x)

    def chain(self, x: Tensor, grad: Tensor) -> Tensor:
        return grad


class Clip(Elementwise):
    """B(x) = clip(x, -1, 1) (hardtanh), B'(x) = 1{|x| <= 1}: BNN's clipped straight-through
    estimator (Hubara et al. 2016).

    F = P o B: as B, yes; with P = sign, F = sign o clip = sign (bnn).
    """

    preserves_sign = True

    def value(self, x: Tensor) -> Tensor:
        return x.clamp(-1.0, 1.0)

    def derivative(self, x: Tensor) -> Tensor:
        # the mask as a number (torch.where on CPU is several times slower than this cast)
        return (x.abs() <= 1).to(x.dtype)

    def chain(self, x: Tensor, grad: Tensor) -> Tensor:
        return pass_through_unit_interval(x, grad)


class SignSwish(Elementwise):
    """SignSwish of BNN+ (Darabi et al. 2018, arXiv 1812.11800):

    SS_beta(x)  = 2 sigmoid(beta x) (1 + beta x (1 - sigmoid(beta x))) - 1
    SS_beta'(x) = beta (2 - beta x tanh(beta x / 2)) / (1 + cosh(beta x))

    beta > 0 (default 5); SS_beta -> sign as beta -> infinity. It overshoots slightly beyond
    +-1 (about 1.1) before settling back.

    F = P o B: as B, yes; with P = sign, F = sign o SS = sign (bnn+), with P = ProxConnect,
    F = P^mu o SS (bnn++, our reading of the spec).
    """

    params = ("beta",)
    preserves_sign = True

    def __init__(self, beta: float = 5.0) -> None:
        if beta <= 0:
            raise ValueError(f"SignSwish needs beta > 0, got {beta}")
        super().__init__(beta=beta)

    def value(self, x: Tensor) -> Tensor:
        if kernels.signswish_usable(x):
            return kernels.signswish(x, self.beta.item(), "value")
        return self.value_reference(x)

    def value_reference(self, x: Tensor) -> Tensor:
        """:meth:`value` in PyTorch operations (what torch.compile and non-float32 tensors use;
        the reference of the one-pass C kernel :func:`edgecompress.kernels.signswish`)."""
        bx = self.beta * x
        s = torch.sigmoid(bx)
        return s.neg().add_(1.0).mul_(bx).add_(1.0).mul_(s).mul_(2.0).sub_(1.0)

    def derivative(self, x: Tensor) -> Tensor:
        """Computed as 2 beta s (1 - s) (2 + beta x (1 - 2 s)), s = sigmoid(beta x): the same
        function as the formula above (differentiate SS), without cosh, tanh or a division."""
        bx = self.beta * x
        s = torch.sigmoid(bx)
        out = s.mul(-2.0).add_(1.0).mul_(bx).add_(2.0)  # 2 + beta x (1 - 2 s)
        return out.mul_(s.mul(s).neg_().add_(s)).mul_(2.0 * self.beta)  # * 2 beta s (1 - s)

    def chain(self, x: Tensor, grad: Tensor) -> Tensor:
        """``grad * derivative(x)``, in one pass of the C kernel when it can run (this runs on
        every weight, and in W1A1 on every activation, at every step)."""
        if kernels.signswish_usable(x) and grad.dtype == torch.float32:
            return kernels.signswish(x, self.beta.item(), "grad", grad=grad)
        return self.derivative(x).mul_(grad)


class ApproxSign(Elementwise):
    """ApproxSign of Bi-Real Net (Liu et al. 2018): the piecewise quadratic

    value:      2x - x|x| for |x| <= 1, sign(x) otherwise
    derivative: 2 - 2|x| for |x| <= 1, 0 otherwise

    F = P o B: as B, yes; e.g. ``pair("sign", "approxsign")`` is Bi-Real's sign with this
    backward, or ``method_pair("bnn", backward="approxsign")``.
    """

    preserves_sign = True

    def value(self, x: Tensor) -> Tensor:
        # 2c - c|c| with c = clamp(x, -1, 1): x's own polynomial inside, sign(x) = c outside;
        # the same floats as torch.where(|x| <= 1, 2x - x|x|, sign(x)) (for finite x), several
        # times faster on CPU
        c = x.clamp(-1.0, 1.0)
        return 2 * c - c * c.abs()

    def derivative(self, x: Tensor) -> Tensor:
        # 2 - 2|x| where |x| <= 1, else 0: the negative values clamped (the same floats as the
        # torch.where form, several times faster on CPU)
        return (2 - 2 * x.abs()).clamp_min(0.0)
