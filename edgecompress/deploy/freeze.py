"""``freeze(model)``: a trained binarized model -> its inference form with packed weights."""

from __future__ import annotations

import copy
import operator

import torch
import torch.fx as fx
from torch import nn

from .. import kernels
from ..graph import as_graph_module, call_counts, replace_submodule, trace
from ..layers import BinaryConv2d, BinaryLinear, ShiftConv2d, ShiftLinear, harden
from .modules import (PackedBinaryConv2d, PackedBinaryLinear, PackedShiftConv2d,
                      PackedShiftLinear, _PackedBinary, _PackedShift)


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


def _packed_shift_layer(layer: ShiftLinear | ShiftConv2d) -> nn.Module:
    options = dict(method=layer.method, bits=layer.weight_bits, bias=layer.bias is not None,
                   input_quantizer=copy.deepcopy(layer.input_quantizer))
    if isinstance(layer, ShiftConv2d):
        new: nn.Module = PackedShiftConv2d(
            layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
            layer.padding, layer.dilation, layer.groups, **options)
    else:
        new = PackedShiftLinear(layer.in_features, layer.out_features, **options)
    with torch.no_grad():
        new.encode(layer.hard_weight())
        if layer.bias is not None:
            new.bias.copy_(layer.bias.detach())
    return new


_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
_FOLDABLE = (_PackedBinary, _PackedShift, nn.Conv2d, nn.Linear)
_ACTIVATIONS = (nn.Hardtanh, nn.ReLU)


def _layer_bn_pairs(graph: fx.Graph, model: nn.Module) -> list[tuple[str, str]]:
    """(layer, BatchNorm) pairs where the BatchNorm (with running statistics) is the only
    consumer of a packed, Conv2d or Linear layer's output."""
    modules = dict(model.named_modules())
    calls = call_counts(graph)
    pairs = []
    for node in graph.nodes:
        bn = modules.get(node.target) if node.op == "call_module" else None
        if not isinstance(bn, _BATCHNORMS) or not bn.track_running_stats:
            continue
        source = node.args[0]
        if (isinstance(source, fx.Node) and source.op == "call_module"
                and isinstance(modules.get(source.target), _FOLDABLE)
                and len(source.users) == 1 and calls[str(source.target)] == 1
                and calls[str(node.target)] == 1):
            pairs.append((str(source.target), str(node.target)))
    return pairs


