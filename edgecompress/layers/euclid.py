"""Squared-Euclidean-distance (EuclidNet) Linear and Conv2d layers, with the homotopy from
multiplication.

EuclidNets (Prazeres, Li, Oberman, Partovi Nia, ICPRAM 2022; Li et al., "EuclidNets: An
Alternative Operation for Efficient Inference of Deep Learning Models", SN Computer Science 2023,
arXiv 2212.11803) replace the product x * w by the negative squared difference. For an output
unit j over its inputs i (a row of a linear layer, a patch of a convolution):

    y_j = -1/2 sum_i (x_i - w_ij)^2 + b_j = x.w_j - 1/2 ||x||^2 - 1/2 ||w_j||^2 + b_j

The right side is what the layers compute ("GEMM form"): one ``F.linear`` / ``F.conv2d`` whose
bias is b_j - 1/2 ||w_j||^2 (the per-channel constant), minus the per-patch 1/2 ||x||^2 (the
channel sum of x^2 summed over each window of the weight's spatial shape, same stride and
padding: a sum pool, or a convolution with ones where dilation or padding rule a pool out), so
training runs at matrix-multiplication speed: one pass over the output besides the GEMM (on
the convolutions' C path that pass also adds the per-channel constant, and the convolution
runs without a bias). The gradients are the exact dy_j/dw_ij = x_i - w_ij and
dy_j/dx_i = -(x_i - w_ij) (summed over the patches using x_i): autograd's, or on the C path
the same sums written out (:class:`_EuclidConv`).
:func:`euclid_linear_reference` / :func:`euclid_conv2d_reference` are the naive forms that
materialize every difference: slow, obviously correct, for tests and for users' own checks.

Homotopy (this project's reading of the papers' "operation homotopy"; the paper text was not
available): with theta in [0, 1],

    y_theta = x.w - theta/2 (||x||^2 + ||w||^2) + b
            = (1 - theta) x.w + theta (-1/2 ||x - w||^2) + b

so theta = 0 is the ordinary layer and theta = 1 the Euclid layer. ``theta`` is a buffer (saved
in ``state_dict``) driven by a :class:`~edgecompress.quantizers.schedule.Schedule` that the
trainer's :class:`~edgecompress.train.ScheduleStepper` steps, like the binarization methods'
parameters: ``theta={"kind": "linear", "start": 0, "end": 1}`` moves a converted float model
to a EuclidNet over the run; a constant ``theta=1.0`` (the default) trains a EuclidNet as such.
Backward of the homotopy: dy/dw = (1 - theta) x + theta (x - w) = x - theta w,
dy/dx = w - theta x.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

from .. import kernels
from ..errors import ConversionError
from ..quantizers.schedule import Schedule
from .base import CompressedLayer
from .distance import DistanceConv2d, linear_like, naive_conv2d

ThetaSpec = Union[float, Schedule, Mapping[str, Any]]
_ROUNDING = 1e-9  # how far outside [0, 1] a scheduled value may land by float rounding


def check_theta(value: Any) -> float:
    """``value`` as a float in [0, 1]; anything else raises ConversionError naming it."""
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not 0.0 <= value <= 1.0):
        raise ConversionError(f"theta must be a number in [0, 1] (0: multiplication, 1: "
                              f"squared distance), got {value!r}")
    return float(value)


def theta_schedule(theta: ThetaSpec) -> Schedule:
    """The schedule of ``theta``: a constant in [0, 1], a Schedule, or its mapping (as in a
    recipe), checked to stay in [0, 1] (an exponential schedule needs rate <= 1)."""
    if not isinstance(theta, (Schedule, Mapping)):
        return Schedule("constant", check_theta(theta))
    try:
        schedule = Schedule.from_value(theta)
    except (TypeError, ValueError) as exc:
        raise ConversionError(f"bad theta schedule {theta!r}: {exc}") from None
    for end in (schedule.start, schedule.end):
        if end is not None and not (isinstance(end, (int, float)) and 0.0 <= end <= 1.0):
            raise ConversionError(f"a theta schedule must stay in [0, 1], got {schedule!r}")
    if schedule.kind == "exponential" and schedule.rate > 1:  # type: ignore[operator]
        raise ConversionError(f"an exponential theta schedule needs rate <= 1 to stay in "
                              f"[0, 1], got {schedule!r}")
    return schedule


# --- functional forms ----------------------------------------------------------------------------

def weight_squares(weight: Tensor) -> Tensor:
    """The per-output-channel ||w_j||^2 of a linear (out, in) or conv (out, in / groups, kh, kw)
    weight, as the GEMM forms compute it (frozen layers compute it once)."""
    return weight.square().flatten(1).sum(1)


def euclid_linear(x: Tensor, weight: Tensor, bias: Tensor | None = None,
                  theta: float | Tensor = 1.0, shift: Tensor | None = None) -> Tensor:
    """GEMM form of y = x.w - theta/2 (||x||^2 + ||w_j||^2) + b (-1/2 ||x - w_j||^2 + b at
    theta = 1); ``x`` is (..., in_features), ``weight`` (out_features, in_features);
    ``shift``: :func:`shifted_bias` of bias, weight and theta if already computed (frozen
    layers compute it once; ``bias`` is then unused)."""
    half = 0.5 * theta
    if shift is None:
        shift = shifted_bias(bias, weight, theta)
    return F.linear(x, weight, shift) - half * x.square().sum(-1, keepdim=True)


def shifted_bias(bias: Tensor | None, weight: Tensor, theta: float | Tensor) -> Tensor:
    """b_j - theta/2 ||w_j||^2, the GEMM's bias in the Euclid forms: the per-channel constant
    costs no pass over the output."""
    half, weight_sq = 0.5 * theta, weight_squares(weight)
    return weight_sq * -half if bias is None else bias - half * weight_sq


def _hashable(value: Any) -> Any:
    """A geometry argument as a cache key (a list as a tuple)."""
    return tuple(value) if isinstance(value, list) else value


@functools.lru_cache(maxsize=256)
def _sum_pool(kernel: tuple[int, ...], stride: Any, padding: Any,
              dilation: Any) -> tuple[tuple[int, int], ...] | None:
    """(kernel, stride, padding) as int pairs when a convolution's window sums are a sum pool
    (dilation 1, padding at most half the kernel, as ``avg_pool2d`` allows; "valid", or
    "same" with an odd kernel, as ints), else None. Cached: a layer asks on every call."""
    if _pair(dilation) != (1, 1):
        return None
    if isinstance(padding, str):
        if padding != "valid" and not all(k % 2 for k in kernel):
            return None
        padding = 0 if padding == "valid" else tuple(k // 2 for k in kernel)
    padding = _pair(padding)
    if any(p > k // 2 for p, k in zip(padding, kernel)):
        return None
    return tuple(kernel), _pair(stride), padding  # type: ignore[return-value]


def euclid_conv2d(x: Tensor, weight: Tensor, bias: Tensor | None = None, stride: Any = 1,
                  padding: Any = 0, dilation: Any = 1, groups: int = 1,
                  theta: float | Tensor = 1.0, shift: Tensor | None = None) -> Tensor:
    """GEMM form of the Euclid convolution (arguments as ``F.conv2d``; padding pads zeros):
    (conv(x, w) + (b - theta/2 ||w_j||^2)) - theta/2 P, P the sum over every kernel window of
    the group's channel sum of x^2; ``shift``: :func:`shifted_bias` of bias, weight and theta
    if already computed (frozen layers compute it once; ``bias`` is then unused).

    Where P is a sum pool (dilation 1, padding at most half the kernel, as ``avg_pool2d``
    allows), eager float32 CPU runs compute the term with the C kernels
    :func:`~edgecompress.kernels.euclid_patch` (in place on the output of a convolution
    without bias: one pass over x, one over the output, which adds the per-channel shift too)
    and :func:`~edgecompress.kernels.euclid_patch_grad` for its input gradient, as one
    autograd node; elsewhere (torch.compile, export, tracing, no library, other dtypes or
    devices) torch's operations, which sum in another order: the two agree to float
    rounding. Other geometries window-sum by a convolution with ones."""
    if x.dim() == 3:  # unbatched (C, H, W), as F.conv2d takes it
        return euclid_conv2d(x.unsqueeze(0), weight, bias, stride, padding, dilation, groups,
                             theta, shift).squeeze(0)
    kernel = tuple(weight.shape[2:])
    pool = _sum_pool(kernel, _hashable(stride), _hashable(padding), _hashable(dilation))
    if pool and not kernels.recording() and kernels.conv2d_direct_usable(x) and not (
            isinstance(theta, Tensor) and theta.requires_grad):
        # the C kernels: a Python float theta (tensor operations on the 0-d theta, or on the
        # small weight, cost more than the term at small batches), the convolution without a
        # bias: the kernel adds the per-channel shift, computed from weight and bias, in its
        # pass over y
        theta = theta.item() if isinstance(theta, Tensor) else float(theta)
        if theta == 0.0:  # the product layer, as nn.Conv2d rounds it
            return F.conv2d(x, weight, shifted_bias(bias, weight, theta) if shift is None
                            else shift, stride, padding, dilation, groups)
        if not (torch.is_grad_enabled() and any(t is not None and t.requires_grad
                                                for t in (x, weight, bias, shift))):
            # inference: no autograd node
            y = F.conv2d(x, weight, None, pool[1], pool[2], 1, groups)
            return kernels.euclid_patch(y, x, 0.5 * theta, *pool, groups, shift=shift,
                                        weight=weight, bias=bias)
        return _EuclidConv.apply(x, weight, bias, shift, theta, pool, groups)
    half = 0.5 * theta
    y = F.conv2d(x, weight, shifted_bias(bias, weight, theta) if shift is None else shift,
                 stride, padding, dilation, groups)
    x2 = x.square().unflatten(1, (groups, -1)).sum(2)  # (N, groups, H, W)
    if pool:  # a sum pool (its backward is several times faster than a ones convolution's)
        planes = F.avg_pool2d(x2, *pool, divisor_override=1)
    else:
        planes = F.conv2d(x2, x2.new_ones(groups, 1, *kernel), None, stride, padding,
                          dilation, groups)
    return kernels.subtract_planes(y, half * planes)


class _EuclidConv(torch.autograd.Function):
    """The C path of :func:`euclid_conv2d` as one autograd node: ``(conv(x, w) + shift) -
    theta/2 P`` by a convolution without bias and :func:`~edgecompress.kernels.euclid_patch`
    in place on its output, the shift given or b - theta/2 ||w_j||^2 from ``bias`` and
    ``weight`` (computed by the kernel). Backward from the output's gradient g: the
    convolution's gradients (``aten.convolution_backward``, what autograd would call), the
    term's input gradient added into the convolution's by
    :func:`~edgecompress.kernels.euclid_patch_grad` (no second pass over a new tensor), and
    the shift's gradient s_j (g summed over the batch and pixels): b gets s_j, w_j gets
    -theta s_j w_j added to its convolution gradient (a given shift gets s)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, shift: Tensor | None,
                theta: float, pool: tuple[tuple[int, int], ...], groups: int) -> Tensor:
        y = F.conv2d(x, weight, None, pool[1], pool[2], 1, groups)
        y = kernels.euclid_patch(y, x, 0.5 * theta, *pool, groups, shift=shift, weight=weight,
                                 bias=bias)
        ctx.save_for_backward(x, weight)
        ctx.theta, ctx.pool, ctx.groups = theta, pool, groups
        ctx.given_shift = shift is not None
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        needs = ctx.needs_input_grad  # x, weight, bias, shift
        _, stride, padding = ctx.pool
        grad_x, grad_w, _ = torch.ops.aten.convolution_backward(
            grad, x, weight, None, list(stride), list(padding), [1, 1], False, [0, 0],
            ctx.groups, [needs[0], needs[1], False])
        if needs[0]:
            grad_x = kernels.euclid_patch_grad(grad, x, 0.5 * ctx.theta, *ctx.pool, ctx.groups,
                                               add_to=grad_x)
        sums = grad.sum((0, 2, 3)) if any(needs[1:4]) else None
        if needs[1] and not ctx.given_shift:  # the weight's part of the shift
            grad_w = grad_w.addcmul_(sums.view(-1, *[1] * (weight.dim() - 1)), weight,
                                     value=-ctx.theta)
        return (grad_x, grad_w, sums if needs[2] else None, sums if needs[3] else None,
                None, None, None)


