"""``freeze(model)``: a trained binarized model -> its inference form with packed weights."""

from __future__ import annotations

import copy

import torch
import torch.fx as fx
from torch import nn

from .. import kernels
from ..layers import BinaryConv2d, BinaryLinear, harden
from .modules import PackedBinaryConv2d, PackedBinaryLinear, _PackedBinary


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


def _set(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, name: str) -> bool:
        return isinstance(m, _PackedBinary) or super().is_leaf_module(m, name)


def _packed_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(packed layer, BatchNorm) pairs where the BatchNorm is the only consumer of the layer's
    output, found by tracing the forward pass; none if the model cannot be traced."""
    try:
        graph = _Tracer().trace(model)
    except Exception:  # data-dependent control flow: keep the BatchNorms as they are
        return []
    modules = dict(model.named_modules())
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.BatchNorm2d
                                                      | nn.BatchNorm1d):
            continue
        source = node.args[0]
        if (isinstance(source, fx.Node) and source.op == "call_module"
                and isinstance(modules.get(source.target), _PackedBinary)
                and len(source.users) == 1 and modules[node.target].track_running_stats):
            pairs.append((str(source.target), str(node.target)))
    return pairs


def _fold(layer: _PackedBinary, bn: nn.modules.batchnorm._BatchNorm) -> None:
    """BN(scale * c + bias) = (scale * s) * c + (bias - mean) * s + beta, s = gamma / std."""
    with torch.no_grad():
        s = torch.rsqrt(bn.running_var + bn.eps)
        if bn.affine:
            s = s * bn.weight
        scale = layer.scale if layer.scale is not None else torch.ones_like(s)
        bias = layer.bias if layer.bias is not None else torch.zeros_like(s)
        shift = bn.bias if bn.affine else torch.zeros_like(s)
        layer.scale = (scale * s).clone()
        layer.bias = ((bias - bn.running_mean) * s + shift).clone()


def freeze(model: nn.Module, fold_batchnorm: bool = True) -> nn.Module:
    """A copy of ``model`` for inference: every binary layer becomes a packed layer (1 bit per
    weight; W1A1 layers run the XOR-popcount kernels) and, with ``fold_batchnorm``, a BatchNorm
    that directly follows one is folded into its per-channel scale and offset. Every other layer
    is kept as it is. The copy is in eval mode and keeps ``edgecompress_spec`` so
    :func:`~edgecompress.deploy.save` can describe it."""
    frozen = harden(copy.deepcopy(model)).eval()
    for name, module in list(frozen.named_modules()):
        if isinstance(module, (BinaryLinear, BinaryConv2d)) and name:
            _set(frozen, name, _packed_layer(module))
    if fold_batchnorm:
        for layer_name, bn_name in _packed_bn_pairs(frozen):
            _fold(frozen.get_submodule(layer_name), frozen.get_submodule(bn_name))
            _set(frozen, bn_name, nn.Identity())
    for p in frozen.parameters():
        p.requires_grad_(False)
    return frozen
