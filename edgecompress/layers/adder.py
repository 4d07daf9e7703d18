"""AdderNet Linear and Conv2d layers: the negative L1 distance between inputs and weights,
with the paper's gradient rules (Chen, Wang, Xu, Shi, Xu, Tian, Xu, "AdderNet: Do We Really
Need Multiplications in Deep Learning?", CVPR 2020). The baseline the EuclidNet papers compare
with (:mod:`edgecompress.layers.euclid`).

Forward, for an output unit j over its inputs i (a row of a linear layer, a patch of a
convolution):

    y_j = -sum_i |x_i - w_ij| + b_j

Backward (the published rules, not the derivative of the forward):

    dy_j/dw_ij = x_i - w_ij                        full-precision gradient instead of sign(x - w)
    dy_j/dx_i  = HardTanh(w_ij - x_i) = clamp(w_ij - x_i, -1, 1)   instead of sign(w - x)

and the adaptive learning-rate scaling of each layer's weight gradient G (k = its number of
elements, eta a hyper-parameter):

    G <- eta * sqrt(k) / ||G||_2 * G

applied by :func:`adaptive_scale` in the backward of the weight (an identity in the forward),
so ``weight.grad`` already holds the scaled gradient and any optimizer works; it is on by
default (``eta=0.2``) and ``eta=None`` turns it off. The norm is that of the gradient of one
backward pass through the layer (a layer called twice in one graph is scaled once, on the sum).

Cost. L1 has no GEMM form, so the fast path computes the distances without ever materializing
the N x C_out x K x L difference tensor. A batched float32 CPU convolution of the geometry the
C kernels take (1x1 / 3x3, stride 1 / 2, padding 0 / 1, groups 1, no dilation: every ResNet
shape) runs them, in training and evaluation: the forward is
:func:`~edgecompress.kernels.conv2d_direct` with ``op="l1"`` and the input gradient
:func:`~edgecompress.kernels.adder_input_grad`, both vectorized along pixels. Elsewhere
(other geometry, other dtype or device, no compiled library, under torch.compile or an export,
which see torch operations) the forward is ``torch.cdist(p=1)`` over the unfolded patches and
the input gradient runs in row chunks of bounded size (``_CHUNK_ELEMENTS`` differences at a
time). On both paths the weight gradient *is* a GEMM (sum_r g_rj (x_ri - w_ij) = (g^T X)_ji -
w_ij sum_r g_rj; on the kernel path torch's convolution weight gradient). The two paths sum in
different orders: equal to float rounding. See benchmarks/euclidnet_speed.py for the cost. :func:`adder_linear_reference` /
:func:`adder_conv2d_reference` are the naive forms that materialize every difference (and
produce the same published gradients): slow, obviously correct, for tests.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

from .. import kernels
from ..errors import ConversionError
from .base import CompressedLayer
from .distance import DistanceConv2d, conv_patches, linear_like, naive_conv2d

DEFAULT_ETA = 0.2
_CHUNK_ELEMENTS = 2 ** 19  # differences held at once by the input gradient (~2 MB in float32)


def check_eta(eta: Any) -> float | None:
    """``eta`` as a positive float, or None (no adaptive scaling); else a ConversionError."""
    if eta is None:
        return None
    if (isinstance(eta, bool) or not isinstance(eta, (int, float)) or not math.isfinite(eta)
            or eta <= 0):
        raise ConversionError(f"eta (AdderNet's adaptive learning-rate scale) must be a "
                              f"positive number or None (no scaling), got {eta!r}")
    return float(eta)


# --- the gradient rules --------------------------------------------------------------------------

class _AdaptiveScale(torch.autograd.Function):
    """Identity forward; backward G -> eta sqrt(k) / ||G||_2 G (G = 0 stays 0)."""

    @staticmethod
    def forward(ctx: Any, weight: Tensor, eta: float) -> Tensor:
        ctx.eta = eta
        return weight.view_as(weight)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        norm = torch.linalg.vector_norm(grad)
        scale = torch.where(norm > 0, ctx.eta * math.sqrt(grad.numel()) / norm, 1.0)
        return grad * scale, None


def adaptive_scale(weight: Tensor, eta: float | None) -> Tensor:
    """``weight`` unchanged, whose gradient is rescaled to eta sqrt(k) / ||G||_2 G (AdderNet's
    adaptive learning rate); ``eta=None`` returns ``weight`` itself."""
    return weight if eta is None else _AdaptiveScale.apply(weight, eta)


class _NegativeL1(torch.autograd.Function):
    """y[g, r, j] = -sum_i |x[g, r, i] - w[g, j, i]| with AdderNet's gradients, for rows x
    (groups, R, K) and weights w (groups, J, K)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, w: Tensor) -> Tensor:
        ctx.save_for_backward(x, w)
        return -torch.cdist(x, w, p=1)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        x, w = ctx.saved_tensors
        grad_x = grad_w = None
        if ctx.needs_input_grad[1]:  # sum_r g_rj (x_ri - w_ji): a GEMM
            grad_w = grad.transpose(1, 2) @ x - w * grad.sum(1).unsqueeze(-1)
        if ctx.needs_input_grad[0]:  # sum_j g_rj clamp(w_ji - x_ri, -1, 1), rows in chunks
            grad_x = torch.empty_like(x)
            rows = max(1, _CHUNK_ELEMENTS // (w.shape[1] * w.shape[2]))
            for start in range(0, x.shape[1], rows):
                part = slice(start, start + rows)
                diff = (w.unsqueeze(1) - x[:, part].unsqueeze(2)).clamp_(-1, 1)  # (g, r, J, K)
                grad_x[:, part] = (grad[:, part].unsqueeze(2) @ diff).squeeze(2)
        return grad_x, grad_w


class _DirectL1Conv(torch.autograd.Function):
    """-sum |x - w| over each patch (no bias) by the C kernels, with AdderNet's gradients:
    dx by :func:`~edgecompress.kernels.adder_input_grad`, dw = sum g (x - w) as torch's
    convolution weight gradient (g^T X) minus w sum g."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, w: Tensor, stride: tuple[int, int],
                padding: tuple[int, int]) -> Tensor:
        ctx.save_for_backward(x, w)
        ctx.geometry = stride, padding
        return kernels.conv2d_direct(x, w, None, stride, padding, op="l1")

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:
        x, w = ctx.saved_tensors
        stride, padding = ctx.geometry
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = kernels.adder_input_grad(x, w, grad, stride, padding)
        if ctx.needs_input_grad[1]:
            grad_w = (torch.nn.grad.conv2d_weight(x, w.shape, grad, stride, padding)
                      - w * grad.sum((0, 2, 3)).view(-1, 1, 1, 1))
        return grad_x, grad_w, None, None


def _direct_geometry(x: Tensor, weight: Tensor, stride: Any, padding: Any, dilation: Any,
                     groups: int) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """(stride, padding) when the C kernels compute this adder convolution: a batched float32
    CPU input and weight of a geometry they take, the library loaded, and no torch.compile /
    export trace (those see the PyTorch path); else None."""
    if x.dim() != 4 or weight.dtype != torch.float32 or isinstance(padding, str):
        return None
    stride, padding = _pair(stride), _pair(padding)
    if not kernels.conv2d_direct_supports(weight.shape, stride, padding, _pair(dilation), groups) \
            or torch.compiler.is_compiling() or kernels.exporting() \
            or not kernels.conv2d_direct_usable(x):
        return None
    return stride, padding


def _published_gradients(diff: Tensor, x: Tensor, w: Tensor) -> Tensor:
    """-|diff| (diff = x - w, broadcast) whose autograd gradients are AdderNet's:
    d/dw = x - w and d/dx = clamp(w - x, -1, 1), elementwise before any sum."""
    surrogate = (-0.5 * (x.detach() - w).square()
                 + (w.detach() - x.detach()).clamp(-1, 1) * x)
    return -diff.detach().abs() + surrogate - surrogate.detach()


# --- functional forms ----------------------------------------------------------------------------

def adder_linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """y = -sum_i |x_i - w_ji| + b_j with AdderNet's gradients (fast path); ``x`` is
    (..., in_features), ``weight`` (out_features, in_features)."""
    rows = x.reshape(1, -1, x.shape[-1])
    y = _NegativeL1.apply(rows, weight.unsqueeze(0)).reshape(*x.shape[:-1], weight.shape[0])
    return y if bias is None else y + bias


def adder_conv2d(x: Tensor, weight: Tensor, bias: Tensor | None = None, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1) -> Tensor:
    """The AdderNet convolution (arguments as ``F.conv2d``; padding pads zeros), fast path:
    -sum over each patch of |x - w_j| + b_j with AdderNet's gradients (by the C kernels where
    they take the call, see the module docstring)."""
    unbatched = x.dim() == 3
    if unbatched:
        x = x.unsqueeze(0)
    geometry = _direct_geometry(x, weight, stride, padding, dilation, groups)
    if geometry is not None:
        y = _DirectL1Conv.apply(x, weight, *geometry)
    else:
        y = _negative_l1_conv(x, weight, stride, padding, dilation, groups)
    if bias is not None:
        y = y + bias.view(1, -1, 1, 1)
    return y.squeeze(0) if unbatched else y


def _negative_l1_conv(x: Tensor, weight: Tensor, stride: Any, padding: Any, dilation: Any,
                      groups: int) -> Tensor:
    """-sum |x - w| over each patch of a batched x (no bias) by the PyTorch path: cdist over
    the unfolded patches, with AdderNet's gradients (:class:`_NegativeL1`)."""
    patches, out_hw = conv_patches(x, tuple(weight.shape[2:]), stride, padding, dilation,
                                   groups)
    n, _, k, length = patches.shape
    rows = patches.permute(1, 0, 3, 2).reshape(groups, n * length, k)  # (g, N L, K)
    w = weight.reshape(groups, weight.shape[0] // groups, k)  # (g, out / g, K)
    y = _NegativeL1.apply(rows, w)  # (g, N L, out / g)
    return y.unflatten(1, (n, length)).permute(1, 0, 3, 2).reshape(n, -1, *out_hw)


def adder_linear_reference(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """Naive :func:`adder_linear`: every x_i - w_ji materialized, the same gradients."""
    xi = x.unsqueeze(-2)  # (..., 1, in)
    y = _published_gradients(xi - weight, xi, weight).sum(-1)
    return y if bias is None else y + bias


def adder_conv2d_reference(x: Tensor, weight: Tensor, bias: Tensor | None = None,
                           stride: Any = 1, padding: Any = 0, dilation: Any = 1,
                           groups: int = 1) -> Tensor:
    """Naive :func:`adder_conv2d`: pad x with zeros, unfold its patches and materialize every
    difference (N x out x K x L of them), with the same gradients."""
    return naive_conv2d(x, weight, bias, stride, padding, dilation, groups,
                        lambda patches, w: _published_gradients(patches - w, patches, w))


# --- layers --------------------------------------------------------------------------------------

class _AdderLayer(CompressedLayer):
    """The adaptive learning-rate scale ``eta`` and the operation kind of the adder layers."""

    op_kind = "abs-diff"  # type: ignore[assignment]
    weight: Tensor

    def quantized_weight(self) -> Tensor:
        """The weight the forward pass uses: the float weight here; the quantized subclasses
        (:mod:`edgecompress.layers.uniform`) quantize it."""
        return self.weight

    def quantized_input(self, x: Tensor) -> Tensor:
        """The input the forward pass uses (quantized by the quantized subclasses)."""
        return x

    def _scaled_weight(self) -> Tensor:
        """The forward's weight, whose gradient is AdderNet's adaptively scaled one (the scale
        acts on the gradient of the weight the distances use, the quantized one if any)."""
        return adaptive_scale(self.quantized_weight(), self.eta)

    def _extra_eta(self) -> str:
        return f"eta={self.eta}"


class AdderLinear(_AdderLayer):
    """Linear layer computing y_j = -sum_i |x_i - w_ji| + b_j with AdderNet's gradients and
    adaptive learning-rate scaling ``eta`` (None: off; see the module docstring). Same
    parameters and initialisation as nn.Linear."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 eta: float | None = DEFAULT_ETA, device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.eta = check_eta(eta)
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(out_features, in_features, **factory))
        self.bias = nn.Parameter(torch.empty(out_features, **factory)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.Linear.reset_parameters(self)  # type: ignore[arg-type]  # nn.Linear's init

    def forward(self, x: Tensor) -> Tensor:
        return adder_linear(self.quantized_input(x), self._scaled_weight(), self.bias)

    def reference_forward(self, x: Tensor) -> Tensor:
        """The same output and gradients by the naive form (slow; for checks)."""
        return adder_linear_reference(self.quantized_input(x), self._scaled_weight(), self.bias)

    def edgecompress_macs(self, inputs: tuple, output: Tensor) -> dict[str, int]:
        rows = output.shape[1:-1].numel()
        return {f"w{self.weight_bits}a{self.input_bits}":
                rows * self.in_features * self.out_features}

    @classmethod
    def from_float(cls, linear: nn.Linear, *, eta: float | None = DEFAULT_ETA) -> "AdderLinear":
        """An adder layer with ``linear``'s weights."""
        return linear_like(cls, linear, eta=eta)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, {self._extra_eta()}")


class AdderConv2d(_AdderLayer, DistanceConv2d):
    """2-D convolution computing, per output channel j and patch x, y_j = -sum |x - w_j| + b_j
    with AdderNet's gradients and adaptive learning-rate scaling ``eta`` (None: off; see the
    module docstring). Arguments as nn.Conv2d (see
    :class:`~edgecompress.layers.distance.DistanceConv2d`)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", *, eta: float | None = DEFAULT_ETA,
                 device: Any = None, dtype: Any = None) -> None:
        DistanceConv2d.__init__(self, in_channels, out_channels, kernel_size, stride, padding,
                                dilation, groups, bias, padding_mode, device=device,
                                dtype=dtype)
        self.eta = check_eta(eta)

    def forward(self, x: Tensor) -> Tensor:
        x, padding = self._padded(self.quantized_input(x))
        return adder_conv2d(x, self._scaled_weight(), self.bias, self.stride, padding,
                            self.dilation, self.groups)

    def reference_forward(self, x: Tensor) -> Tensor:
        """The same output and gradients by the naive form (slow; for checks)."""
        x, padding = self._padded(self.quantized_input(x))
        return adder_conv2d_reference(x, self._scaled_weight(), self.bias, self.stride,
                                      padding, self.dilation, self.groups)

    @classmethod
    def from_float(cls, conv: nn.Conv2d, *, eta: float | None = DEFAULT_ETA) -> "AdderConv2d":
        """An adder layer with ``conv``'s weights and geometry."""
        return cls._like(conv, eta=eta)  # type: ignore[return-value]

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self._extra_eta()}"
