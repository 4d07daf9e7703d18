"""Shared by the distance-layer tests (Euclid, adder): fast form vs naive form, values and
gradients, and generated conv geometries."""

from __future__ import annotations

import torch
from hypothesis import strategies as st
from torch import nn

#: the padding arguments every distance conv must handle as nn.Conv2d does
PADDING_OPTIONS = [("same", "zeros"), ("valid", "zeros"), (1, "reflect"), ((2, 1), "replicate"),
                   (1, "circular")]


def _grads(fn, *tensors: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """fn's output and the gradients of a fixed random projection of it w.r.t. ``tensors``."""
    leaves = [t.detach().clone().requires_grad_(True) for t in tensors]
    y = fn(*leaves)
    g = torch.randn(y.shape, dtype=y.dtype, generator=torch.Generator().manual_seed(0))
    return y.detach(), list(torch.autograd.grad((y * g).sum(), leaves))


def assert_same_values_and_grads(fast, naive, *tensors: torch.Tensor) -> None:
    y_fast, g_fast = _grads(fast, *tensors)
    y_naive, g_naive = _grads(naive, *tensors)
    torch.testing.assert_close(y_fast, y_naive, rtol=1e-10, atol=1e-10)
    for a, b in zip(g_fast, g_naive):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def check_padding_option(layer_class, padding, padding_mode) -> None:
    """A distance conv of ``layer_class`` with this padding gives nn.Conv2d's output shape and
    the naive form's values and gradients (float64)."""
    torch.manual_seed(1)
    layer = layer_class(4, 6, (3, 2), padding=padding, dilation=(1, 2), groups=2,
                        padding_mode=padding_mode).double()
    x = torch.randn(2, 4, 6, 7, dtype=torch.float64, requires_grad=True)
    y, y_ref = layer(x), layer.reference_forward(x)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    assert y.shape == nn.Conv2d(4, 6, (3, 2), padding=padding, dilation=(1, 2), groups=2,
                                padding_mode=padding_mode)(x.float()).shape
    g = torch.randn_like(y)
    grads = torch.autograd.grad((y * g).sum(), [x, layer.weight, layer.bias])
    grads_ref = torch.autograd.grad((y_ref * g).sum(), [x, layer.weight, layer.bias])
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@st.composite
def conv_cases(draw, theta=st.just(1.0)):
    """Conv geometry (groups, kernel, stride, dilation, padding, ragged sizes) and a theta."""
    groups = draw(st.integers(1, 3))
    cin, cout = groups * draw(st.integers(1, 3)), groups * draw(st.integers(1, 3))
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 2)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    size = [d * (k - 1) + 1 - 2 * p for k, d, p in zip(kernel, dilation, padding)]
    hw = [max(1, s) + draw(st.integers(0, 4)) for s in size]
    return dict(n=draw(st.integers(1, 2)), cin=cin, cout=cout, hw=hw, kernel=kernel,
                options=dict(stride=stride, padding=padding, dilation=dilation, groups=groups),
                bias=draw(st.booleans()), theta=draw(theta), seed=draw(st.integers(0, 2**16)))
