"""Structured groups of a model: which weights are kept or removed together.

One group is one output channel of a layer: a Conv2d filter (its ``in/groups x kh x kw``
weights) or a Linear row, joined by default with the BatchNorm that consumes that layer's output
(its ``gamma_j`` and ``beta_j``), as in the SPR paper (Cacciola, Frangioni, Li, Lodi, "Deep Neural
Networks pruning via the Structured Perspective Regularization", arXiv 2206.14056). Removing
group ``j`` removes output channel ``j`` of the layer and of its BatchNorm.

The pairing layer -> BatchNorm is read from the torch.fx dataflow graph, never from module names:
a BatchNorm is joined to a layer when it is the only consumer of the layer's output, directly or
through per-channel, shape-keeping modules (max/avg pooling, Identity, Dropout: VGG-small puts a
max-pool between a conv and its BatchNorm), both are called once, the BatchNorm is affine and
has one feature per output channel.

A layer whose output is the model's output (the classifier: its rows are the classes) is never
a group source.

Group kinds are ``+``-joined parts: ``conv`` (Conv2d filters), ``linear`` (Linear rows), ``bn``
(join the BatchNorm that follows); e.g. ``"conv+bn"`` (the default of the paper), ``"conv"``
(filters only), ``"conv+bn+linear"``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx as fx
from torch import Tensor, nn

from ..errors import PruningError
from ..graph import call_counts, consumers, module_of, trace

__all__ = ["LayerGroups", "find_groups", "parse_kind", "LAYER_PARTS"]

# kind part -> layer type whose output channels are groups
LAYER_PARTS: dict[str, type[nn.Module]] = {"conv": nn.Conv2d, "linear": nn.Linear}
_JOIN_BN = "bn"
# per-channel modules that keep the channel layout between a layer and its BatchNorm
_CHANNELWISE = (nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.Identity,
                nn.Dropout, nn.Dropout1d, nn.Dropout2d)
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


@dataclass(frozen=True)
class LayerGroups:
    """The groups of one layer: row ``j`` of :meth:`matrix` is group ``j`` (output channel j).

    ``layer``: dotted name of the Conv2d / Linear; ``bn``: dotted name of the BatchNorm joined
    to it, or None.
    """

    layer: str
    bn: str | None = None

    def matrix(self, model: nn.Module) -> Tensor:
        """``(out_channels, n)`` matrix of the groups' entries: the flattened filter (row) and,
        with a BatchNorm, its gamma_j and beta_j as the last two columns. Differentiable."""
        weight = model.get_submodule(self.layer).weight
        rows = weight.reshape(weight.shape[0], -1)
        if self.bn is None:
            return rows
        bn = model.get_submodule(self.bn)
        return torch.cat([rows, bn.weight[:, None], bn.bias[:, None]], dim=1)

    def size(self, model: nn.Module) -> int:
        """n_j: the number of entries of each group of this layer."""
        weight = model.get_submodule(self.layer).weight
        return weight[0].numel() + (2 if self.bn is not None else 0)


def parse_kind(kind: str) -> tuple[tuple[type[nn.Module], ...], bool]:
    """``"conv+bn"`` -> ((nn.Conv2d,), True): the layer types and whether BatchNorms are joined.
    Unknown parts, or no layer part, are a :class:`PruningError` naming the kind."""
    if not isinstance(kind, str):
        raise PruningError(f"group kind must be a string such as 'conv+bn', got {kind!r}")
    parts = [p.strip().lower() for p in kind.split("+")]
    valid = [*LAYER_PARTS, _JOIN_BN]
    unknown = [p for p in parts if p not in valid]
    layers = tuple(LAYER_PARTS[p] for p in LAYER_PARTS if p in parts)
    if unknown or not layers:
        raise PruningError(f"unknown group kind {kind!r}: use '+'-joined parts of "
                           f"{', '.join(valid)} with at least one of {', '.join(LAYER_PARTS)} "
                           f"(e.g. 'conv+bn', 'conv', 'conv+bn+linear')")
    return layers, _JOIN_BN in parts


def find_groups(model: nn.Module, kind: str = "conv+bn") -> list[LayerGroups]:
    """The groups of ``model`` (one :class:`LayerGroups` per layer, in graph order) of ``kind``
    (see the module docstring). Needs a model torch.fx can trace: an untraceable model is a
    :class:`PruningError` with the tracer's reason."""
    layer_types, join_bn = parse_kind(kind)
    try:
        graph = trace(model, (*LAYER_PARTS.values(), *_BATCHNORMS), strict=True)
    except Exception as exc:
        raise PruningError(f"cannot find pruning groups of {type(model).__name__}: torch.fx "
                           f"cannot trace it ({type(exc).__name__}: {exc})") from None
    modules = dict(model.named_modules())
    calls = call_counts(graph)
    found: list[LayerGroups] = []
    seen: set[str] = set()
    for node in graph.nodes:
        layer = module_of(node, modules)
        name = str(node.target)
        if not isinstance(layer, layer_types) or name in seen:
            continue
        seen.add(name)
        users = consumers(node, modules, _CHANNELWISE)
        if any(user.op == "output" for user in users):
            continue  # the model's output (a classifier): its channels are not removable
        bn_name = None
        if join_bn and len(users) == 1:
            bn = module_of(users[0], modules)
            out_channels = layer.weight.shape[0]
            if (isinstance(bn, _BATCHNORMS) and bn.affine and bn.num_features == out_channels
                    and calls[name] == 1 and calls[str(users[0].target)] == 1):
                bn_name = str(users[0].target)
        found.append(LayerGroups(name, bn_name))
    return found
