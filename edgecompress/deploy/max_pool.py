"""``PackedMaxPool2d``: the inference form freeze gives an ``nn.MaxPool2d`` (dilation 1, no
ceil mode, no indices), such as a ResNet stem's 3x3 / 2 pool.

On a float32 channels-last map (a frozen feature-map model's layout) it runs
:func:`~edgecompress.kernels.max_pool2d`, bit for bit torch's ``max_pool2d`` (NaN propagates,
the first of equal values is kept) without torch's per-value index: about 3x faster than
torch's channels-last pool on an AMD EPYC (Zen 1, AVX2) at a ResNet-18 stem's 64 x 112 x 112 map,
batch 1 and 8. Any other input, a trace (torch.compile, torch.export, ONNX) and a build
without the C kernels run torch's ``max_pool2d``.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from .. import kernels
from .packed import PackedLayer, register_packed


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


@register_packed()
class PackedMaxPool2d(PackedLayer):
    """``max_pool2d(x, kernel_size, stride, padding)`` (see the module docstring)."""

    #: an export (torch.export, ONNX) sees torch's max_pool2d
    onnx_exportable = True
    folds_affine = False

    def __init__(self, kernel_size: tuple[int, int], stride: tuple[int, int],
                 padding: tuple[int, int]) -> None:
        super().__init__()
        self.kernel_size, self.stride = _pair(kernel_size), _pair(stride)
        self.padding = _pair(padding)

    @staticmethod
    def takes(module: nn.Module) -> bool:
        """Whether ``module`` is a plain ``nn.MaxPool2d`` the kernel computes: dilation 1, no
        ceil mode, no indices."""
        return (type(module) is nn.MaxPool2d and _pair(module.dilation) == (1, 1)
                and not module.ceil_mode and not module.return_indices)

    @classmethod
    def from_trained(cls, layer: nn.Module, **options: Any) -> "PackedMaxPool2d":
        stride = layer.kernel_size if layer.stride is None else layer.stride
        return cls(layer.kernel_size, stride, layer.padding)

    def config(self) -> dict[str, Any]:
        return {"kernel_size": self.kernel_size, "stride": self.stride, "padding": self.padding}

    def forward(self, x: Tensor) -> Tensor:
        if not kernels.recording() and kernels.max_pool2d_usable(x):
            return kernels.max_pool2d(x, self.kernel_size, self.stride, self.padding)
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding)

    def edgecompress_params(self) -> dict[int, int]:
        return {}

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}")
