"""Sign-forward quantizer pairs: BinaryConnect and BNN."""

from __future__ import annotations

from torch import Tensor

from .base import QuantizerPair, sign


class SignSTE(QuantizerPair):
    """BinaryConnect (Courbariaux et al., 2015): the straight-through estimator.

    Forward:  F(x) = sign(x)   (+1 for x >= 0, -1 otherwise)
    Backward: B(x) = x, so dL/dx = dL/dF

    Not of the form F = P o B with a proper proximal map (F is sign, B identity).
    """

    def quantize(self, x: Tensor) -> Tensor:
        return sign(x)

    def backward_derivative(self, x: Tensor) -> Tensor:
        return x.new_ones(())

    def __repr__(self) -> str:
        return "SignSTE()"


class SignClipSTE(QuantizerPair):
    """BNN (Hubara et al., 2016): sign forward, clipped straight-through backward.

    Forward:  F(x) = sign(x)
    Backward: B(x) = clip(x, -1, 1), so dL/dx = dL/dF * 1{|x| <= 1}
    """

    def quantize(self, x: Tensor) -> Tensor:
        return sign(x)

    def backward_derivative(self, x: Tensor) -> Tensor:
        return (x.abs() <= 1).to(x.dtype)

    def __repr__(self) -> str:
        return "SignClipSTE()"
