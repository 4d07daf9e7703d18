"""Running a recipe end to end, and rebuilding a trained model from its checkpoint."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .convert import ConversionReport
from .errors import CheckpointError, RecipeError
from .files import FileKind, mismatch
from .pruning import create_regularizer
from .pruning.pipeline import phase_model
from . import data as data_lib
from .recipe import Recipe
from .analysis import WeightFlipMonitor
from .analysis.diagnostics import discrete_layers
from .layers import harden
from .train import (Callback, Trainer, evaluate, load_checkpoint, load_model_state,
                    resolve_device, seed_everything)
from .train.tasks import Task
from .train.trainer import CHECKPOINT


@dataclass
class RunResult:
    """What :func:`run` returns: final metrics, per-epoch history, the trained model and its
    conversion report."""

    metrics: dict[str, Any]
    history: list[dict[str, Any]]
    model: nn.Module
    report: ConversionReport | None
    recipe: Recipe


def run(
    recipe: Recipe,
    *,
    out_dir: str | Path | None = None,
    resume: bool = False,
    data_root: str | None = None,
    progress: bool = True,
    callbacks: tuple[Callback, ...] = (),
    device: str | torch.device | None = None,
) -> RunResult:
    """Train ``recipe``: load data, build and convert the model, train, evaluate on the test split
    (after every epoch, or, for a dataset with a ``valid`` split such as a text corpus, on that
    split after every epoch and on the test split after the last one).

    A compressed model is trained with a :class:`WeightFlipMonitor` (flip rates and latent weight
    histograms go to the metrics log), and is also evaluated in its deployed form (every forward
    quantizer exactly sign): ``hard_test_<metric>`` (``hard_test_top1``, ``hard_test_loss``, ...).
    The task comes from the recipe, else from the dataset (see :meth:`Recipe.build_task`).
    The recipe's ``regularizer`` (e.g. SPR, :mod:`edgecompress.pruning`) is added to the
    training loss; its ``reference`` checkpoint is loaded with :func:`load_trained`.

    ``out_dir`` (or the recipe's ``out_dir``) receives ``checkpoint.pt``, ``metrics.jsonl`` and
    ``curves.png``; ``resume=True`` continues from the checkpoint there (there must be one).
    The checkpoint stores the recipe and ``data_root`` (absolute), which :func:`load_trained`
    uses. Before training the model is run on two test samples, so that a model that does not
    fit the data is named as such (:class:`RecipeError`).

    ``device``: ``"cpu"``, ``"cuda"`` (under torchrun: ``cuda:LOCAL_RANK``), ``"cuda:N"``, or None
    for CUDA if available, else CPU.
    """
    device = resolve_device(device)  # a bad device fails before any data is read
    out = str(out_dir) if out_dir is not None else recipe.out_dir
    if resume and (out is None or not (Path(out) / CHECKPOINT).is_file()):
        where = f"{out} holds no {CHECKPOINT}" if out else "no output directory is set"
        raise CheckpointError(f"cannot resume: {where} (a new or mistyped output directory?); "
                              f"start without resume to train from scratch")
    train_set = recipe.load_data("train", data_root)
    test_set = recipe.load_data("test", data_root)
    # a dataset with a validation split (a text corpus) is watched on it, the test split is
    # evaluated once at the end
    valid_set = (recipe.load_data("valid", data_root)
                 if "valid" in data_lib.splits(recipe.data["name"]) else None)
    shape = {"num_classes": train_set.num_classes, "input_shape": list(train_set.input_shape)}
    seed_everything(recipe.seed)  # the initial weights depend on the seed only
    model, report = recipe.build_model(**shape)
    task = recipe.build_task(train_set)
    check_fits(model, test_set, task, recipe)
    teacher = None
    if recipe.distill:
        teacher, _ = load_trained(recipe.distill["teacher"])
    config = recipe.train_config(out_dir=out, resume=resume, progress=progress)
    compressed = bool(discrete_layers(model))
    if recipe.regularizer:
        callbacks = (*callbacks, _regularizer(recipe.regularizer))
    trainer = Trainer(
        model, train_set, test_set, config,
        callbacks=(*callbacks, WeightFlipMonitor()) if compressed else callbacks,
        teacher=teacher, device=device,
        extra_state={"recipe": recipe.to_dict(), **shape,
                     "data_root": str(Path(data_root).resolve()) if data_root else None},
        task=task, valid_set=valid_set,
    )
    metrics = trainer.fit()
    if compressed:
        # what deployment runs: every forward quantizer replaced by exact sign
        hard = evaluate(harden(copy.deepcopy(trainer.model)), test_set, config.eval_batch_size,
                        trainer.device, task)
        metrics.update({f"hard_test_{k}": v for k, v in hard.items()})
    return RunResult(metrics, trainer.history, trainer.model, report, recipe)


def check_fits(model: nn.Module, dataset: Any, task: Task, recipe: Recipe) -> None:
    """Run ``model`` (in eval mode, without gradients) on two samples of ``dataset``: a model
    built for other inputs (e.g. the recipe's ``model.input_shape``) fails here, with the data's
    shape and the model's named, instead of deep in the first training batch."""
    batch = next(iter(task.loader(dataset, 2, train=False)), None)
    if batch is None:
        return
    inputs, _ = task.split(batch)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            task.forward(model, inputs, task.initial_state())
    except RuntimeError as exc:
        given = recipe.model.get("input_shape")
        model_says = (f"recipe key 'model.input_shape' is {given!r}" if given is not None
                      else f"recipe key 'model' is {recipe.model}")
        raise RecipeError(f"recipe {recipe.name!r}: the model does not fit the data: "
                          f"{model_says}, but dataset {recipe.data['name']!r} has samples of "
                          f"shape {tuple(dataset.input_shape)} ({str(exc).splitlines()[0]})"
                          ) from None
    finally:
        model.train(was_training)


def _regularizer(spec: dict[str, Any]) -> Callback:
    """The recipe's regularizer callback; its ``reference`` checkpoint path becomes the model
    stored there."""
    spec = dict(spec)
    if spec.get("reference") is not None:
        spec["reference"], _ = load_trained(spec["reference"])
    return create_regularizer(spec)


def load_trained(path: str | Path) -> tuple[nn.Module, Recipe]:
    """Rebuild the model stored in checkpoint ``path`` (architecture from its recipe, weights from
    its state dict) in eval mode. Never unpickles arbitrary objects. The recipe's data root is
    the one the run was trained with, if it was given.

    Reads the trainer's checkpoints and every phase checkpoint of ``edgecompress prune``
    (``OUT/<phase>/model.pt`` or ``checkpoint.pt``: the pruned, possibly converted model)."""
    checkpoint = load_checkpoint(path)
    extra = checkpoint.get("extra_state") or {}
    raw = extra.get("recipe")
    if raw is None or "num_classes" not in extra or "input_shape" not in extra:
        raise CheckpointError(mismatch(path, FileKind.CHECKPOINT) or
                              f"{path}: checkpoint has no recipe, so its model cannot be rebuilt")
    try:
        recipe = Recipe.from_dict(raw, f"{path} (stored recipe)")
    except RecipeError as exc:
        raise CheckpointError(f"{path}: stored recipe is invalid: {exc}") from None
    if extra.get("data_root"):
        recipe.data["root"] = extra["data_root"]
    if extra.get("prune_phase") is not None:  # a phase of `edgecompress prune`
        model = phase_model(recipe, extra)
    else:
        model, _ = recipe.build_model(extra["num_classes"], tuple(extra["input_shape"]),
                                      load_pretrained=False)
    load_model_state(model, checkpoint["model"], path)
    return model.eval(), recipe