def _bn_affine(bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """BN(y) = s * y + t."""
    s = torch.rsqrt(bn.running_var + bn.eps)
    if bn.affine:
        s = s * bn.weight
    t = -bn.running_mean * s + (bn.bias if bn.affine else 0.0)
    return s, t


def _fold(layer: nn.Module, bn: nn.modules.batchnorm._BatchNorm) -> None:
    """Fold BN(y) = s y + t into the layer that produces y. A packed layer's output is
    scale * c + bias, so scale <- scale * s, bias <- bias * s + t (the 1-bit weights stay);
    a packed shift layer scales its decoded weights (its codes stay); a float Conv2d / Linear
    gets weight <- weight * s (per output channel), bias <- bias * s + t."""
    with torch.no_grad():
        s, t = _bn_affine(bn)
        if isinstance(layer, _PackedShift):
            layer.fold_affine(s, t)
            return
        bias = layer.bias if layer.bias is not None else torch.zeros_like(s)
        if isinstance(layer, _PackedBinary):
            scale = layer.scale if layer.scale is not None else torch.ones_like(s)
            layer.scale = (scale * s).clone()
            layer.bias = (bias * s + t).clone()
            return
        layer.weight.mul_(s.view(-1, *[1] * (layer.weight.dim() - 1)))
        layer.bias = nn.Parameter((bias * s + t).clone(), requires_grad=False)


def _sign_preserving(module: nn.Module) -> bool:
    """sign(module(y)) == sign(y) for every y (zero included: sign(0) = +1)."""
    return isinstance(module, nn.Identity) or (
        isinstance(module, nn.Hardtanh) and module.min_val < 0 < module.max_val)


def _emit_signs(graph: fx.Graph, model: nn.Module) -> None:
    """Where a W1A1 packed layer's output reaches only W1A1 packed layers of the same kind
    (conv -> conv, linear -> linear) through sign-preserving modules (folded BatchNorms, a
    hardtanh), the consumers only need its signs: the layer then emits them packed straight
    from the GEMM and the activations on the way become Identity."""
    modules = dict(model.named_modules())
    calls = call_counts(graph)
    for node in graph.nodes:
        producer = modules.get(node.target) if node.op == "call_module" else None
        if not (isinstance(producer, _PackedBinary) and producer.binary_inputs
                and getattr(producer, "groups", 1) == 1 and calls[str(node.target)] == 1):
            continue
        chain, last = [], node
        while len(last.users) == 1:
            (user,) = last.users
            module = modules.get(user.target) if user.op == "call_module" else None
            if module is None or not _sign_preserving(module) or calls[str(user.target)] != 1:
                break
            chain.append(str(user.target))
            last = user
        consumers = [modules.get(u.target) if u.op == "call_module" else None for u in last.users]
        if consumers and all(type(c) is type(producer) and c.binary_inputs
                             and getattr(c, "groups", 1) == 1 for c in consumers):
            producer.emit_signs = True
            for name in chain:
                replace_submodule(model, name, nn.Identity())


def _inplace_activations(graph: fx.Graph, model: nn.Module) -> None:
    """Let activations overwrite their input where nothing else reads it (saves a pass over
    memory per activation); never the model's own input."""
    modules = dict(model.named_modules())
    safe: dict[str, bool] = {}
    for node in graph.nodes:
        if node.op == "call_module" and isinstance(modules.get(node.target), _ACTIVATIONS):
            source = node.args[0]
            ok = (isinstance(source, fx.Node) and source.op != "placeholder"
                  and len(source.users) == 1)
            safe[str(node.target)] = safe.get(str(node.target), True) and ok
    for name, ok in safe.items():
        if ok:
            modules[name].inplace = True


def _fuse_residuals(graph: fx.Graph, model: nn.Module) -> bool:
    """Rewrite ``act(layer(x) + r)`` (through Identity modules, e.g. folded BatchNorms) into
    ``layer(x, r)`` with the addition and a following hardtanh / ReLU computed in the GEMM's
    store loop, for W1A1 packed layers that output floats. Returns True if the graph changed."""
    modules = dict(model.named_modules())
    calls = call_counts(graph)
    changed = False
    for add in list(graph.nodes):
        if not (add.op == "call_function" and add.target in (operator.add, torch.add)
                and len(add.args) == 2 and not add.kwargs
                and all(isinstance(a, fx.Node) for a in add.args)):
            continue
        for side in (0, 1):
            chain, layer_node = [], add.args[side]
            while (layer_node.op == "call_module" and len(layer_node.users) == 1
                   and isinstance(modules.get(layer_node.target), nn.Identity)):
                chain.append(layer_node)
                layer_node = layer_node.args[0]
            layer = modules.get(layer_node.target) if layer_node.op == "call_module" else None
            if (isinstance(layer, _PackedBinary) and layer.binary_inputs
                    and getattr(layer, "groups", 1) == 1 and not layer.emit_signs and layer.fused_clamp is None
                    and len(layer_node.users) == 1 and calls[str(layer_node.target)] == 1
                    and len(layer_node.args) == 1):
                break
        else:
            continue
        residual = add.args[1 - side]
        users = list(add.users)
        act = modules.get(users[0].target) if len(users) == 1 and users[0].op == "call_module" \
            else None
        with graph.inserting_before(add):
            fused = graph.call_module(str(layer_node.target), (layer_node.args[0], residual))
        last = add
        if isinstance(act, (nn.Hardtanh, nn.ReLU)) and calls[str(users[0].target)] == 1:
            layer.fused_clamp = ((float(act.min_val), float(act.max_val))
                                 if isinstance(act, nn.Hardtanh) else (0.0, float("inf")))
            last = users[0]
        last.replace_all_uses_with(fused)
        for node in ([last] if last is not add else []) + [add, *chain, layer_node]:
            graph.erase_node(node)  # each after its users
        changed = True
    return changed


def freeze(model: nn.Module, fold_batchnorm: bool = True, fuse: bool = True) -> nn.Module:
    """A copy of ``model`` for inference.

    - Every binary layer becomes a packed layer (1 bit per weight; W1A1 layers run the
      XOR-popcount kernels, W1A32 linear layers the sign-select kernel), and every shift layer
      a packed shift layer (its ``bits``-bit codes; float kernels on the decoded powers of two).
    - ``fold_batchnorm``: a BatchNorm that directly follows a packed layer is folded into its
      per-channel scale and offset, and one that follows a float Conv2d or Linear into its
      weight and bias (the usual inference fusion; it reorders float rounding).
    - ``fuse`` (the same values, fewer passes over memory): a W1A1 layer whose output only
      feeds other W1A1 layers (through folded BatchNorms and a hardtanh) hands them its signs
      packed, straight from the GEMM; ``act(layer(x) + r)`` (a residual block's end) is computed
      in the W1A1 layer's GEMM store loop; then the model runs as a ``torch.fx.GraphModule``
      with the same submodule names. Activations whose input nothing else reads run in place.

    Every other layer is kept as it is. The copy is in eval mode, holds its 4-D float weights
    in channels-last memory format, and keeps ``edgecompress_spec`` so
    :func:`~edgecompress.deploy.save` can describe it. Models that torch.fx cannot trace get the
    packed layers only."""
    frozen = harden(copy.deepcopy(model)).eval()
    for name, module in list(frozen.named_modules()):
        if isinstance(module, (BinaryLinear, BinaryConv2d)) and name:
            replace_submodule(frozen, name, _packed_layer(module))
        elif isinstance(module, (ShiftLinear, ShiftConv2d)) and name:
            replace_submodule(frozen, name, _packed_shift_layer(module))
    graph = trace(frozen, leaves=(_PackedBinary, _PackedShift))
    if graph is not None:
        if fold_batchnorm:
            for layer_name, bn_name in _layer_bn_pairs(graph, frozen):
                _fold(frozen.get_submodule(layer_name), frozen.get_submodule(bn_name))
                replace_submodule(frozen, bn_name, nn.Identity())
        rewritten = False
        if fuse:
            _emit_signs(graph, frozen)
            rewritten = _fuse_residuals(graph, frozen)
        _inplace_activations(graph, frozen)
        if rewritten:
            frozen = as_graph_module(frozen, graph)
    for p in frozen.parameters():
        p.requires_grad_(False)
    # channels-last: binary convolutions produce it and pack it fastest, and float pooling and
    # convolution in torch are faster in it too (the result is the same, only the layout differs)
    return frozen.to(memory_format=torch.channels_last)
