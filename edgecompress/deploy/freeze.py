"""``freeze(model)``: a trained compressed model -> its inference form with packed layers."""

from __future__ import annotations

import copy
import operator

import torch
import torch.fx as fx
from torch import nn

from ..graph import (as_graph_module, call_counts, consumers, module_of, replace_submodule,
                     trace)
from ..layers import harden
from ..errors import ConversionError
from . import chunking
from .float_conv import PackedFloatConv2d
from .max_pool import PackedMaxPool2d
from .packed import PackedConv2dShape, PackedLayer, pack_layer, registered_packed_classes
from .transformer import PackedBinaryLinearBlock, PackedPoolingBranches


_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
_FOLDABLE = (PackedLayer, nn.Conv2d, nn.Linear)
_ACTIVATIONS = (nn.Hardtanh, nn.ReLU)


def _layer_bn_pairs(graph: fx.Graph, model: nn.Module) -> list[tuple[str, str]]:
    """(layer, BatchNorm) pairs where the BatchNorm (with running statistics) is the only
    consumer of a packed (``folds_affine``), Conv2d or Linear layer's output (each called
    once)."""
    modules = dict(model.named_modules())
    calls = call_counts(graph)
    pairs = []
    for node in graph.nodes:
        layer = module_of(node, modules)
        if (not isinstance(layer, _FOLDABLE) or calls[str(node.target)] != 1
                or not getattr(layer, "folds_affine", True)):
            continue
        users = consumers(node, modules)
        bn = module_of(users[0], modules) if len(users) == 1 else None
        if (isinstance(bn, _BATCHNORMS) and bn.track_running_stats
                and calls[str(users[0].target)] == 1):
            pairs.append((str(node.target), str(users[0].target)))
    return pairs


