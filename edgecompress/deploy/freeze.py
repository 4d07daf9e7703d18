"""``freeze(model)``: a trained binarized model -> its inference form with packed weights."""

from __future__ import annotations

import copy

import torch
from torch import nn

from .. import kernels
from ..layers import BinaryConv2d, BinaryLinear, harden
from .modules import PackedBinaryConv2d, PackedBinaryLinear


def _packed_layer(layer: nn.Module) -> nn.Module:
    binary_inputs = layer.input_quantizer is not None
    scale = layer._scale()
    options = dict(binary_inputs=binary_inputs, has_scale=scale is not None,
                   bias=layer.bias is not None)
    if isinstance(layer, BinaryConv2d):
        new: nn.Module = PackedBinaryConv2d(
            layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
            layer.padding, layer.dilation, layer.groups, **options)
    else:
        new = PackedBinaryLinear(layer.in_features, layer.out_features, **options)
    with torch.no_grad():
        new.bits.copy_(kernels.pack_signs(layer.weight.detach().reshape(layer.weight.shape[0], -1)))
        if scale is not None:
            new.scale.copy_(scale.detach().reshape(-1))
        if layer.bias is not None:
            new.bias.copy_(layer.bias.detach())
    new.prepare()
    return new


def freeze(model: nn.Module) -> nn.Module:
    """A copy of ``model`` for inference: every binary layer becomes a packed layer (1 bit per
    weight; W1A1 layers run the XOR-popcount kernels), every other layer is kept as it is.
    The copy is in eval mode and keeps ``edgecompress_spec`` so :func:`save` can describe it."""
    frozen = harden(copy.deepcopy(model)).eval()
    for name, module in list(frozen.named_modules()):
        if isinstance(module, (BinaryLinear, BinaryConv2d)) and name:
            parent_name, _, child = name.rpartition(".")
            parent = frozen.get_submodule(parent_name) if parent_name else frozen
            setattr(parent, child, _packed_layer(module))
    for p in frozen.parameters():
        p.requires_grad_(False)
    return frozen
