"""``PackedFloatConv2d``: the inference form freeze gives a plain float ``nn.Conv2d`` (after
BatchNorm folding) that the direct float kernel takes (1x1 / 3x3, stride 1 / 2, padding 0 / 1,
groups 1; :func:`~edgecompress.kernels.conv2d_direct_supports`).

At small batch (``n <= KERNEL_MAX_BATCH``) it runs :func:`~edgecompress.kernels.conv2d_direct`:
torch's batch-1 convolution on small maps is its im2col path, whose time hardly follows the
channel counts, while the direct kernel's does, so a pruned network gets faster in proportion.
Larger batches run torch's convolution (oneDNN is faster there), and so does everything when the
C kernels are not built (a warning says so once), and an export (torch.export, ONNX). A following ReLU / hardtanh, and the residual
addition before it (``act(conv(x) + r)``, a ResNet block's end), are computed in the kernel's
store loop (freeze sets ``fused_clamp`` and passes the residual). The kernel returns contiguous
(NCHW) activations, which the next such layer reads without a copy; a channels-last input (from
a layer torch runs) is copied to NCHW once.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .. import kernels
from ..kernels.ops import conv2d_direct_op
from .packed import PackedLayer, register_packed

#: the largest batch the direct kernel runs; above it torch's convolution (oneDNN) is faster.
#: Measured on a frozen ResNet-20 (AVX-512, one thread), kernel / torch time: batch 1 0.8-0.9,
#: batch 2 about 1.0, batch 8 about 1.6 (pruned to half the MACs: 0.6-0.7, 0.7, 1.0-1.4);
#: per layer, torch's oneDNN wins at batch 8 on channel counts that are multiples of 16.
KERNEL_MAX_BATCH = 2


@register_packed()
class PackedFloatConv2d(PackedLayer):
    """A float32 convolution with bias and an optional fused residual addition and clamp."""

    #: an export (torch.export, ONNX) sees torch's convolution
    onnx_exportable = True
    process_local = ("_plans",)  # the direct convolution's plans, per input shape

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int],
                 stride: tuple[int, int], padding: tuple[int, int], *,
                 fused_clamp: tuple[float, float] | None = None) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = tuple(kernel_size), tuple(stride)
        self.padding = tuple(padding)
        self.fused_clamp = None if fused_clamp is None else tuple(fused_clamp)
        self.register_buffer("weight", torch.zeros(out_channels, in_channels, *self.kernel_size))
        self.register_buffer("bias", torch.zeros(out_channels))
        self.prepare()

    @staticmethod
    def takes(module: nn.Module) -> bool:
        """Whether ``module`` is a plain float32 ``nn.Conv2d`` of a geometry the kernel takes."""
        return (type(module) is nn.Conv2d and module.padding_mode == "zeros"
                and not isinstance(module.padding, str)
                and module.weight.dtype == torch.float32
                and kernels.conv2d_direct_supports(tuple(module.weight.shape), module.stride,
                                                   module.padding, module.dilation,
                                                   module.groups))

    @classmethod
    def from_trained(cls, layer: nn.Module) -> "PackedFloatConv2d":
        new = cls(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                  layer.padding)
        with torch.no_grad():
            new.weight.copy_(layer.weight)
            if layer.bias is not None:
                new.bias.copy_(layer.bias)
        new.prepare()
        return new

    def config(self) -> dict[str, Any]:
        return {"in_channels": self.in_channels, "out_channels": self.out_channels,
                "kernel_size": self.kernel_size, "stride": self.stride,
                "padding": self.padding, "fused_clamp": self.fused_clamp}

    def prepare(self) -> None:
        # the kernel's weights, contiguous (not a buffer: freeze's final channels-last
        # conversion leaves it alone, while torch's path uses the converted buffer)
        self._kernel_weight = self.weight.detach().contiguous()
        self._plans: dict[torch.Size, kernels.DirectConvPlan] = {}

    def fold_affine(self, s: Tensor, t: Tensor) -> None:
        """``y -> s y + t`` per output channel: weight * s, bias * s + t (as freeze folds a
        BatchNorm into a float convolution)."""
        with torch.no_grad():
            self.weight.mul_(s.view(-1, 1, 1, 1))
            self.bias.copy_(self.bias * s + t)
        self.prepare()

    @property
    def fuses_residual(self) -> bool:
        return True

    def forward(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        """``fused_clamp(conv(x) + bias + residual)`` (residual and clamp when set)."""
        if kernels.recording():
            if x.shape[0] > KERNEL_MAX_BATCH or kernels.exporting():  # an export: torch's conv
                return self._torch(x, residual)
            # torch.compile: opaque to Dynamo; torch's convolution without C
            lo, hi = self.fused_clamp if self.fused_clamp is not None else (None, None)
            return conv2d_direct_op(x, self._kernel_weight, self.bias, list(self.stride),
                                    list(self.padding), residual, lo, hi)
        # the common case (a batch-1 image of a shape seen before) in the fewest calls: this
        # overhead is paid by every layer of a frozen network, a fifth of a small one's time.
        # Plans exist only for inputs the kernel takes (batch <= KERNEL_MAX_BATCH). (The bias
        # from _buffers: ``self.bias`` would go through nn.Module.__getattr__.)
        plan = self._plans.get(x.shape)
        if plan is None or x.dtype != torch.float32 or not x.is_cpu \
                or plan.sources[0] is not self._kernel_weight \
                or plan.sources[1] is not self._buffers["bias"] \
                or plan.threads != torch.get_num_threads():
            if x.shape[0] > KERNEL_MAX_BATCH or not kernels.conv2d_direct_usable(x):
                return self._torch(x, residual)
            plan = self._new_plan(x)
        return plan(x, residual)

    def _torch(self, x: Tensor, residual: Tensor | None) -> Tensor:
        """This layer by torch's convolution (large batches, exports, no C library)."""
        return kernels.conv2d_torch(x, self.weight, self.bias, self.stride, self.padding,
                                    residual, self.fused_clamp)

    def _new_plan(self, x: Tensor) -> kernels.DirectConvPlan:
        """The kernel's plan for this input shape (made at the first call; a layer sees one or
        two shapes), made anew when the thread count or the weight / bias tensors changed."""
        plan = self._plans[x.shape] = kernels.DirectConvPlan(
            tuple(x.shape), self._kernel_weight, self.bias, self.stride, self.padding,
            clamp=self.fused_clamp)
        return plan

    def edgecompress_params(self) -> dict[int, int]:
        """Float parameters (weight and bias are buffers here, so summary asks)."""
        return {32: self.weight.numel() + self.bias.numel()}

    def edgecompress_macs(self, inputs, output) -> dict[str, int]:
        """Multiply-adds per sample, under the key of float layers (32-bit weights and
        inputs), as for the ``nn.Conv2d`` it replaces."""
        taps = self.in_channels * self.kernel_size[0] * self.kernel_size[1]
        return {"w32a32": output[0].numel() * taps}
