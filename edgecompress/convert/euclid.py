"""EuclidNet: :class:`EuclidConverter`, registered as ``"euclid"``.

Replaces Linear and Conv2d layers by :class:`~edgecompress.layers.EuclidLinear` /
:class:`~edgecompress.layers.EuclidConv2d` with the trained weights copied, so a float model can
be moved to squared-distance layers by the homotopy (``theta`` scheduled from 0 to 1, see
:mod:`edgecompress.layers.euclid`) or trained as a EuclidNet from the start (``theta=1.0``).

``weight_scale`` (our reading; default 1, off) multiplies the copied weights and biases by a
factor alpha > 0. Before a BatchNorm this leaves the ordinary layer's function unchanged (its
output is scaled by alpha, which the normalization removes; only BN's eps sees it), but it moves
the Euclid layer towards it: at theta = 1 the output is alpha x.w - 1/2 ||x||^2 - alpha^2/2
||w||^2 + alpha b, and the per-patch 1/2 ||x||^2, which every output channel shares and which
BatchNorm cannot remove (it varies from patch to patch), shrinks beside the channel-specific
alpha x.w. With weights at a CNN's scale (kaiming init, or trained under weight decay) that
shared term dominates each Euclid layer's output (measured in docs/euclidnet.md on a ResNet-20:
its spread is 22 to 320 times the channel-specific part's), the channels after BatchNorm are
nearly copies of one map and the weight gradients 40 to 3200 times smaller than the CNN's; a
trained CNN converted at theta = 1 is at chance, and needs alpha ~ 300 to keep its accuracy. The
price: weights alpha times further from the inputs, which a fixed-point squared-difference unit
has to cover with one number format.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..errors import ConversionError
from ..layers import EuclidConv2d, EuclidLinear
from ..layers.euclid import ThetaSpec, theta_schedule
from .engine import ConversionReport, Converter, register_check, register_method
from .nonnegative import FirstForwardCheck, warn_found

#: a Euclid layer is flagged when the part of its output that all its channels share spreads
#: more than this many times the channel-specific part (``shared_ratio``): after a BatchNorm its
#: channels are then > 99 % one common map (variance 1 : 1/SHARED_RATIO^2)
SHARED_RATIO = 10.0


@register_method("euclid")
class EuclidConverter(Converter):
    """Linear / Conv2d -> Euclid layers computing x.w - theta/2 (||x||^2 + ||w||^2) + b.
    ``theta``: a number in [0, 1] (1, the default: -1/2 ||x - w||^2 + b) or a schedule, e.g.
    ``{"kind": "linear", "start": 0, "end": 1}`` for the homotopy from multiplication, stepped
    by the trainer. ``weight_scale``: a factor alpha > 0 on the copied weights and biases (1,
    the default, copies them as they are; see the module docstring). The default policy keeps
    the first and last layers as they are."""

    supported_types = (nn.Linear, nn.Conv2d)

    def __init__(self, *, theta: ThetaSpec = 1.0, weight_scale: float = 1.0) -> None:
        theta_schedule(theta)  # a clear error before converting
        self.theta = theta
        self.weight_scale = check_weight_scale(weight_scale)

    def convert_layer(self, module: nn.Module) -> nn.Module:
        layer: EuclidConv2d | EuclidLinear
        if isinstance(module, nn.Conv2d):
            layer = EuclidConv2d.from_float(module, theta=self.theta)
        else:
            layer = EuclidLinear.from_float(module, theta=self.theta)
        if self.weight_scale != 1.0:
            with torch.no_grad():
                for param in (layer.weight, layer.bias):
                    if param is not None:
                        param.mul_(self.weight_scale)
        return layer


def check_weight_scale(value: Any) -> float:
    """``value`` as a finite float > 0, else a ConversionError naming it."""
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not math.isfinite(value) or value <= 0):
        raise ConversionError(f"weight_scale (the factor on the Euclid layers' copied weights) "
                              f"must be a finite number > 0, got {value!r}")
    return float(value)


@register_check
def check_shared_terms(model: nn.Module, report: ConversionReport) -> None:
    """On the model's first eager forward, flag the Euclid layers (at the end of their theta
    schedule) whose per-patch -theta/2 ||x||^2, shared by every output channel, swamps the
    channel-specific x.w (:meth:`~edgecompress.layers.euclid._EuclidLayer.shared_ratio` above
    :data:`SHARED_RATIO`): the layer then passes on little more than one map, whatever its
    weights."""
    layers = {n: m for n, m in model.named_modules()
              if isinstance(m, (EuclidConv2d, EuclidLinear)) and m.final_theta() > 0}
    if layers:
        FirstForwardCheck.install(model, layers, report, _swamped, _warn_swamped)


def _swamped(layer: nn.Module, x: torch.Tensor) -> str | None:
    ratio = layer.shared_ratio(x)
    return f"shared part {ratio:.0f}x the rest" if ratio > SHARED_RATIO else None


def _warn_swamped(found: dict[str, str], report: ConversionReport) -> None:
    warn_found(found, report, "output mostly the per-patch -theta/2 ||x||^2 that all their "
               "channels share, so after a BatchNorm the channels are nearly one map and the "
               "weight gradients tiny", "Weights at a CNN's scale are small beside the inputs: "
               "convert with weight_scale (e.g. 300 for a trained ResNet-20, see "
               "docs/euclidnet.md)")
