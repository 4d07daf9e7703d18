"""What the distance layers (EuclidNet's squared difference, AdderNet's absolute difference)
share: the convolution's geometry and padding, the unfolded patches of the naive reference
forms, and the copy of a float layer's weights.

A distance layer compares each input patch with each filter instead of multiplying them, so it
is not an nn.Conv2d, yet it takes nn.Conv2d's arguments (stride, padding, dilation, groups,
bias, padding_mode) with the same meaning: :class:`DistanceConv2d` holds them.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

from ..errors import ConversionError
from .base import CompressedLayer


def explicit_padding(padding: Any, kernel: tuple[int, ...],
                     dilation: tuple[int, ...]) -> list[int]:
    """``F.pad`` widths (left, right, top, bottom) of a conv's padding: ints, pairs, "valid" or
    "same" (torch's split: the extra pixel of an odd total on the right / bottom)."""
    if padding == "valid":
        return [0, 0, 0, 0]
    if padding == "same":
        totals = [d * (k - 1) for k, d in zip(kernel, dilation)]
        (top, bottom), (left, right) = [(t // 2, t - t // 2) for t in totals]
        return [left, right, top, bottom]
    ph, pw = _pair(padding)
    return [pw, pw, ph, ph]


def conv_patches(x: Tensor, kernel: tuple[int, int], stride: Any = 1, padding: Any = 0,
                 dilation: Any = 1, groups: int = 1) -> tuple[Tensor, list[int]]:
    """The patches a convolution sees, by group: ``x`` (N, C, H, W) padded with zeros and
    unfolded to (N, groups, C / groups * kh * kw, L), and the output size [Ho, Wo] (L = Ho Wo).
    Differentiable (autograd folds the patches' gradient back onto x)."""
    stride, dilation = _pair(stride), _pair(dilation)
    x = F.pad(x, explicit_padding(padding, kernel, dilation))
    out_hw = [(size - d * (k - 1) - 1) // s + 1
              for size, k, s, d in zip(x.shape[2:], kernel, stride, dilation)]
    patches = F.unfold(x, kernel, dilation=dilation, stride=stride)  # (N, C * kh * kw, L)
    return patches.unflatten(1, (groups, -1)), out_hw


class DistanceConv2d(CompressedLayer, nn.modules.conv._ConvNd):
    """Base of the distance convolutions: nn.Conv2d's arguments and parameters (the padded
    values of a non-zero ``padding_mode`` enter the distances like any input), checked with a
    :class:`ConversionError` naming the layer. Not an nn.Conv2d subclass on purpose: code that
    treats every nn.Conv2d as a product (folding a BatchNorm into its weights, converting it
    again) must not take it for one."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", *, device: Any = None, dtype: Any = None) -> None:
        name = type(self).__name__
        for what, channels in (("in_channels", in_channels), ("out_channels", out_channels)):
            if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1 \
                    or channels % groups:
                raise ConversionError(f"{name}: groups={groups!r} must be >= 1 and divide "
                                      f"{what}={channels} (an integer)")
        try:
            nn.modules.conv._ConvNd.__init__(
                self, in_channels, out_channels, _pair(kernel_size), _pair(stride),
                padding if isinstance(padding, str) else _pair(padding), _pair(dilation),
                False, _pair(0), groups, bias, padding_mode, device=device, dtype=dtype)
        except ValueError as exc:  # torch's checks of padding, padding_mode, strings
            raise ConversionError(f"{name}: {exc}") from None

    def _padded(self, x: Tensor) -> tuple[Tensor, Any]:
        """x padded by a non-zero padding mode (then the distances pad nothing more)."""
        if self.padding_mode == "zeros":
            return x, self.padding
        return F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode), 0

    @classmethod
    def _like(cls, conv: nn.Conv2d, **options: Any) -> "DistanceConv2d":
        """A layer with ``conv``'s geometry and a copy of its weights (``options``: the
        subclass's own keyword arguments)."""
        layer = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                    conv.padding, conv.dilation, conv.groups, conv.bias is not None,
                    conv.padding_mode, device=conv.weight.device, dtype=conv.weight.dtype,
                    **options)
        copy_parameters(conv, layer)
        return layer


def naive_conv2d(x: Tensor, weight: Tensor, bias: Tensor | None, stride: Any, padding: Any,
                 dilation: Any, groups: int, terms: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
    """The naive form of a distance convolution, for checks: pad x with zeros, unfold its
    patches and materialize ``terms(patches, w)`` for every (x_i, w_ij) pair (N x out x K x L
    of them), then sum over each patch and add the bias; an unbatched x stays unbatched."""
    unbatched = x.dim() == 3
    if unbatched:
        x = x.unsqueeze(0)
    patches, out_hw = conv_patches(x, tuple(weight.shape[2:]), stride, padding, dilation,
                                   groups)
    patches = patches.unsqueeze(2)  # (N, g, 1, K, L)
    w = weight.reshape(groups, weight.shape[0] // groups, -1, 1)  # (g, out / g, K, 1)
    y = terms(patches, w).sum(3).flatten(1, 2).unflatten(2, out_hw)  # (N, out, Ho, Wo)
    if bias is not None:
        y = y + bias.view(1, -1, 1, 1)
    return y.squeeze(0) if unbatched else y


def linear_like(cls: Callable[..., nn.Module], linear: nn.Linear, **options: Any) -> Any:
    """A ``cls`` layer with ``linear``'s shape and a copy of its weights (``options``: the
    class's own keyword arguments); the linear counterpart of :meth:`DistanceConv2d._like`."""
    layer = cls(linear.in_features, linear.out_features, linear.bias is not None,
                device=linear.weight.device, dtype=linear.weight.dtype, **options)
    copy_parameters(linear, layer)
    return layer


def copy_parameters(src: nn.Module, dst: nn.Module) -> None:
    """Copy ``src``'s weight and bias (if any) into ``dst``'s."""
    with torch.no_grad():
        dst.weight.copy_(src.weight)
        if src.bias is not None:
            dst.bias.copy_(src.bias)
