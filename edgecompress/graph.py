"""Shared torch.fx helpers for whole-model rewrites (freeze's fusions, pruning surgery, checks
that read the dataflow such as convert's W1A1-after-ReLU warning).

- :func:`trace` -> an ``fx.Graph`` of a model, with chosen module types kept as leaves, or None
  when the model cannot be traced (data-dependent control flow); :func:`is_leaf` -> whether
  it keeps a module as one node;
- :func:`call_counts` -> how many times each submodule is called in a graph (a module called
  twice cannot be rewritten for one of its calls only);
- :func:`consumers` -> where a node's output goes, optionally looking through per-channel
  modules (pooling, Identity...);
- :func:`replace_submodule` -> put a new module at a dotted name;
- :func:`as_graph_module` -> the model running a rewritten graph, with the same submodule names
  (so the same state_dict keys) and the model's own plain attributes.
"""

from __future__ import annotations

from typing import Iterable

import torch.fx as fx
from torch import nn

__all__ = ["trace", "is_leaf", "call_counts", "replace_submodule", "as_graph_module",
           "module_of", "consumers"]


class _LeafTracer(fx.Tracer):
    """torch.fx's tracer with extra leaf module types (not traced into)."""

    def __init__(self, leaves: tuple[type[nn.Module], ...] = ()) -> None:
        # (the default: unpickling a GraphModule re-traces its code with a subclass of its
        # graph's tracer class, constructed without arguments)
        super().__init__()
        self.leaves = leaves

    def is_leaf_module(self, m: nn.Module, name: str) -> bool:
        return isinstance(m, self.leaves) or super().is_leaf_module(m, name)


def trace(model: nn.Module, leaves: Iterable[type[nn.Module]] = (), *,
          strict: bool = False) -> fx.Graph | None:
    """The fx graph of ``model`` with modules of the ``leaves`` types (and torch.nn's own layers)
    as single ``call_module`` nodes; None if torch.fx cannot trace the model (``strict``: the
    tracer's exception is raised instead, for callers that must report why)."""
    try:
        return _LeafTracer(tuple(leaves)).trace(model)
    except Exception:  # data-dependent control flow, unsupported Python: no graph
        if strict:
            raise
        return None


def is_leaf(module: nn.Module, leaves: Iterable[type[nn.Module]] = ()) -> bool:
    """Whether :func:`trace` keeps ``module`` as one ``call_module`` node (a ``leaves`` type or
    one of torch.nn's own layers) rather than tracing into its forward."""
    return _LeafTracer(tuple(leaves)).is_leaf_module(module, "")


def call_counts(graph: fx.Graph) -> dict[str, int]:
    """Submodule name -> number of ``call_module`` nodes calling it."""
    counts: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            counts[str(node.target)] = counts.get(str(node.target), 0) + 1
    return counts


def module_of(node: object, modules: dict[str, nn.Module]) -> nn.Module | None:
    """The module a ``call_module`` node calls (``modules`` is ``dict(model.named_modules())``),
    else None."""
    if isinstance(node, fx.Node) and node.op == "call_module":
        return modules.get(str(node.target))
    return None


def consumers(node: fx.Node, modules: dict[str, nn.Module],
              through: tuple[type[nn.Module], ...] = ()) -> list[fx.Node]:
    """The nodes that use ``node``'s output, looking through chains of single-consumer modules
    of the ``through`` types (e.g. pooling, Identity, Dropout: modules that keep channels apart);
    ``modules`` is ``dict(model.named_modules())``."""
    users = list(node.users)
    while len(users) == 1 and isinstance(module_of(users[0], modules), through):
        users = list(users[0].users)
    return users


def replace_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    """Set the submodule at dotted ``name`` (e.g. ``"layer1.0.conv1"``) to ``new``."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def as_graph_module(model: nn.Module, graph: fx.Graph) -> fx.GraphModule:
    """``model`` running ``graph``, named after the model's class, with the model's own module
    tree (the same submodules, containers such as nn.Sequential kept, so the same state_dict
    keys and ``gm.stages[0]`` still works; submodules the graph no longer calls are dropped from
    it, so ``model`` is modified) and plain attributes (``edgecompress_spec``,
    ``input_shape``...). It pickles with ``torch.save`` like any GraphModule."""
    graph.lint()
    for node in graph.nodes:
        if isinstance(node.type, str):  # a postponed annotation ("Tensor", under `from
            node.type = None  # __future__ import annotations`): torch.save could not pickle it
    gm = fx.GraphModule(model, graph, class_name=type(model).__name__)
    for name, child in model.named_children():  # fx rebuilt the containers as plain Modules
        setattr(gm, name, child)
    gm.delete_all_unused_submodules()
    for key, value in vars(model).items():
        if not key.startswith("_") and key not in vars(gm):
            setattr(gm, key, value)
    return gm
