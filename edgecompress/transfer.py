"""Transfer learning: start a model from the weights of another trained run, with a new head.

A recipe's ``pretrained:`` entry names a checkpoint written by ``edgecompress train`` (a float
run of the same architecture). :meth:`edgecompress.recipe.Recipe.build_model` creates the
model for the new data (so its classification head already has the new number of classes),
:func:`load_pretrained` copies every weight except the head's from the checkpoint, and only
then are the recipe's methods applied: a converted layer starts from the pretrained float
weights as its method's ``init`` says (``"from-float"`` keeps them, ``"low-variance"`` draws
new latents; see :mod:`edgecompress.quantizers.shift`).

Loading is strict outside the head: another architecture, a checkpoint trained with a
compression method, or any missing, extra or differently shaped weight is a
:class:`~edgecompress.errors.CheckpointError` naming the file and the problem. The head is the
module the recipe names (``pretrained: {checkpoint: PATH, head: classifier}``), else the last
``nn.Linear`` of the model (``fc`` of the zoo ResNets, ``classifier`` of kws-resnet).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from .errors import CheckpointError
from .registry import normalize_name
from .train.checkpoint import load_checkpoint

#: model options that may differ between the pretrained run and the new one (the new data's)
_DATA_OPTIONS = ("num_classes", "input_shape")


def find_head(model: nn.Module, name: str | None = None) -> str:
    """The name of ``model``'s classification head: module ``name`` if given (it must exist),
    else the last ``nn.Linear``."""
    modules = dict(model.named_modules())
    if name is not None:
        if not name or name not in modules:
            shown = ", ".join(n for n in modules if n)
            raise CheckpointError(f"recipe key 'pretrained.head': {type(model).__name__} has no "
                                  f"module {name!r}; its modules: {shown}")
        return name
    linears = [n for n, m in modules.items() if isinstance(m, nn.Linear)]
    if not linears:
        raise CheckpointError(f"{type(model).__name__} has no nn.Linear to take as the "
                              f"classification head; name it with 'pretrained.head'")
    return linears[-1]


def _model_section(raw: Any) -> dict[str, Any]:
    section = {"name": raw} if isinstance(raw, str) else dict(raw or {})
    section["name"] = normalize_name(str(section.get("name", "")))
    return {k: v for k, v in section.items() if k not in _DATA_OPTIONS}


def _check_source(path: Path, extra: Mapping[str, Any], model_spec: Mapping[str, Any]) -> None:
    """The checkpoint holds a float model of the architecture ``model_spec`` describes."""
    stored = extra.get("recipe")
    if not isinstance(stored, Mapping) or "model" not in stored:
        raise CheckpointError(f"pretrained checkpoint {path}: it stores no recipe, so its "
                              f"architecture cannot be checked (use a checkpoint written by "
                              f"edgecompress train)")
    theirs, ours = _model_section(stored["model"]), _model_section(model_spec)
    if theirs != ours:
        raise CheckpointError(f"pretrained checkpoint {path}: it holds model {theirs}, the "
                              f"recipe builds {ours} (another architecture)")
    if stored.get("method") is not None or extra.get("prune_phase") is not None:
        what = (f"method {stored.get('method')}" if stored.get("method") is not None
                else f"pruning phase {extra.get('prune_phase')!r}")
        raise CheckpointError(f"pretrained checkpoint {path}: it holds a model trained with "
                              f"{what}; pretrained: takes a float run of the same architecture "
                              f"(the recipe's methods are applied after loading)")


def load_pretrained(model: nn.Module, path: str | Path, model_spec: Mapping[str, Any], *,
                    head: str | None = None, reset_head: bool = True) -> str:
    """Copy the weights of checkpoint ``path`` into the float ``model`` (built from the recipe
    model section ``model_spec``), except those of the head, which keeps its fresh
    initialisation for the new classes (``reset_head=False``: loaded too, so its shape must
    match). Returns the head's module name."""
    path = Path(path)
    try:
        checkpoint = load_checkpoint(path)
    except CheckpointError as exc:
        raise CheckpointError(f"recipe key 'pretrained.checkpoint': {exc}") from None
    _check_source(path, checkpoint.get("extra_state") or {}, model_spec)
    name = find_head(model, head)
    module = dict(model.named_modules())[name]
    num_classes = model_spec.get("num_classes")
    if isinstance(module, nn.Linear) and num_classes is not None \
            and module.out_features != num_classes:
        raise CheckpointError(f"the head {name!r} ({module.out_features} outputs) is not the "
                              f"classifier of the {num_classes} classes; name it with "
                              f"'pretrained.head'")
    in_head = (lambda key: key.startswith(name + ".")) if reset_head else (lambda key: False)
    own, state = model.state_dict(), checkpoint["model"]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: model {tuple(own[k].shape)} vs file {tuple(state[k].shape)}"
              for k in own if k in state and not in_head(k) and own[k].shape != state[k].shape]
    problems = [f"{what}: {', '.join(keys)}" for what, keys in (
        ("missing weights", missing), ("unexpected weights", unexpected)) if keys]
    if shapes:
        where = (f"outside the head {name!r}" if reset_head
                 else f"(the head {name!r} included: reset_head is false)")
        problems.append(f"shape mismatches {where}: {'; '.join(shapes)}")
    if problems:
        raise CheckpointError(f"pretrained checkpoint {path} does not match the recipe's "
                              f"{type(model).__name__}: " + " | ".join(problems))
    with torch.no_grad():
        model.load_state_dict({k: v for k, v in state.items() if not in_head(k)}, strict=False)
    return name