class EuclidConvPlan:
    """:func:`euclid_conv2d` in inference on the C kernels, for a layer that calls it on every
    forward with the same geometry and one input shape and layout (the frozen Euclid
    convolutions): the checks and the kernel's arguments made once, at batch 4 on ResNet-20's
    maps several percent of the convolution's time otherwise. The same convolution call and
    the same kernel as :func:`euclid_conv2d`'s C path with a given shift, so the same floats.
    :meth:`make` returns None where that path does not run; :meth:`takes` says whether a call
    may use the plan (else the caller runs :func:`euclid_conv2d`)."""

    def __init__(self, x: Tensor, weight_shape: torch.Size,
                 pool: tuple[tuple[int, int], ...], groups: int) -> None:
        self.kernel, self.stride, self.padding = pool
        self.groups, self.x_shape = groups, x.shape
        self.x_last = int(not x.is_contiguous())  # else channels-last (see make)
        out = [kernels.conv_output_size(size, k, s, p, 1) for size, k, s, p in
               zip(x.shape[2:], self.kernel, self.stride, self.padding)]
        # torch's convolution writes the output of a channels-last input channels-last
        self.patch = kernels.EuclidPatchPlan(x.shape, torch.Size((x.shape[0], weight_shape[0],
                                                                  *out)),
                                             self.kernel, self.stride, self.padding,
                                             groups, self.x_last, self.x_last)

    @classmethod
    def make(cls, x: Tensor, weight: Tensor, stride: Any, padding: Any, dilation: Any,
             groups: int, theta: float) -> "EuclidConvPlan | None":
        """The plan of this call, or None where :func:`euclid_conv2d` would not run its C
        kernel on it (or would not need it: theta = 0)."""
        pool = _sum_pool(tuple(weight.shape[2:]), _hashable(stride), _hashable(padding),
                         _hashable(dilation))
        if (pool is None or theta == 0.0 or x.dim() != 4 or kernels.recording()
                or not kernels.conv2d_direct_usable(x) or cls._needs_grad(x)
                or not (x.is_contiguous()
                        or x.is_contiguous(memory_format=torch.channels_last))):
            return None
        return cls(x, weight.shape, pool, groups)

    @staticmethod
    def _needs_grad(x: Tensor) -> bool:
        return torch.is_grad_enabled() and x.requires_grad

    def takes(self, x: Tensor) -> bool:
        """Whether this call may run on the plan: the plan's input shape, dtype and layout and
        thread count, eager, no gradient to x."""
        return (x.shape == self.x_shape and x.dtype == torch.float32 and x.is_cpu
                and (x.is_contiguous(memory_format=torch.channels_last) if self.x_last
                     else x.is_contiguous())
                and self.patch.threads == torch.get_num_threads()
                and not kernels.recording() and not self._needs_grad(x))

    def __call__(self, x: Tensor, weight: Tensor, shift: Tensor, half: float) -> Tensor:
        """(conv(x, weight) + shift) - half P, ``shift`` contiguous float32 (C_out,), ``half``
        theta / 2 (a Python float) on an input :meth:`takes`."""
        y = F.conv2d(x, weight, None, self.stride, self.padding, 1, self.groups)
        if not (y.is_contiguous(memory_format=torch.channels_last) if self.x_last
                else y.is_contiguous()):  # (not seen; torch's choice of layout is its own)
            return kernels.euclid_patch(y, x, half, self.kernel, self.stride, self.padding,
                                        self.groups, shift=shift)
        return self.patch.forward(y, x, half, shift)


