"""The forward/backward quantizer pair of ProxConnect++ (Lu et al., NeurIPS 2023).

A binarization method is a pair (F, B): the network computes with ``w = F(theta)`` and the latent
weights receive ``dL/dtheta = B'(theta) * dL/dw`` (elementwise), where ``dL/dw`` is evaluated at the
forward point. BinaryConnect, BNN and their successors are all such pairs; the straight-through
estimator is simply ``B = identity``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class _PairFunction(torch.autograd.Function):
    """Autograd glue: forward with ``pair.quantize``, backward with ``pair.backward_derivative``."""

    @staticmethod
    def forward(ctx, x: Tensor, pair: "QuantizerPair") -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.pair = pair
        return pair.quantize(x)

    @staticmethod
    def backward(ctx, grad_output: Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad_output * ctx.pair.backward_derivative(x), None


class QuantizerPair(nn.Module):
    """Base class: subclasses define the forward map F and the derivative B' of the backward map.

    ``quantize(x)`` is F(x); ``backward_derivative(x)`` is B'(x). Calling the module applies F in the
    forward pass and multiplies incoming gradients by B'(x) in the backward pass.
    """

    def quantize(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def backward_derivative(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return _PairFunction.apply(x, self)

    def hard(self, x: Tensor) -> Tensor:
        """The deployed (hard binary) value of ``x``: ``sign(x)`` with sign(0) = +1."""
        return sign(x)


def sign(x: Tensor) -> Tensor:
    """sign(x) = +1 for x >= 0, -1 for x < 0 (never 0, so every weight is one bit)."""
    return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))
