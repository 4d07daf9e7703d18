"""The forward/backward quantizer pair of ProxConnect++ (Lu et al., NeurIPS 2023).

A binarization method is a pair (F, B): the network computes with ``w = F(theta)`` and the latent
weights receive ``dL/dtheta = B'(theta) * dL/dw`` (elementwise), with ``dL/dw`` evaluated at the
forward point. PC++ builds F from a proximal quantizer P and the backward quantizer B as
``F = P o B``; every pair made by :class:`QuantizerPair` has that form by construction.
BinaryConnect's straight-through estimator is simply ``P = sign, B = identity``.

Parameters that follow a schedule during training (mu, beta, lambda) are tensors registered as
buffers, so they are saved in ``state_dict`` and do not trigger recompilation under torch.compile.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from .schedule import Schedule


def sign(x: Tensor) -> Tensor:
    """sign(x) = +1 for x >= 0, -1 for x < 0 (never 0, so every weight is one bit).

    Computed as copysign(1, x + 0): adding +0 turns -0.0 into +0.0, so zeros of either sign map
    to +1. Two arithmetic passes; a comparison producing a bool mask plus ``torch.where`` is
    several times slower on CPU, and this runs on every activation tensor of a W1A1 network.
    """
    if torch.compiler.is_exporting():  # ONNX has no signbit (what copysign lowers to)
        return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)
    y = x + 0.0
    if y.requires_grad:  # out= is not differentiable (the derivative is 0 anyway)
        return torch.copysign(_one(x), y)
    return torch.copysign(_one(x), y, out=y)


def _one(x: Tensor) -> Tensor:
    return torch.ones((), dtype=x.dtype, device=x.device)


def pass_through_unit_interval(x: Tensor, grad: Tensor) -> Tensor:
    """``grad * 1{|x| <= 1}`` in one fused kernel.

    ``aten.hardtanh_backward(grad, x, lo, hi)`` keeps grad where lo < x < hi; with
    hi = -lo = the next representable number above 1 in x's dtype that is exactly |x| <= 1
    (both ends included, so latent weights clipped to +-1 keep receiving gradient).
    """
    if not x.is_floating_point():
        raise TypeError(f"expected a floating-point tensor, got {x.dtype}")
    hi = 1.0 + torch.finfo(x.dtype).eps
    return torch.ops.aten.hardtanh_backward(grad, x, -hi, hi)


class Elementwise(nn.Module):
    """An elementwise map with its derivative: a proximal quantizer P or a backward quantizer B.

    ``value(x)`` is the map, ``derivative(x)`` its derivative (almost everywhere). Calling the
    module returns ``value(x)`` with ``derivative(x)`` as its gradient. Parameters listed in
    ``params`` are float buffers; :meth:`set_param` changes them, and ``schedules`` maps a
    parameter name to the :class:`~edgecompress.quantizers.schedule.Schedule` that drives it
    during training.
    """

    params: tuple[str, ...] = ()
    #: True only for the projection onto {-1, +1} (:class:`Sign`).
    is_sign: bool = False
    #: sign(value(x)) == sign(x) for every x (odd, sign-preserving, value(0) = 0): then
    #: sign o B = sign and a pair with P = sign can skip computing B's value in the forward pass.
    preserves_sign: bool = False

    def __init__(self, **values: float) -> None:
        super().__init__()
        self.schedules: dict[str, "Schedule"] = {}
        for name in self.params:
            self.register_buffer(name, torch.tensor(float(values[name])))

    def set_param(self, name: str, value: float) -> None:
        if name not in self.params:
            raise ValueError(f"{type(self).__name__} has no parameter {name!r}; it has "
                             f"{list(self.params) or 'none'}")
        getattr(self, name).fill_(float(value))

    def value(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def derivative(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def value_after(self, inner: "Elementwise", x: Tensor) -> Tensor:
        """``value(inner.value(x))``; overridden where the composition has a faster form."""
        return self.value(inner.value(x))

    def chain(self, x: Tensor, grad: Tensor) -> Tensor:
        """``grad * derivative(x)``; subclasses override it when they can do it in fewer
        kernels (this runs on every activation tensor in the backward pass)."""
        return grad * self.derivative(x)

    def forward(self, x: Tensor) -> Tensor:
        return _ElementwiseFunction.apply(x, self)

    def extra_repr(self) -> str:
        parts = [f"{n}={getattr(self, n).item():g}" for n in self.params]
        parts += [f"{n}_schedule={s!r}" for n, s in self.schedules.items()]
        return ", ".join(parts)


class _ElementwiseFunction(torch.autograd.Function):
    """Forward ``fn.value(x)``; backward ``fn.chain(x, grad)``. Serves elementary quantizers and
    pairs alike (a pair's value is F = P o B and its chain multiplies by B')."""

    @staticmethod
    def forward(ctx, x: Tensor, fn) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.fn = fn
        return fn.value(x)

    @staticmethod
    def backward(ctx, grad_output: Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return ctx.fn.chain(x, grad_output), None


class QuantizerPair(nn.Module):
    """A PC++ quantizer pair built from a proximal quantizer ``prox`` (P) and a backward
    quantizer ``backward`` (B).

    Forward:  F(x) = P(B(x))
    Backward: dL/dx = B'(x) * dL/dF

    ``hard(x)`` is the deployed value ``sign(x)`` (every pair here binarizes).
    """

    def __init__(self, prox: Elementwise, backward: Elementwise, name: str | None = None) -> None:
        super().__init__()
        self.prox = prox
        self.backward = backward
        self.name = name

    def value(self, x: Tensor) -> Tensor:
        """F(x) without autograd."""
        if self.prox.is_sign and self.backward.preserves_sign:
            return sign(x)  # sign o B = sign: same values, one kernel instead of several
        return self.prox.value_after(self.backward, x)

    def chain(self, x: Tensor, grad: Tensor) -> Tensor:
        """B'(x) * grad."""
        return self.backward.chain(x, grad)

    def forward(self, x: Tensor) -> Tensor:
        return _ElementwiseFunction.apply(x, self)

    def hard(self, x: Tensor) -> Tensor:
        return sign(x)

    def __repr__(self) -> str:
        label = f"{self.name}: " if self.name else ""
        return f"QuantizerPair({label}F = {self.prox!r} o {self.backward!r}, B = {self.backward!r})"