def euclid_linear_reference(x: Tensor, weight: Tensor, bias: Tensor | None = None,
                            theta: float | Tensor = 1.0) -> Tensor:
    """Naive :func:`euclid_linear`: sum_i [(1 - theta) x_i w_ij - theta/2 (x_i - w_ij)^2] + b_j
    with every (x_i, w_ij) term materialized."""
    xi, w = x.unsqueeze(-2), weight  # (..., 1, in), (out, in)
    y = ((1 - theta) * xi * w - (0.5 * theta) * (xi - w).square()).sum(-1)
    return y if bias is None else y + bias


def euclid_conv2d_reference(x: Tensor, weight: Tensor, bias: Tensor | None = None,
                            stride: Any = 1, padding: Any = 0, dilation: Any = 1,
                            groups: int = 1, theta: float | Tensor = 1.0) -> Tensor:
    """Naive :func:`euclid_conv2d`: pad x with zeros, unfold its patches and materialize every
    (x_i, w_ij) term of sum_i [(1 - theta) x_i w_ij - theta/2 (x_i - w_ij)^2] + b_j."""
    return naive_conv2d(x, weight, bias, stride, padding, dilation, groups,
                        lambda patches, w: (1 - theta) * patches * w
                        - (0.5 * theta) * (patches - w).square())


