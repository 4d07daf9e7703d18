"""Physical channel surgery: remove output channels of conv/linear layers for real, so parameters,
MACs and latency drop (item 5 of the SPR procedure; the baselines use it too).

The dependency analysis is Torch-Pruning's ``DependencyGraph`` (Fang et al., "DepGraph: Towards
Any Structural Pruning", CVPR 2023), not per-architecture code: removing output channel ``c`` of
a layer also removes the matching BatchNorm entries, the input channels (or flattened input
features) of every consumer, and channel ``c`` of every layer whose output is added to it
(residual additions), following concatenations and reshapes.

- :func:`coupled_groups` -> the :class:`CoupledGroup` s of a model: conv/linear layers whose
  output channels must be removed together (the two sides of a residual addition), with the
  channel correspondence, and why a group cannot be pruned (it reaches the model's output, or
  the graph has an operation Torch-Pruning does not model);
- :func:`effective_keep` -> the per-layer masks :func:`prune_channels` really applies once the
  coupling rule is applied (for a masked model that matches the pruned one);
- :func:`prune_channels` -> a physically smaller copy of the model;
- :func:`width_changes` -> the layers whose shapes differ between two models (for reports).

Coupling rule: a channel shared by coupled layers is removed only if *every* coupled layer drops
it (the union of the kept channels); a coupled layer absent from ``keep`` keeps all its
channels. ``on_conflict="raise"`` makes a disagreement an error instead. The result is always
shape-consistent, and if the removed channels are exactly zero in the model (zero filters and
bias, zero BatchNorm gamma and beta) the pruned model computes what the masked one does in eval
mode (when the activations map 0 to 0, as ReLU and hardtanh do).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Mapping, Sequence, Union

import torch
import torch_pruning as tp
from torch import Tensor, nn

from ..errors import ConversionError
from ..layers import CompressedLayer

__all__ = ["CoupledGroup", "coupled_groups", "effective_keep", "prune_channels",
           "width_changes", "PRUNABLE_TYPES"]

#: layer types whose output channels :func:`prune_channels` removes on request
PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)

#: example inputs: a tensor, a tuple of tensors, or an input shape without the batch dimension
Inputs = Union[Tensor, Sequence[Tensor], Sequence[int], None]


@dataclass
class CoupledGroup:
    """Conv/linear layers whose output channels are removed together.

    ``channels[layer][c]`` is the id (in ``range(size)``) of the coupled channel that output
    channel ``c`` of ``layer`` belongs to: channels with the same id are removed together (for a
    residual addition, channel c of every layer feeding it). ``feeds`` are the layers whose input
    channels follow the group's channels; ``reason`` says why the group cannot be pruned
    (None if it can).
    """

    layers: tuple[str, ...]
    channels: dict[str, Tensor]
    size: int
    feeds: tuple[str, ...] = ()
    reason: str | None = None

    def members(self, channel: int) -> list[tuple[str, int]]:
        """The (layer, output channel) pairs of coupled channel ``channel``."""
        return [(layer, int(c)) for layer in self.layers
                for c in torch.nonzero(self.channels[layer] == channel).flatten()]


def _example_inputs(model: nn.Module, inputs: Inputs) -> tuple[Tensor, ...]:
    if inputs is None:
        shape = getattr(model, "input_shape", None)
        if shape is None:
            raise ConversionError(
                f"{type(model).__name__} has no input_shape attribute: give example inputs (a "
                f"tensor) or an input shape without the batch dimension, e.g. (3, 32, 32)")
        inputs = tuple(shape)
    if isinstance(inputs, Tensor):
        return (inputs,)
    if all(isinstance(t, Tensor) for t in inputs):
        return tuple(inputs)  # type: ignore[arg-type]
    if not all(isinstance(s, int) and s > 0 for s in inputs):
        raise ConversionError(f"example inputs must be a tensor, tensors or an input shape of "
                              f"positive ints, got {inputs!r}")
    dtype = getattr(model, "input_dtype", torch.float32)
    shape = (2, *inputs)  # batch of 2: BatchNorm1d-style layers refuse a single sample
    return (torch.randn(shape) if dtype.is_floating_point else torch.zeros(shape, dtype=dtype),)


class _UnionFind(dict):
    """Disjoint sets of hashable items (each maps to its parent; roots to themselves)."""

    def find(self, x: Any) -> Any:
        self.setdefault(x, x)
        while self[x] != x:
            self[x] = self[self[x]]
            x = self[x]
        return x

    def union(self, a: Any, b: Any) -> None:
        self[self.find(a)] = self.find(b)


class _Graph:
    """Torch-Pruning's dependency graph of ``model`` (traced in eval mode, so BatchNorm running
    statistics are untouched) and the coupled groups read from it."""

    def __init__(self, model: nn.Module, inputs: tuple[Tensor, ...]) -> None:
        self.model = model
        modes = {m: m.training for m in model.modules()}
        model.eval()
        try:
            with torch.enable_grad():  # the graph is read from autograd
                self.dg = tp.DependencyGraph().build_dependency(
                    model, example_inputs=inputs[0] if len(inputs) == 1 else list(inputs),
                    verbose=False)
        except Exception as exc:
            raise ConversionError(f"Torch-Pruning could not trace {type(model).__name__} on the "
                                  f"example inputs: {exc}") from exc
        finally:
            for m, training in modes.items():
                m.training = training
        self.names = {m: n for n, m in model.named_modules()}
        self.layers = {n: m for n, m in model.named_modules()
                       if isinstance(m, PRUNABLE_TYPES) and m in self.dg.module2node}
        self.groups = self._groups()

    def _full_group(self, module: nn.Module) -> Any:
        pruner = self.dg.get_pruner_of_module(module)
        width = pruner.get_out_channels(module)
        return self.dg.get_pruning_group(module, pruner.prune_out_channels, list(range(width)))

    def _groups(self) -> list[CoupledGroup]:
        channels = _UnionFind()  # (layer, output channel) pairs removed together
        bad: dict[str, str] = {}
        feeds: dict[str, set[str]] = {}
        sink: set[str] = set()
        for name, module in self.layers.items():
            width = _out_channels(module)
            for c in range(width):
                channels.find((name, c))
            for item in self._full_group(module):
                dep, idxs = item.dep, item.idxs
                target = dep.target.module
                out = self.dg.is_out_channel_pruning_fn(dep.handler)
                if out and not dep.target.outputs:
                    sink.add(name)
                tname = self.names.get(target) if isinstance(target, nn.Module) else None
                if tname not in self.layers:
                    continue
                if not out:
                    feeds.setdefault(name, set()).add(tname)
                    continue
                limit = _out_channels(target)
                for root, idx in zip(item.root_idxs, idxs):
                    if idx >= limit or root >= width:
                        bad[name] = (
                            f"Torch-Pruning's dependency graph maps output channel {root} of "
                            f"{name!r} to channel {idx} of {tname!r}, which has {limit}: an "
                            f"operation between them changes the number of channels in a way "
                            f"it does not model (e.g. a zero-padding shortcut)")
                        continue
                    channels.union((tname, idx), (name, root))
        classes: dict[tuple[str, int], list[tuple[str, int]]] = {}
        for key in list(channels):
            classes.setdefault(channels.find(key), []).append(key)
        return self._components(classes, bad, feeds, sink)

    def _components(self, classes: dict[tuple[str, int], list[tuple[str, int]]],
                    bad: dict[str, str], feeds: dict[str, set[str]],
                    sink: set[str]) -> list[CoupledGroup]:
        tied = _UnionFind()  # layers sharing a coupled channel
        for members in classes.values():
            for n, _ in members:
                tied.union(n, members[0][0])
        order = list(self.layers)
        by_root: dict[str, list[str]] = {}
        for n in order:
            by_root.setdefault(tied.find(n), []).append(n)
        groups = []
        for layers in by_root.values():
            lset = set(layers)
            ids = {layer: torch.full((_out_channels(self.layers[layer]),), -1, dtype=torch.long)
                   for layer in layers}
            size = 0
            for members in classes.values():
                if members[0][0] not in lset:
                    continue
                for n, c in members:
                    ids[n][c] = size
                size += 1
            reason = next((bad[n] for n in layers if n in bad), None)
            out = [n for n in layers if n in sink]
            if reason is None and out:
                reason = f"its channels are the model's output (through {out[0]!r})"
            fed = sorted({f for n in layers for f in feeds.get(n, ())}, key=order.index)
            groups.append(CoupledGroup(tuple(layers), ids, size, tuple(fed), reason))
        return groups

    def group_of(self, layer: str) -> CoupledGroup:
        return next(g for g in self.groups if layer in g.layers)


def _out_channels(module: nn.Module) -> int:
    return module.out_features if isinstance(module, nn.Linear) else module.out_channels


def coupled_groups(model: nn.Module, inputs: Inputs = None) -> list[CoupledGroup]:
    """The conv/linear layers of ``model`` grouped by shared output channels, in module order.

    Args:
        model: the model (not modified; traced once in eval mode on the example inputs).
        inputs: example inputs (a tensor or tensors), or an input shape without the batch
            dimension; by default ``model.input_shape``.
    """
    return _Graph(copy.deepcopy(model), _example_inputs(model, inputs)).groups


def _check_keep(graph: _Graph, keep: Mapping[str, Tensor]) -> dict[str, Tensor]:
    masks = {}
    modules = dict(graph.model.named_modules())
    for name, mask in keep.items():
        module = modules.get(name)
        if module is None:
            raise ConversionError(f"prune_channels: the model has no layer {name!r}")
        if not isinstance(module, PRUNABLE_TYPES):
            raise ConversionError(
                f"prune_channels: layer {name!r} is a {type(module).__name__}; output channels "
                f"can be removed from {', '.join(t.__name__ for t in PRUNABLE_TYPES)} layers")
        if name not in graph.layers:
            raise ConversionError(f"prune_channels: layer {name!r} is not used by the model's "
                                  f"forward on the example inputs")
        mask = torch.as_tensor(mask).detach().cpu()
        width = _out_channels(module)
        if mask.dtype != torch.bool or mask.shape != (width,):
            raise ConversionError(
                f"prune_channels: the keep mask of layer {name!r} must be a bool tensor of shape "
                f"({width},) (its output channels), got {mask.dtype} {tuple(mask.shape)}")
        if not bool(mask.any()):
            raise ConversionError(
                f"prune_channels: the keep mask of layer {name!r} removes all its {width} output "
                f"channels; a layer must keep at least one")
        masks[name] = mask
    return masks


def _coupled_keep(graph: _Graph, masks: dict[str, Tensor],
                  on_conflict: str) -> dict[str, Tensor]:
    """Per coupled group touched by ``masks``: which coupled channels are kept (union rule)."""
    out: dict[str, Tensor] = {}
    for group in graph.groups:
        named = [n for n in group.layers if n in masks]
        if not named or all(bool(masks[n].all()) for n in named):
            continue
        if group.reason is not None:
            raise ConversionError(f"prune_channels: cannot remove output channels of layer "
                                  f"{named[0]!r}: {group.reason}")
        kept = torch.zeros(group.size, dtype=torch.bool)
        for n in group.layers:
            mask = masks.get(n, torch.ones(len(group.channels[n]), dtype=torch.bool))
            kept[group.channels[n][mask]] = True
        if on_conflict == "raise":
            for n in group.layers:
                mask = masks.get(n, torch.ones(len(group.channels[n]), dtype=torch.bool))
                if not torch.equal(mask, kept[group.channels[n]]):
                    others = [o for o in group.layers if o != n]
                    raise ConversionError(
                        f"prune_channels: layer {n!r} keeps channels "
                        f"{torch.nonzero(mask != kept[group.channels[n]]).flatten().tolist()} "
                        f"differently from the layers it is coupled with ({', '.join(others)}); "
                        f"coupled layers must drop the same channels (see coupled_groups)")
        for n in group.layers:
            out[n] = kept[group.channels[n]]
    return out


def effective_keep(model: nn.Module, keep: Mapping[str, Tensor], inputs: Inputs = None
                   ) -> dict[str, Tensor]:
    """The output-channel masks :func:`prune_channels` applies for ``keep``: every layer of a
    coupled group touched by ``keep``, with a channel kept if any coupled layer keeps it."""
    graph = _Graph(copy.deepcopy(model), _example_inputs(model, inputs))
    return _coupled_keep(graph, _check_keep(graph, keep), "keep")


def prune_channels(model: nn.Module, keep: Mapping[str, Tensor], inputs: Inputs = None, *,
                   on_conflict: str = "keep") -> nn.Module:
    """A copy of ``model`` without the output channels of the named layers where ``keep`` is
    False (the model itself is untouched).

    Args:
        model: any model Torch-Pruning can trace (the zoo CNNs, a user's own module).
        keep: layer name -> bool tensor over its output channels (True = keep), for Conv1d/2d/3d
            and Linear layers.
        inputs: example inputs (a tensor or tensors) or an input shape without the batch
            dimension; by default ``model.input_shape``.
        on_conflict: what to do when coupled layers (see :func:`coupled_groups`) disagree:
            ``"keep"`` keeps a channel any of them keeps (layers absent from ``keep`` keep all
            theirs), ``"raise"`` raises.

    The copy keeps the model's plain attributes (``input_shape``, ``num_classes``); its
    ``edgecompress_spec`` gains ``"pruned"``: layer -> output channels kept, for the layers
    whose width changed (the architecture no longer follows from the model's name alone).

    Raises:
        ConversionError: an unknown or unsupported layer, a mask of the wrong shape, a mask
            removing every channel of a layer, a compressed layer (prune before compressing),
            a group whose channels are the model's output or that Torch-Pruning cannot
            follow, or (``"raise"``) coupled layers disagreeing.
    """
    if on_conflict not in ("keep", "raise"):
        raise ConversionError(f"prune_channels: on_conflict must be 'keep' or 'raise', got "
                              f"{on_conflict!r}")
    compressed = [n for n, m in model.named_modules() if isinstance(m, CompressedLayer)]
    if compressed:
        kind = type(model.get_submodule(compressed[0])).__name__
        raise ConversionError(
            f"prune_channels: layer {compressed[0]!r} is a {kind}: prune the float model, then "
            f"compress it (e.g. convert with [l1-prune, bnn]); compressed layers carry "
            f"per-channel state the surgery does not follow")
    example = _example_inputs(model, inputs)
    pruned = copy.deepcopy(model)
    graph = _Graph(pruned, example)
    masks = _coupled_keep(graph, _check_keep(graph, keep), on_conflict)
    before = _output_shapes(pruned, example)
    changed: dict[str, int] = {}
    for group in graph.groups:
        if group.layers[0] not in masks:
            continue
        kept = torch.zeros(group.size, dtype=torch.bool)
        for n in group.layers:
            kept[group.channels[n][masks[n]]] = True
        _remove(graph, group, set(torch.nonzero(~kept).flatten().tolist()))
        changed.update({n: int(masks[n].sum()) for n in group.layers
                        if not bool(masks[n].all())})
    after = _output_shapes(pruned, example, changed)
    if before != after:
        raise ConversionError(f"prune_channels: removing channels of {sorted(changed)} changed "
                              f"the model's output shape from {before} to {after}")
    spec = getattr(pruned, "edgecompress_spec", None)
    if spec is not None and changed:
        pruned.edgecompress_spec = {**spec, "pruned": {**spec.get("pruned", {}), **changed}}
    return pruned


def _remove(graph: _Graph, group: CoupledGroup, remove: set[int]) -> None:
    """Remove coupled channels ``remove`` of ``group``, one Torch-Pruning group at a time (a
    root layer may hold only part of the coupled channels, e.g. one input of a concatenation)."""
    ids = {n: group.channels[n].clone() for n in group.layers}
    while remove:
        root = max(group.layers, key=lambda n: int(torch.isin(ids[n], torch.tensor(
            sorted(remove))).sum()))
        hit = torch.isin(ids[root], torch.tensor(sorted(remove)))
        module = graph.layers[root]
        pruner = graph.dg.get_pruner_of_module(module)
        tp_group = graph.dg.get_pruning_group(module, pruner.prune_out_channels,
                                              torch.nonzero(hit).flatten().tolist())
        tp_group.prune()
        gone = set(ids[root][hit].tolist())
        for n in group.layers:
            ids[n] = ids[n][~torch.isin(ids[n], torch.tensor(sorted(gone)))]
            if _out_channels(graph.layers[n]) != len(ids[n]):
                raise ConversionError(
                    f"prune_channels: Torch-Pruning left {_out_channels(graph.layers[n])} output "
                    f"channels in layer {n!r} where {len(ids[n])} were expected")
        remove -= gone


def _output_shapes(model: nn.Module, inputs: tuple[Tensor, ...],
                   changed: Mapping[str, int] | None = None) -> Any:
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            return _shapes(model(*inputs))
    except Exception as exc:
        if changed is None:
            raise
        raise ConversionError(f"prune_channels: the model no longer runs after removing channels "
                              f"of {sorted(changed)}: {exc}") from exc
    finally:
        for m, training in modes.items():
            m.training = training


def _shapes(value: Any) -> Any:
    if isinstance(value, Tensor):
        return tuple(value.shape)
    if isinstance(value, (list, tuple)):
        return [_shapes(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _shapes(v) for k, v in value.items()}
    return None


def _width(module: nn.Module) -> str | None:
    for a, b in (("in_channels", "out_channels"), ("in_features", "out_features")):
        if hasattr(module, a) and hasattr(module, b):
            return f"{type(module).__name__}({getattr(module, a)}, {getattr(module, b)})"
    if hasattr(module, "num_features"):
        return f"{type(module).__name__}({module.num_features})"
    return None


def width_changes(before: nn.Module, after: nn.Module) -> list[tuple[str, str, str]]:
    """(name, old width, new width) of the modules whose channel/feature counts differ between
    ``before`` and ``after`` (e.g. ``("layer.conv", "Conv2d(16, 32)", "Conv2d(16, 20)")``)."""
    new = dict(after.named_modules())
    out = []
    for name, module in before.named_modules():
        old_w = _width(module)
        new_w = _width(new[name]) if name in new else None
        if old_w is not None and new_w is not None and old_w != new_w:
            out.append((name, old_w, new_w))
    return out

