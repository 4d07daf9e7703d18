"""From a training checkpoint to a frozen model file that carries what its users need, and from a
frozen file back to its data.

:func:`freeze_checkpoint` rebuilds a checkpoint's model (:func:`~edgecompress.experiment.
load_trained`), freezes it (:func:`edgecompress.deploy.freeze`) and describes it
(:class:`~edgecompress.deploy.ModelMetadata`: dataset, input preprocessing as in training,
class names, recipe, epoch and final metrics); ``deploy.save(frozen.model, path,
metadata=frozen.metadata)`` writes both (``edgecompress freeze``). :func:`load_frozen_data`
loads the dataset split a frozen file's metadata names; :func:`load_frozen` gives a frozen file's
model with the recipe it was trained by (as :func:`~edgecompress.experiment.load_trained` does
for a checkpoint: ``edgecompress eval FILE``), :func:`float_counterpart` the float model of that
recipe (``bench model FILE``), and :func:`load_model` the model of either kind of file
(``summary FILE``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .deploy import ModelMetadata, PackedLayer, freeze, load, load_metadata
from .errors import ModelFileError, RecipeError
from .files import FileKind, detect_kind, mismatch
from .experiment import load_trained
from .recipe import Recipe
from .train.checkpoint import final_metrics, load_checkpoint

__all__ = ["FrozenCheckpoint", "freeze_checkpoint", "load_frozen", "float_counterpart",
           "load_model"]


@dataclass
class FrozenCheckpoint:
    """What :func:`freeze_checkpoint` returns. ``packed``: the names of the packed layers (none
    for a float model: then freezing only folds BatchNorms and switches to eval mode)."""

    model: nn.Module
    metadata: ModelMetadata
    packed: list[str]


def freeze_checkpoint(path: str | Path, data_root: str | None = None) -> FrozenCheckpoint:
    """Freeze the model of training checkpoint ``path`` and describe it. Reads the test split
    of its recipe's dataset (from ``data_root``, else the recipe's root) for the class names
    and the preprocessing."""
    model, recipe = load_trained(path)
    state = load_checkpoint(path)
    dataset = recipe.load_data("test", data_root)
    classes = getattr(dataset, "classes", None)
    metadata = ModelMetadata(
        dataset=recipe.data["name"],
        task=recipe.build_task(dataset).name,
        input_shape=tuple(state["extra_state"]["input_shape"]),
        input_dtype=str(getattr(model, "input_dtype", torch.float32)).removeprefix("torch."),
        classes=[str(c) for c in classes] if classes is not None else None,
        preprocessing=getattr(dataset, "preprocessing", None),
        recipe=recipe.to_dict(),
        training={"checkpoint": str(path), "metrics": final_metrics(state),
                  "epoch": None if state["epoch"] is None else int(state["epoch"])},
    )
    frozen = freeze(model)
    packed = [name for name, m in frozen.named_modules() if isinstance(m, PackedLayer)]
    return FrozenCheckpoint(frozen, metadata, packed)


def _recipe(path: str | Path, metadata: ModelMetadata, needed_for: str) -> Recipe:
    if metadata.recipe is None:
        raise ModelFileError(f"{path}: its metadata has no recipe, which {needed_for} needs")
    try:
        return Recipe.from_dict(metadata.recipe, f"{path} (recipe in the metadata)")
    except RecipeError as exc:
        raise ModelFileError(str(exc)) from None


def load_frozen(path: str | Path) -> tuple[nn.Module, Recipe]:
    """(model, training recipe) of a frozen file with metadata; the recipe's data section
    loads the dataset as ``eval`` of the checkpoint does."""
    metadata = load_metadata(path, required_for="evaluation")
    assert metadata is not None
    return load(path), _recipe(path, metadata, "evaluation")


def float_counterpart(path: str | Path) -> nn.Module:
    """The float model of a frozen file's recipe (its architecture without the recipe's
    methods, freshly initialised: a baseline for speed, not accuracy), in eval mode."""
    metadata = load_metadata(path, required_for="a float counterpart")
    assert metadata is not None
    recipe = dataclasses.replace(_recipe(path, metadata, "a float counterpart"), method=None)
    num_classes = len(metadata.classes) if metadata.classes is not None else None
    if num_classes is None:
        raise ModelFileError(f"{path}: its metadata names no classes, so the float model's "
                             f"output size is unknown")
    model, _ = recipe.build_model(num_classes, metadata.input_shape, load_pretrained=False)
    return model.eval()


def load_model(path: str | Path) -> nn.Module:
    """The model in a training checkpoint (rebuilt from its recipe) or a frozen file; a file
    of another kind is an error naming it."""
    kind = detect_kind(path)
    if kind is FileKind.FROZEN:
        return load(path)
    if kind is FileKind.CHECKPOINT:
        return load_trained(path)[0]
    raise ModelFileError(mismatch(path, (FileKind.CHECKPOINT, FileKind.FROZEN), kind)
                         or f"{path}: not a readable training checkpoint or frozen model file")