# --- layers --------------------------------------------------------------------------------------

class _EuclidLayer(CompressedLayer):
    """theta as a scheduled buffer, read by the trainer's ScheduleStepper through ``schedules``
    and :meth:`set_param` (the protocol of the binarization quantizers)."""

    theta: Tensor
    weight: Tensor

    def _setup_theta(self, theta: ThetaSpec) -> None:
        schedule = theta_schedule(theta)
        self.register_buffer("theta", torch.tensor(float(schedule.start),
                                                   dtype=self.weight.dtype,
                                                   device=self.weight.device))
        self.schedules: dict[str, Schedule] = (
            {} if schedule.kind == "constant" else {"theta": schedule})

    def set_param(self, name: str, value: float) -> None:
        """Set ``theta`` (the only scheduled parameter) to ``value`` in [0, 1]."""
        if name != "theta":
            raise ConversionError(f"{type(self).__name__} has no scheduled parameter {name!r}; "
                                  f"it has ['theta']")
        if -_ROUNDING <= value <= 1 + _ROUNDING:  # a schedule's end point up to rounding
            value = min(max(value, 0.0), 1.0)
        self.theta.fill_(check_theta(value))

    @property
    def op_kind(self) -> str:
        """``"squared-diff"`` at theta = 1; below, the blend still needs the products x.w."""
        return "squared-diff" if self.theta.item() == 1.0 else "mac"

    def quantized_weight(self) -> Tensor:
        """The weight the forward pass uses: the float weight here; the quantized subclasses
        (:mod:`edgecompress.layers.uniform`) quantize it."""
        return self.weight

    def quantized_input(self, x: Tensor) -> Tensor:
        """The input the forward pass uses (quantized by the quantized subclasses)."""
        return x

    def final_theta(self) -> float:
        """theta at the end of its schedule (its value now when constant)."""
        schedule = self.schedules.get("theta")
        if schedule is None or schedule.end is None:
            return self.theta.item()
        return float(schedule.end)

    def shared_ratio(self, x: Tensor) -> float:
        """On input ``x`` at :meth:`final_theta`: the spread (std) of the output's part that
        every output channel of a group shares (the per-patch -theta/2 ||x||^2 and the channel
        mean of x.w) over the spread of the rest, each channel's mean removed first (a BatchNorm
        removes those). Far above 1, the channels after a BatchNorm are nearly copies of one
        map. For checks and diagnoses: runs the layer's float form once more, without autograd
        and without its quantizers (which may be observing their inputs for calibration)."""
        with torch.no_grad():
            y = self._euclid_output(x, self.final_theta()).movedim(self._channel_dim, 0)
            channels, groups = y.shape[0], getattr(self, "groups", 1)
            y = y.reshape(channels, -1)
            y = (y - y.mean(1, keepdim=True)).reshape(groups, channels // groups, -1)
            shared = y.mean(1, keepdim=True)
            rest = (y - shared).std()
            return float(shared.std() / rest) if rest > 0 else float("inf")

    _channel_dim: int  # where a layer's output keeps its channels

    def _euclid_output(self, x: Tensor, theta: float) -> Tensor:
        """The float layer's output at ``theta``, without bias."""
        raise NotImplementedError

    def _extra_theta(self) -> str:
        schedule = f", theta_schedule={self.schedules['theta']!r}" if self.schedules else ""
        return f"theta={self.theta.item():g}{schedule}"


class EuclidLinear(_EuclidLayer):
    """Linear layer computing y_j = x.w_j - theta/2 (||x||^2 + ||w_j||^2) + b_j: the EuclidNet
    -1/2 ||x - w_j||^2 + b_j at theta = 1 (the default), nn.Linear at theta = 0 (see the
    module docstring for the homotopy and the gradients). Same parameters and initialisation as
    nn.Linear; ``theta`` is a number in [0, 1] or a schedule."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 theta: ThetaSpec = 1.0, device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(out_features, in_features, **factory))
        self.bias = nn.Parameter(torch.empty(out_features, **factory)) if bias else None
        self.reset_parameters()
        self._setup_theta(theta)

    def reset_parameters(self) -> None:
        nn.Linear.reset_parameters(self)  # type: ignore[arg-type]  # nn.Linear's init

    def forward(self, x: Tensor) -> Tensor:
        return euclid_linear(self.quantized_input(x), self.quantized_weight(), self.bias,
                             self.theta)

    _channel_dim = -1

    def _euclid_output(self, x: Tensor, theta: float) -> Tensor:
        return euclid_linear(x, self.weight, None, theta)

    def reference_forward(self, x: Tensor) -> Tensor:
        """The same output by the naive form (slow; for checks)."""
        return euclid_linear_reference(self.quantized_input(x), self.quantized_weight(),
                                       self.bias, self.theta)

    def edgecompress_macs(self, inputs: tuple, output: Tensor) -> dict[str, int]:
        rows = output.shape[1:-1].numel()
        return {f"w{self.weight_bits}a{self.input_bits}":
                rows * self.in_features * self.out_features}

    @classmethod
    def from_float(cls, linear: nn.Linear, *, theta: ThetaSpec = 1.0) -> "EuclidLinear":
        """A Euclid layer with ``linear``'s weights (homotopy from a trained model)."""
        return linear_like(cls, linear, theta=theta)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, {self._extra_theta()}")


class EuclidConv2d(_EuclidLayer, DistanceConv2d):
    """2-D convolution computing, per output channel j and patch x,
    y_j = x.w_j - theta/2 (||x||^2 + ||w_j||^2) + b_j: the EuclidNet -1/2 ||x - w_j||^2 + b_j at
    theta = 1 (the default), nn.Conv2d at theta = 0. Arguments as nn.Conv2d (see
    :class:`~edgecompress.layers.distance.DistanceConv2d`)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", *, theta: ThetaSpec = 1.0, device: Any = None,
                 dtype: Any = None) -> None:
        DistanceConv2d.__init__(self, in_channels, out_channels, kernel_size, stride, padding,
                                dilation, groups, bias, padding_mode, device=device,
                                dtype=dtype)
        self._setup_theta(theta)

    def forward(self, x: Tensor) -> Tensor:
        x, padding = self._padded(self.quantized_input(x))
        return euclid_conv2d(x, self.quantized_weight(), self.bias, self.stride, padding,
                             self.dilation, self.groups, self.theta)

    _channel_dim = 1

    def _euclid_output(self, x: Tensor, theta: float) -> Tensor:
        x, padding = self._padded(x if x.dim() == 4 else x.unsqueeze(0))
        return euclid_conv2d(x, self.weight, None, self.stride, padding, self.dilation,
                             self.groups, theta)

    def reference_forward(self, x: Tensor) -> Tensor:
        """The same output by the naive form (slow; for checks)."""
        x, padding = self._padded(self.quantized_input(x))
        return euclid_conv2d_reference(x, self.quantized_weight(), self.bias, self.stride,
                                       padding, self.dilation, self.groups, self.theta)

    @classmethod
    def from_float(cls, conv: nn.Conv2d, *, theta: ThetaSpec = 1.0) -> "EuclidConv2d":
        """A Euclid layer with ``conv``'s weights and geometry (homotopy from a trained model)."""
        return cls._like(conv, theta=theta)  # type: ignore[return-value]

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self._extra_theta()}"

