"""Packed distance layers: the inference form of EuclidNet's squared-distance layers
(``PackedEuclidLinear`` / ``PackedEuclidConv2d``) and of AdderNet's L1 layers
(``PackedAdderLinear`` / ``PackedAdderConv2d``); the quantized EuclidNet's and AdderNet's
packed layers (:mod:`edgecompress.deploy.uniform`) share the Euclid part, :class:`PackedEuclid`,
and the adder part, :class:`PackedAdder` and its forward passes.

Euclid: the GEMM form of the training layer, x.w - theta/2 (||x||^2 + ||w_j||^2) + b, with the
per-channel b_j - theta/2 ||w_j||^2 computed once (on freezing or loading) instead of on every
call; the same expressions otherwise, so the frozen layer gives exactly the training form's
eval-mode output.

Adder: -sum_i |x_i - w_ij| + b_j by the direct C kernel
(:func:`~edgecompress.kernels.conv2d_direct` with ``op="l1"``; a linear layer runs it as a 1x1
convolution whose pixels are its rows) where it takes the geometry (1x1 / 3x3, stride 1 / 2,
padding 0 / 1, groups 1), else, and when the C kernels are not built or under torch.compile /
export, the training layer's PyTorch path. The two sum in different orders: close, not equal.

Weights and bias are float32 buffers. A following BatchNorm is never folded into a distance
layer (``folds_affine = False``): its output is not linear in its weights, and folding a scale
into the weights would change the distances; the BatchNorm stays a module.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .. import kernels
from ..layers.adder import AdderConv2d, AdderLinear, adder_conv2d, adder_linear
from ..layers.euclid import (EuclidConv2d, EuclidConvPlan, EuclidLinear, euclid_conv2d,
                             euclid_linear, shifted_bias)
from .packed import PackedConv2dShape, PackedLayer, PackedLinearShape, register_packed


class _PackedDistance(PackedLayer):
    """Float weight and bias buffers copied from the training layer; no BatchNorm folding."""

    folds_affine = False

    def _init_weights(self, weight_shape: tuple[int, ...], has_bias: bool) -> None:
        self.out_features = weight_shape[0]
        self.k = int(torch.Size(weight_shape[1:]).numel())
        self.register_buffer("weight", torch.zeros(weight_shape))
        self.register_buffer("bias", torch.zeros(weight_shape[0]) if has_bias else None)

    @staticmethod
    def _options(layer: nn.Module) -> dict[str, Any]:
        if getattr(layer, "padding_mode", "zeros") != "zeros":
            raise ValueError(f"{type(layer).__name__}: padding_mode={layer.padding_mode!r} "
                             f"cannot be frozen; only 'zeros'")
        return dict(bias=layer.bias is not None)

    def _config(self) -> dict[str, Any]:
        return dict(bias=self.bias is not None)

    def _fill_from(self, layer: nn.Module) -> None:
        with torch.no_grad():
            self.weight.copy_(layer.weight)
            if layer.bias is not None:
                self.bias.copy_(layer.bias)
        self.prepare()

    def prepare(self) -> None:
        # the weights contiguous, as the training form holds them (not a buffer: freeze's
        # channels-last conversion leaves it alone; torch's convolution rounds differently
        # with channels-last weights)
        self._weight = self.weight.detach().contiguous()

    def forward_weight(self) -> Tensor:
        """The weights the forward pass uses (contiguous)."""
        return self._weight

    def edgecompress_params(self) -> dict[int, int]:
        """Float parameters (weight and bias are buffers here, so summary asks)."""
        return {32: sum(t.numel() for t in (self.weight, self.bias) if t is not None)}

    def extra_repr(self) -> str:
        return f"{self.config()}"


class PackedEuclid(PackedLayer):
    """The Euclid part of a packed layer: ``theta`` (a buffer) and, computed by :meth:`prepare`,
    the GEMM's bias b_j - theta/2 ||w_j||^2 of the weights the forward pass uses (the
    subclass's ``forward_weight()``) and theta as a Python float (no tensor operation per
    call); counted as squared differences at theta = 1 (below, the blend still needs the
    products)."""

    folds_affine = False

    def _init_theta(self) -> None:
        self.register_buffer("theta", torch.ones(()))

    def _fill_theta(self, layer: nn.Module) -> None:
        with torch.no_grad():
            self.theta.copy_(layer.theta)

    def prepare(self) -> None:
        super().prepare()
        self._theta = float(self.theta)
        self._shift = self._gemm_shift()

    def _gemm_shift(self) -> Tensor:
        """b_j - theta/2 ||w_j||^2 summed as the training layer's forward sums it (torch's
        reduction, as :func:`~edgecompress.layers.euclid.shifted_bias`)."""
        return shifted_bias(self.bias, self.forward_weight(),  # type: ignore[attr-defined]
                            self.theta)

    @property
    def op_kind(self) -> str:  # type: ignore[override]
        return "squared-diff" if self.theta.item() == 1.0 else "mac"


class EuclidConvShift:
    """For the packed Euclid convolutions: the shift summed in the order of the C kernel that
    computes it in the training layer's forward pass
    (:func:`~edgecompress.kernels.euclid_shift_reference`), so a frozen layer passes it
    precomputed and still equals the training layer bit for bit; and the forward pass, through
    an :class:`~edgecompress.layers.euclid.EuclidConvPlan` per input shape where it runs (the
    same floats as :func:`~edgecompress.layers.euclid.euclid_conv2d`, which runs elsewhere)."""

    process_local = ("_plans",)

    def prepare(self) -> None:
        super().prepare()  # type: ignore[misc]
        self._plans: dict[torch.Size, EuclidConvPlan] = {}

    def _gemm_shift(self) -> Tensor:
        return kernels.euclid_shift_reference(self.forward_weight(),  # type: ignore[attr-defined]
                                              self.bias,  # type: ignore[attr-defined]
                                              0.5 * self._theta  # type: ignore[attr-defined]
                                              ).contiguous()

    def _euclid_conv(self, x: Tensor, weight: Tensor) -> Tensor:
        """This layer's Euclid convolution of ``x`` with ``weight`` (the float weights, or the
        quantized layer's decoded ones) and the precomputed shift."""
        plan = self._plans.get(x.shape)
        if plan is None or not plan.takes(x):  # a new shape, layout or thread count
            plan = EuclidConvPlan.make(x, weight, self.stride,  # type: ignore[attr-defined]
                                       self.padding, self.dilation,  # type: ignore[attr-defined]
                                       self.groups, self._theta)  # type: ignore[attr-defined]
            if plan is None:  # not the eager C path: the function decides
                return euclid_conv2d(x, weight, None, self.stride,  # type: ignore[attr-defined]
                                     self.padding, self.dilation,  # type: ignore[attr-defined]
                                     self.groups, self._theta,  # type: ignore[attr-defined]
                                     self._shift)  # type: ignore[attr-defined]
            self._plans[x.shape] = plan
        return plan(x, weight, self._shift, 0.5 * self._theta)  # type: ignore[attr-defined]