def _bn_affine(bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """BN(y) = s * y + t."""
    s = torch.rsqrt(bn.running_var + bn.eps)
    if bn.affine:
        s = s * bn.weight
    t = -bn.running_mean * s + (bn.bias if bn.affine else 0.0)
    return s, t


def _fold(layer: nn.Module, bn: nn.modules.batchnorm._BatchNorm) -> None:
    """Fold BN(y) = s y + t into the layer that produces y: a packed layer folds it itself
    (:meth:`PackedLayer.fold_affine`; its packed weights stay); a float Conv2d / Linear gets
    weight <- weight * s (per output channel), bias <- bias * s + t."""
    with torch.no_grad():
        s, t = _bn_affine(bn)
        if isinstance(layer, PackedLayer):
            layer.fold_affine(s, t)
            return
        bias = layer.bias if layer.bias is not None else torch.zeros_like(s)
        layer.weight.mul_(s.view(-1, *[1] * (layer.weight.dim() - 1)))
        layer.bias = nn.Parameter((bias * s + t).clone(), requires_grad=False)


def _sign_preserving(module: nn.Module) -> bool:
    """sign(module(y)) == sign(y) for every y (zero included: sign(0) = +1)."""
    return isinstance(module, nn.Identity) or (
        isinstance(module, nn.Hardtanh) and module.min_val < 0 < module.max_val)


def _signs_layout(module: nn.Module | None) -> str | None:
    return module.signs_layout if isinstance(module, PackedLayer) else None


def _emit_signs(graph: fx.Graph, model: nn.Module) -> None:
    """Where a packed layer that can emit packed signs (a W1A1 one) has its output reach only
    packed layers that read the same signs layout (conv -> conv, linear -> linear) through
    sign-preserving modules (folded BatchNorms, a hardtanh), the consumers only need its signs:
    the layer then emits them packed straight from the GEMM and the activations on the way
    become Identity."""
    modules = dict(model.named_modules())
    calls = call_counts(graph)
    for node in graph.nodes:
        producer = module_of(node, modules)
        layout = _signs_layout(producer)
        if layout is None or calls[str(node.target)] != 1:
            continue
        chain, last = [], node
        while len(last.users) == 1:
            (user,) = last.users
            module = modules.get(user.target) if user.op == "call_module" else None
            if module is None or not _sign_preserving(module) or calls[str(user.target)] != 1:
                break
            chain.append(str(user.target))
            last = user
        consumers = [module_of(u, modules) for u in last.users]
        if consumers and all(_signs_layout(c) == layout for c in consumers):
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


def _is_node_sum(node: fx.Node) -> bool:
    """``a + b`` of two graph values (not of a constant), the form the residual fusions match."""
    return (node.op == "call_function" and node.target in (operator.add, torch.add)
            and len(node.args) == 2 and not node.kwargs
            and all(isinstance(a, fx.Node) for a in node.args))


def _fuse_residuals(graph: fx.Graph, model: nn.Module) -> bool:
    """Rewrite ``act(layer(x) + r)`` (through Identity modules, e.g. folded BatchNorms) into
    ``layer(x, r)`` with the addition and a following hardtanh / ReLU computed in the GEMM's
    store loop, for packed layers that can (``fuses_residual``: the W1A1 ones and the direct
    float convolution) and output floats. Returns True if the graph changed."""
    modules = dict(model.named_modules())
    calls = call_counts(graph)
    changed = False
    for add in list(graph.nodes):
        if not _is_node_sum(add):
            continue
        for side in (0, 1):
            chain, layer_node = [], add.args[side]
            while (layer_node.op == "call_module" and len(layer_node.users) == 1
                   and isinstance(modules.get(layer_node.target), nn.Identity)):
                chain.append(layer_node)
                layer_node = layer_node.args[0]
            layer = modules.get(layer_node.target) if layer_node.op == "call_module" else None
            if (isinstance(layer, PackedLayer) and layer.fuses_residual
                    and not layer.emit_signs and layer.fused_clamp is None
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


def _channel_vector(node: object, model: nn.Module, n: int) -> torch.Tensor | None:
    """The tensor a ``get_attr`` node reads if it is a vector of n values, else None."""
    if not (isinstance(node, fx.Node) and node.op == "get_attr"):
        return None
    value = model
    for part in str(node.target).split("."):
        value = getattr(value, part, None)
    return value if isinstance(value, torch.Tensor) and value.shape == (n,) else None


def _fuse_block_affines(graph: fx.Graph, model: nn.Module) -> bool:
    """Rewrite ``r + (block(x) * s + t)`` (a transformer block's per-channel affine and residual
    after its attention's projection or MLP: BinaryViT) into ``block(x, shortcut, r)`` for a
    :class:`PackedBinaryLinearBlock` whose output only the product reads: the three float
    operations run in its epilogue pass, in the same order (the same values). Returns True if
    the graph changed."""
    modules = dict(model.named_modules())
    calls = call_counts(graph)
    changed = False
    for mul in list(graph.nodes):
        if not (mul.op == "call_function" and mul.target in (operator.mul, torch.mul)
                and len(mul.args) == 2 and not mul.kwargs and len(mul.users) == 1):
            continue
        layer_node, scale_node = mul.args
        layer = module_of(layer_node, modules)
        if (not isinstance(layer, PackedBinaryLinearBlock) or layer.block_scale is not None
                or calls[str(layer_node.target)] != 1 or len(layer_node.users) != 1
                or len(layer_node.args) > 2 or layer_node.kwargs):
            continue
        (inner,) = mul.users
        if not (inner.op == "call_function" and inner.target in (operator.add, torch.add)
                and len(inner.args) == 2 and inner.args[0] is mul and not inner.kwargs
                and len(inner.users) == 1):
            continue
        (outer,) = inner.users
        if not (outer.op == "call_function" and outer.target in (operator.add, torch.add)
                and len(outer.args) == 2 and not outer.kwargs):
            continue
        residual = outer.args[1] if outer.args[0] is inner else outer.args[0]
        bias_node = inner.args[1]
        scale = _channel_vector(scale_node, model, layer.out_features)
        bias = _channel_vector(bias_node, model, layer.out_features)
        if scale is None or bias is None or not isinstance(residual, fx.Node):
            continue
        layer.fuse_block_affine(scale, bias)
        x, shortcut = layer_node.args[0], layer_node.args[1] if len(layer_node.args) > 1 else None
        with graph.inserting_before(outer):
            fused = graph.call_module(str(layer_node.target), (x, shortcut, residual))
        outer.replace_all_uses_with(fused)
        for node in (outer, inner, mul, layer_node):
            graph.erase_node(node)  # each after its users
        for node in (scale_node, bias_node):
            if not node.users:
                graph.erase_node(node)
        changed = True
    return changed


def _fuse_branch_residuals(graph: fx.Graph, model: nn.Module) -> bool:
    """Rewrite ``y + branches(x)`` (a BinaryViT block's end) into ``branches(x, y)`` for a
    :class:`PackedPoolingBranches` whose output only the addition reads: the addition runs in
    the pooling pass (the same value: one rounded float sum). Returns True if the graph
    changed."""
    modules = dict(model.named_modules())
    calls = call_counts(graph)
    changed = False
    for add in list(graph.nodes):
        if not _is_node_sum(add):
            continue
        for side in (1, 0):
            node = add.args[side]
            if (isinstance(module_of(node, modules), PackedPoolingBranches)
                    and calls[str(node.target)] == 1 and len(node.users) == 1
                    and len(node.args) == 1 and not node.kwargs):
                break
        else:
            continue
        with graph.inserting_before(add):
            fused = graph.call_module(str(node.target), (node.args[0], add.args[1 - side]))
        add.replace_all_uses_with(fused)
        graph.erase_node(add)
        graph.erase_node(node)
        changed = True
    return changed


#: float layers with a C kernel of their own: a torch layer that one of them ``takes`` becomes
#: it (``from_trained``: the same weights, the same values)
FLOAT_KERNEL_LAYERS = (PackedFloatConv2d, PackedMaxPool2d)


def _float_kernel_layers(graph: fx.Graph, model: nn.Module) -> None:
    """Plain float layers that a class of :data:`FLOAT_KERNEL_LAYERS` takes (a float
    ``nn.Conv2d`` of a geometry the direct float kernel takes, an ``nn.MaxPool2d``) become that
    class (same submodule name)."""
    modules = dict(model.named_modules())
    for node in graph.nodes:
        module = module_of(node, modules)
        for cls in FLOAT_KERNEL_LAYERS:
            if module is not None and cls.takes(module):
                replace_submodule(model, str(node.target), cls.from_trained(module))
                break


def _fuse_activations(graph: fx.Graph, model: nn.Module) -> bool:
    """``act(layer(x))`` (through Identity modules, e.g. folded BatchNorms) for a
    :class:`PackedFloatConv2d` whose output only the ReLU / hardtanh reads: the clamp is
    computed in the kernel's store loop and the activation leaves the graph. Returns True if
    the graph changed."""
    modules = dict(model.named_modules())
    calls = call_counts(graph)
    changed = False
    for node in list(graph.nodes):
        layer = modules.get(node.target) if node.op == "call_module" else None
        if (not isinstance(layer, PackedFloatConv2d) or layer.fused_clamp is not None
                or calls[str(node.target)] != 1):
            continue
        last = node
        while len(last.users) == 1:
            (user,) = last.users
            module = modules.get(user.target) if user.op == "call_module" else None
            if not isinstance(module, (nn.Identity, *_ACTIVATIONS)) or calls[str(user.target)] != 1:
                break
            last = user
            if isinstance(module, _ACTIVATIONS):
                layer.fused_clamp = ((float(module.min_val), float(module.max_val))
                                     if isinstance(module, nn.Hardtanh) else (0.0, float("inf")))
                last.replace_all_uses_with(last.args[0])
                graph.erase_node(last)
                changed = True
                break
    return changed


_MAX_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, PackedMaxPool2d)


def _pool_before_activations(graph: fx.Graph, model: nn.Module) -> bool:
    """``maxpool(act(y))`` -> ``act(maxpool(y))`` for a ReLU / hardtanh whose output only the
    max-pool reads (a ResNet stem's end): a clamp is non-decreasing, so it commutes with the
    maximum (every window holds at least one value of ``y``): the same values (``torch.equal``;
    at most a zero's sign could differ), while the activation runs on the pooled map (a quarter
    of the values for a 3x3/2 pool) and in place. Returns True if the graph changed."""
    modules = dict(model.named_modules())
    changed = False
    for act_node in list(graph.nodes):
        if not (act_node.op == "call_module" and len(act_node.users) == 1
                and isinstance(modules.get(act_node.target), _ACTIVATIONS)):
            continue
        (pool_node,) = act_node.users
        pool = modules.get(pool_node.target) if pool_node.op == "call_module" else None
        if (not isinstance(pool, _MAX_POOLS) or getattr(pool, "return_indices", False)
                or pool_node.args[0] is not act_node):
            continue
        pool_node.replace_all_uses_with(act_node)
        pool_node.args = (act_node.args[0], *pool_node.args[1:])
        act_node.args = (pool_node, *act_node.args[1:])
        act_node.prepend(pool_node)
        changed = True
    return changed


def _views_to_reshapes(graph: fx.Graph) -> bool:
    """``x.view(shape)`` -> ``x.reshape(shape)``: the frozen model's activations are channels-last,
    which a view across channels cannot express (reshape gives the same values, copying where it
    must). A view to another dtype is left alone. Returns True if the graph changed."""
    changed = False
    for node in graph.nodes:
        if (node.op == "call_method" and node.target == "view"
                and not any(isinstance(a, torch.dtype) for a in (*node.args, *node.kwargs.values()))):
            node.target = "reshape"
            changed = True
    return changed


def _skip_identities(model: fx.GraphModule) -> None:
    """The graph no longer calls its ``nn.Identity`` modules (folded BatchNorms, a W1A1 chain's
    hardtanh, a model's own): each call's users read its input instead. At batch 1 a call costs
    about as much as a small layer's kernel (module call and nested attribute lookups), the
    same in a pruned network as in the unpruned one. The modules stay in the module tree (no
    state; ``frozen.stem[1]`` still is the folded BatchNorm's place), and save / load keeps
    them as it keeps every submodule the graph skips."""
    modules = dict(model.named_modules())
    for node in list(model.graph.nodes):
        if (node.op == "call_module" and type(modules.get(node.target)) is nn.Identity
                and len(node.args) == 1 and not node.kwargs):
            node.replace_all_uses_with(node.args[0])
            model.graph.erase_node(node)
    model.recompile()


def _check_options(options: dict[str, object]) -> None:
    """Every freeze option is one that some registered packed class takes."""
    known = sorted({o for cls in registered_packed_classes() for o in cls.freeze_options})
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ConversionError(f"freeze got unknown option(s) {unknown}; the packed layers take: "
                              f"{', '.join(known) or 'none'}")


def freeze(model: nn.Module, fold_batchnorm: bool = True, fuse: bool = True,
           **options: object) -> nn.Module:
    """A copy of ``model`` for inference.

    - Every layer of a class that a packed class declares (:func:`register_packed`) becomes
      that packed layer: binary layers 1 bit per weight (W1A1 layers run the XOR-popcount
      kernels, W1A32 linear layers the sign-select kernel), shift layers their ``bits``-bit
      codes (float kernels on the decoded powers of two), tensor-train layers their cores.
    - ``options`` go to the packed classes that declare them (``freeze_options``), each class
      getting its own only: ``core_bits=8`` stores tensor-train cores as 8-bit integers with
      one scale per core slice (default None: float32, outputs bit-exact). An option no
      registered packed class takes is an error.
    - ``fold_batchnorm``: a BatchNorm that directly follows a packed layer is folded into its
      per-channel scale and offset, and one that follows a float Conv2d or Linear into its
      weight and bias (the usual inference fusion; it reorders float rounding). Never into a
      distance layer (EuclidNet, AdderNet: its output is not linear in its weights).
    - ``fuse`` (the same values, fewer passes over memory): a W1A1 layer whose output only
      feeds other W1A1 layers (through folded BatchNorms and a hardtanh) hands them its signs
      packed, straight from the GEMM; ``act(layer(x) + r)`` (a residual block's end) is computed
      in the W1A1 layer's GEMM store loop; a ReLU / hardtanh that only a max-pool reads runs
      after the pool instead (the same values, on fewer of them: a ResNet stem); a
      transformer block's affine and residual after a binary block (BinaryViT) run in that
      block's epilogue, and its ``y + branches(x)`` in the pooling pass; then the
      model runs as a ``torch.fx.GraphModule`` with the same submodule names. Activations
      whose input nothing else reads run in place.
    - A plain float ``nn.Conv2d`` (BatchNorm folded in) that the direct float kernel takes
      (1x1 / 3x3, stride 1 / 2, padding 0 / 1, groups 1) becomes a
      :class:`~edgecompress.deploy.float_conv.PackedFloatConv2d`, whose cost at small batch
      follows its channel counts; with ``fuse`` a following ReLU / hardtanh, and a residual
      addition before it, run in its store loop as for the W1A1 layers. An ``nn.MaxPool2d``
      (dilation 1, no ceil mode) becomes a
      :class:`~edgecompress.deploy.max_pool.PackedMaxPool2d` (the same values; its kernel
      reads the channels-last maps).

    Every other layer is kept as it is. The copy is in eval mode, holds its 4-D float weights
    in channels-last memory format (so its activations are channels-last too, and a ``view``
    written in ``forward`` runs as ``reshape``) when it computes on feature maps (a packed
    convolution, or two or more float ones; a vision transformer's single float
    patch-embedding convolution keeps torch's default layout, in which it rounds as the
    training form does on every CPU), and keeps the model's plain attributes (``input_shape``,
    ``edgecompress_spec``). Models that torch.fx cannot trace get the packed layers only (and
    :func:`~edgecompress.deploy.save` cannot write them)."""
    _check_options(options)
    frozen = harden(copy.deepcopy(model)).eval()
    replaced: list[str] = []
    for name, module in list(frozen.named_modules()):
        if not name or any(name.startswith(r + ".") for r in replaced):
            continue  # (a packed layer packs its own children, e.g. a TT-LSTM's gate maps)
        packed = pack_layer(module, options)
        if packed is not None:
            replace_submodule(frozen, name, packed)
            replaced.append(name)
    graph = trace(frozen, leaves=(PackedLayer,))
    if graph is not None:
        if fold_batchnorm:
            for layer_name, bn_name in _layer_bn_pairs(graph, frozen):
                _fold(frozen.get_submodule(layer_name), frozen.get_submodule(bn_name))
                replace_submodule(frozen, bn_name, nn.Identity())
        _float_kernel_layers(graph, frozen)
        rewritten = _views_to_reshapes(graph)
        if fuse:
            _emit_signs(graph, frozen)
            rewritten = _fuse_residuals(graph, frozen) or rewritten
            rewritten = _fuse_block_affines(graph, frozen) or rewritten
            rewritten = _fuse_branch_residuals(graph, frozen) or rewritten
            rewritten = _fuse_activations(graph, frozen) or rewritten
            rewritten = _pool_before_activations(graph, frozen) or rewritten
        _inplace_activations(graph, frozen)
        if rewritten:
            frozen = as_graph_module(frozen, graph)
            _skip_identities(frozen)
    for p in frozen.parameters():
        p.requires_grad_(False)
    frozen.eval()
    if not _feature_map_model(frozen):  # e.g. a vision transformer's patch embedding only
        return frozen
    # channels-last: binary convolutions produce it and pack it fastest, and float pooling and
    # convolution in torch are faster in it too (same values to float rounding: on some CPUs,
    # e.g. AVX2 without AVX-512, torch's convolution rounds differently in this layout)
    frozen = frozen.to(memory_format=torch.channels_last)
    if chunking.chunkable(frozen):
        chunking.install(frozen)
    return frozen


def _feature_map_model(model: nn.Module) -> bool:
    """Whether ``model`` computes on feature maps: a packed convolution, or two or more float
    ones (a CNN), not a single float patch-embedding convolution (a vision transformer)."""
    packed = sum(isinstance(m, PackedConv2dShape) for m in model.modules())
    return packed > 0 or sum(isinstance(m, nn.Conv2d) for m in model.modules()) >= 2