class _PackedDistanceLinear(PackedLinearShape, _PackedDistance):
    """The constructor of a packed distance linear layer: its shape, then its buffers."""

    def __init__(self, in_features: int, out_features: int, *, bias: bool = True) -> None:
        super().__init__()
        self.in_features = in_features
        self._init_weights((out_features, in_features), bias)


class _PackedDistanceConv2d(PackedConv2dShape, _PackedDistance):
    """The constructor of a packed distance convolution: its geometry, then its buffers."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int],
                 stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int],
                 groups: int, *, bias: bool = True) -> None:
        super().__init__()
        self._set_shape(in_channels, out_channels, kernel_size, stride, padding, dilation,
                        groups)
        self._init_weights((out_channels, in_channels // groups, *self.kernel_size), bias)


class _PackedFloatEuclid(PackedEuclid, _PackedDistance):
    def _init_weights(self, weight_shape: tuple[int, ...], has_bias: bool) -> None:
        """The weight and bias buffers, and theta's."""
        super()._init_weights(weight_shape, has_bias)
        self._init_theta()

    def _fill_from(self, layer: nn.Module) -> None:
        self._fill_theta(layer)
        super()._fill_from(layer)


@register_packed(EuclidLinear)
class PackedEuclidLinear(_PackedDistanceLinear, _PackedFloatEuclid):
    """EuclidLinear for inference: b_j - theta/2 ||w_j||^2 precomputed."""

    def forward(self, x: Tensor) -> Tensor:
        return euclid_linear(x, self._weight, None, self._theta, self._shift)


@register_packed(EuclidConv2d)
class PackedEuclidConv2d(EuclidConvShift, _PackedDistanceConv2d, _PackedFloatEuclid):
    """EuclidConv2d (zero padding) for inference: b_j - theta/2 ||w_j||^2 precomputed."""

    def forward(self, x: Tensor) -> Tensor:
        return self._euclid_conv(x, self._weight)


class PackedAdder(PackedLayer):
    """The adder part of a packed layer: counted as absolute differences, no BatchNorm
    folding, not exported to ONNX (a C kernel or cdist); the forward passes of
    :class:`PackedAdderLinearForward` / :class:`PackedAdderConvForward` run on the subclass's
    ``forward_weight()`` (the float weights, or the quantized AdderNet's decoded codes)."""

    op_kind = "abs-diff"  # type: ignore[assignment]
    folds_affine = False
    onnx_exportable = False

    @staticmethod
    def _kernel_runs(x: Tensor) -> bool:
        """Whether the C kernel computes this call (else the training layer's PyTorch path)."""
        return not (torch.compiler.is_compiling() or kernels.exporting()) \
            and kernels.conv2d_direct_usable(x)


class PackedAdderLinearForward(PackedAdder):
    """-sum_i |x_i - w_ji| + b_j by the direct C kernel (a 1x1 convolution of the rows)."""

    def forward(self, x: Tensor) -> Tensor:
        weight = self.forward_weight()  # type: ignore[attr-defined]
        if not self._kernel_runs(x):
            return adder_linear(x, weight, self.bias)
        rows = x.reshape(-1, self.in_features)
        y = kernels.l1_linear(rows, weight, self.bias)
        return y.reshape(*x.shape[:-1], self.out_features)


class PackedAdderConvForward(PackedAdder):
    """-sum |x - w_j| + b_j over each patch by the direct C kernel where it takes the
    geometry."""

    def forward(self, x: Tensor) -> Tensor:
        weight = self.forward_weight()  # type: ignore[attr-defined]
        if (x.dim() == 4 and kernels.conv2d_direct_supports(weight.shape, self.stride,
                                                            self.padding, self.dilation,
                                                            self.groups)
                and self._kernel_runs(x)):
            return kernels.conv2d_direct(x, weight, self.bias, self.stride, self.padding,
                                         op="l1")
        return adder_conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation,
                            self.groups)


@register_packed(AdderLinear)
class PackedAdderLinear(PackedAdderLinearForward, _PackedDistanceLinear):
    """AdderLinear for inference: -sum_i |x_i - w_ji| + b_j by the direct C kernel."""


@register_packed(AdderConv2d)
class PackedAdderConv2d(PackedAdderConvForward, _PackedDistanceConv2d):
    """AdderConv2d (zero padding) for inference: -sum |x - w_j| + b_j over each patch by the
    direct C kernel where it takes the geometry."""
