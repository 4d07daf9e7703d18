"""The whole pruning procedure of a recipe, resumable phase by phase (``edgecompress prune``).

Phases (Cacciola et al., arXiv 2206.14056, section "procedure"; spec ``pruning_spr.md``):

1. ``train``: train the unregularized float model (the recipe's model without its ``method``), or
   load it from ``prune.reference`` (a checkpoint); it is the reference M comes from and the
   "before" of the report;
2. ``regularize``: train it further with the recipe's ``regularizer`` (SPR, or any registered
   regularizer) added to the loss, M from the phase-1 model;
3. ``prune``: the kept-filter masks, by the fixed ``prune.threshold`` or by
   :func:`~.masks.search_threshold` (largest threshold whose training top-1 drop is at most
   ``prune.tolerance`` points), the removed filters zeroed (:func:`~.masks.apply_masks`), then
   the physical surgery (:func:`~.surgery.prune_channels`);
4. ``finetune``: train the physically smaller model with the regularizer off. No mask callback
   is needed: the removed channels no longer exist. With a recipe ``method`` (e.g. ``bnn``
   W1A1, ``s3``) the pruned model is converted first, so this phase trains the pruned,
   compressed network (prune-then-binarize), which is then frozen (:func:`edgecompress.deploy.freeze`)
   and saved as ``OUT/model.safetensors`` (the frozen unpruned float reference as
   ``OUT/reference.safetensors``); the before/after report then compares the two frozen models,
   file sizes included.

Each phase trains in ``OUT/<phase>/`` with the trainer's checkpoint, metrics and progress bar,
and its own ``epochs``/``optimizer``/``schedule`` (``prune.<phase>``, defaults: the recipe's).
After each phase ``OUT/prune_state.json`` (the recipe and the finished phases' metrics) is
rewritten atomically, so a run killed anywhere resumes (``resume=True``) at the phase it was in,
from that phase's last checkpoint; finished phases are not redone.

Between phases the model is kept as ``OUT/<phase>/model.pt``, a checkpoint
(:func:`~edgecompress.train.checkpoint.save_checkpoint`) whose ``extra_state`` says how to rebuild
it: the recipe, the data's ``num_classes`` and ``input_shape``, the ``prune_phase``, the
kept-channel ``masks`` (after the surgery) and whether the recipe's method was applied
(``converted``). :func:`phase_model` rebuilds it: the recipe's float model, the surgery replayed
with the same masks (deterministic: the masks alone fix the architecture), the method applied.
The trainer's ``OUT/<phase>/checkpoint.pt`` carries the same ``extra_state``, so
:func:`edgecompress.experiment.load_trained` (and ``edgecompress eval``) reads either file of any
phase. This was chosen over the self-describing deploy file because that file holds frozen
(eval-only, BatchNorm folded) models, while phases 3-4 need the training form to go on training.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from ..analysis import summary
from ..convert import convert
from ..errors import CheckpointError
from ..train.callbacks import Callback
from ..train.checkpoint import atomic_write, load_checkpoint, save_checkpoint
from .callback import create_regularizer, regularizer_options
from .budget import threshold_for_macs
from .l1 import L1Prune
from .masks import apply_masks, filter_masks, search_threshold
from .surgery import effective_keep, prune_channels

__all__ = ["PruneResult", "prune_recipe", "phase_model", "compare_models", "format_comparison"]

STATE_FILE = "prune_state.json"
MODEL_FILE = "model.pt"
FROZEN_FILE = "model.safetensors"
REFERENCE_FILE = "reference.safetensors"


@dataclass
class PruneResult:
    """What :func:`prune_recipe` returns: each phase's metrics, the before/after comparison
    (:func:`compare_models`), the unpruned reference and the final model (both frozen if the
    recipe has a method)."""

    phases: dict[str, dict[str, Any]]
    comparison: dict[str, Any]
    before: nn.Module
    after: nn.Module

    def to_dict(self) -> dict[str, Any]:
        return {"phases": self.phases, **self.comparison}


def phase_model(recipe: Any, extra: dict[str, Any]) -> nn.Module:
    """The untrained model of a pruning phase checkpoint whose ``extra_state`` is ``extra``
    (see the module docstring), ready for its state dict: the recipe's float model, narrowed
    by the stored masks, converted by the recipe's method if the phase trained it converted."""
    inputs = tuple(extra["input_shape"])
    model, _ = dataclasses.replace(recipe, method=None).build_model(
        extra["num_classes"], inputs, load_pretrained=False)
    if extra.get("masks") is not None:
        model = prune_channels(model, extra["masks"], inputs)  # replays the surgery
    if extra.get("converted"):
        model = convert(model, recipe.method)
    return model


def _save_model(path: Path, model: nn.Module, extra: dict[str, Any]) -> None:
    save_checkpoint(path, {"model": model.state_dict(), "epoch": None, "extra_state": extra})


def _load_model(path: Path) -> tuple[nn.Module, dict[str, Tensor] | None]:
    from ..experiment import load_trained  # experiment imports this package

    if not path.is_file():
        raise CheckpointError(f"{path}: missing, though {STATE_FILE} says its phase finished")
    model, _ = load_trained(path)
    return model, load_checkpoint(path)["extra_state"].get("masks")


def _write_state(out: Path, recipe: dict[str, Any], phases: dict[str, Any]) -> None:
    text = json.dumps({"recipe": recipe, "phases": phases}, indent=2, default=str) + "\n"
    atomic_write(out / STATE_FILE, lambda tmp: tmp.write_text(text))


def _read_state(out: Path, recipe: dict[str, Any]) -> dict[str, Any]:
    path = out / STATE_FILE
    if not path.is_file():
        return {}
    saved = json.loads(path.read_text())
    # compare through JSON, as it was stored (tuples become lists)
    if saved["recipe"] != json.loads(json.dumps(recipe, default=str)):
        raise CheckpointError(f"{path}: cannot resume, the recipe changed since the run began")
    return dict(saved["phases"])


def compare_models(before: nn.Module, after: nn.Module, inputs: tuple[int, ...],
                   dtype: torch.dtype = torch.float32, rounds: int = 3,
                   threads: int = 1) -> dict[str, Any]:
    """Parameters, MACs and bytes (:func:`edgecompress.summary`) of both models, and their CPU
    latency at batch 1 measured in the same run, interleaved (:func:`~edgecompress.deploy.
    benchmark.compare`). Every ``ratio`` is before / after (> 1: smaller or faster after)."""
    from ..deploy.benchmark import compare

    s0, s1 = summary(before, inputs, dtype=dtype), summary(after, inputs, dtype=dtype)
    before, after = before.eval(), after.eval()
    x = torch.randn(1, *inputs).to(dtype)
    with torch.no_grad():
        t = compare("after vs before", lambda: after(x), lambda: before(x), threads, rounds)
    row = {}
    for key, a, b in (("params", s0.total_params, s1.total_params),
                      ("macs", s0.total_macs, s1.total_macs), ("bytes", s0.bytes, s1.bytes)):
        row[key] = {"before": a, "after": b, "ratio": a / b if b else float("inf")}
    row["latency_ms"] = {"before": t.baseline_ms, "after": t.candidate_ms, "ratio": t.speedup,
                         "threads": threads, "batch": 1}
    return row


def format_comparison(comparison: dict[str, Any]) -> str:
    """The before/after table :func:`compare_models` measured."""
    lines = [f"{'':<14}{'before':>16}{'after':>16}{'ratio':>9}"]
    for key in ("params", "macs", "bytes", "latency_ms", "file_bytes"):
        if key in comparison:
            r = comparison[key]
            fmt = "{:>16,.3f}" if key == "latency_ms" else "{:>16,.0f}"
            lines.append(f"{key:<14}" + fmt.format(r["before"]) + fmt.format(r["after"])
                         + f"{r['ratio']:>8.2f}x")
    return "\n".join(lines)


def _decide(model: nn.Module, settings: dict[str, Any], inputs: tuple[int, ...],
            train_top1: Callable[[nn.Module], float]
            ) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The kept-channel masks of the ``prune`` section's criterion, and what to report of it."""
    if settings.get("criterion") == "l1":
        l1 = L1Prune(ratio=settings.get("ratio"), macs_reduction=settings.get("macs_reduction"),
                     residual=bool(settings.get("residual")),
                     round_to=settings.get("round_to") or 1, input_shape=inputs)
        masks, _ = l1.keep_masks(model)
        return masks, {"criterion": "l1", "ratio": l1.ratio,
                       "macs_reduction": l1.macs_reduction}
    groups = settings.get("groups") or "conv+bn"
    fraction = settings.get("survive_fraction") or 0.0
    if settings.get("threshold") is not None:
        threshold = float(settings["threshold"])
        return filter_masks(model, threshold, groups, fraction), {"threshold": threshold}
    if settings.get("macs_reduction") is not None:
        target = float(settings["macs_reduction"])
        threshold, masks = threshold_for_macs(model, target, inputs, groups=groups,
                                              survive_fraction=fraction,
                                              round_to=settings.get("round_to") or 1)
        return masks, {"threshold": threshold, "macs_reduction": target}
    tolerance = settings.get("tolerance")
    tolerance = 1.0 if tolerance is None else float(tolerance)
    found = search_threshold(model, train_top1, tolerance, groups, fraction)
    return found.masks, {"threshold": found.threshold, "tolerance": tolerance,
                         "train_top1_before": found.baseline, "train_top1_after": found.score}


#: the recipe keys (as JSON) the train phase depends on; the regularize phase also depends on
#: the ``regularizer`` and ``prune.regularize``
_TRAIN_FREE = {"name", "method", "out_dir", "regularizer", "prune"}


def _start_from(source: Path, out: Path, recipe: Any) -> dict[str, Any]:
    """The finished phases of the prune run in ``source`` this run can reuse, copied into
    ``out``: its train phase when the model, data, seed and training settings agree (else an
    error), and its regularize phase too when the regularizer and its phase settings agree."""
    path = source / STATE_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; prune.start_from must name the output "
                              f"directory of an earlier `edgecompress prune` run")
    saved = json.loads(path.read_text())
    phases = saved.get("phases", {})
    mine = json.loads(json.dumps(recipe.to_dict(), default=str))
    theirs = saved["recipe"]

    def part(r: dict[str, Any], phase: str) -> dict[str, Any]:
        kept = {k: v for k, v in r.items() if k not in _TRAIN_FREE}
        prune = r.get("prune") or {}
        kept["prune"] = {k: prune.get(k) for k in ("reference", "train")}
        if phase == "regularize":
            kept.update(regularizer=r.get("regularizer"), regularize=prune.get("regularize"))
        return kept

    if "train" not in phases:
        raise CheckpointError(f"{path}: that run has not finished its train phase")
    a, b = part(mine, "train"), part(theirs, "train")
    if a != b:
        differ = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        raise CheckpointError(f"{path}: cannot start from that run, its recipe differs in "
                              f"{', '.join(differ)} (a run started from another may change "
                              f"its name, method, regularizer and prune settings only)")
    reuse = ["train"]
    if "regularize" in phases and part(mine, "regularize") == part(theirs, "regularize"):
        reuse.append("regularize")
    for phase in reuse:
        src = source / phase / MODEL_FILE
        if src.is_file():  # kept under this run's recipe, so it rebuilds as this run's
            state = load_checkpoint(src)
            state["extra_state"] = {**state["extra_state"], "recipe": recipe.to_dict()}
            save_checkpoint(out / phase / MODEL_FILE, state)
        elif "skipped" not in phases[phase]:
            raise CheckpointError(f"{src}: missing, though {path} says its phase finished")
    return {p: {**phases[p], "from": str(source)} for p in reuse}


def prune_recipe(recipe: Any, out_dir: str | Path, *, resume: bool = False,
                 data_root: str | None = None, progress: bool = True,
                 device: str | torch.device | None = None,
                 callbacks: dict[str, tuple[Callback, ...]] | None = None,
                 latency_rounds: int = 3) -> PruneResult:
    """Run the pruning procedure of ``recipe`` (a :class:`~edgecompress.recipe.Recipe` with a
    ``regularizer`` section; see the module docstring) in ``out_dir``.

    ``callbacks``: extra trainer callbacks per phase name (e.g. to observe or interrupt one).
    """
    from ..experiment import check_fits, load_trained  # experiment imports this package
    from ..train import Trainer, evaluate, resolve_device, seed_everything  # loads the trainer

    settings = recipe.prune or {}
    callbacks = callbacks or {}
    out = Path(out_dir)
    device = resolve_device(device)
    train_set = recipe.load_data("train", data_root)
    test_set = recipe.load_data("test", data_root)
    inputs = tuple(train_set.input_shape)
    task = recipe.build_task(train_set)
    float_recipe = dataclasses.replace(recipe, method=None)

    def build() -> nn.Module:
        seed_everything(recipe.seed)  # the initial weights depend on the seed only
        return float_recipe.build_model(train_set.num_classes, inputs)[0]

    check_fits(build(), test_set, task, recipe)

    def rebuild_state(phase: str, masks: dict[str, Tensor] | None = None,
                      converted: bool = False) -> dict[str, Any]:
        """What a phase's checkpoints need to rebuild their model (:func:`phase_model`) and to
        evaluate it on the same data."""
        return {"recipe": recipe.to_dict(), "num_classes": train_set.num_classes,
                "input_shape": list(inputs), "prune_phase": phase, "converted": converted,
                "masks": None if masks is None else {k: v.cpu() for k, v in masks.items()},
                "data_root": str(Path(data_root).resolve()) if data_root else None}

    def fit(phase: str, model: nn.Module, extra: tuple[Callback, ...] = (),
            **state: Any) -> dict[str, Any]:
        config = recipe.phase(phase).train_config(out_dir=str(out / phase), resume=resume,
                                                  progress=progress)
        trainer = Trainer(model, train_set, test_set, config,
                          callbacks=(*extra, *callbacks.get(phase, ())), device=device,
                          task=task, extra_state=rebuild_state(phase, **state))
        return trainer.fit()

    done = _read_state(out, recipe.to_dict()) if resume else {}
    if settings.get("start_from") and "train" not in done:
        done = _start_from(Path(settings["start_from"]), out, recipe)
        _write_state(out, recipe.to_dict(), done)
    masks: dict[str, Tensor] | None = None

    # 1. train (or load) the unregularized model
    if "train" in done:
        model, _ = _load_model(out / "train" / MODEL_FILE)
    else:
        if settings.get("reference"):
            model, _ = load_trained(settings["reference"])
            test = evaluate(model, test_set, recipe.eval_batch_size, "cpu", task)
            done["train"] = {"reference": str(settings["reference"]),
                             **{f"test_{k}": v for k, v in test.items()}}
        else:
            model = build()
            done["train"] = fit("train", model)
        _save_model(out / "train" / MODEL_FILE, model, rebuild_state("train"))
        _write_state(out, recipe.to_dict(), done)
    reference = copy.deepcopy(model).cpu().eval()

    # 2. train with the regularizer (M from the reference)
    if "regularize" in done:
        if recipe.regularizer is not None:
            model, _ = _load_model(out / "regularize" / MODEL_FILE)
    elif recipe.regularizer is None:
        done["regularize"] = {"skipped": "the recipe has no regularizer"}
        _write_state(out, recipe.to_dict(), done)
    else:
        spec = dict(recipe.regularizer)
        if "reference" in regularizer_options(spec["name"]):  # M of SPR from the reference
            spec["reference"] = reference
        done["regularize"] = fit("regularize", model, (create_regularizer(spec),))
        _save_model(out / "regularize" / MODEL_FILE, model, rebuild_state("regularize"))
        _write_state(out, recipe.to_dict(), done)

    # 3. prune: masks, zero the removed filters, physical surgery
    if "prune" in done:
        model, masks = _load_model(out / "prune" / MODEL_FILE)
    else:
        model = model.cpu().eval()

        def train_top1(m: nn.Module) -> float:
            return evaluate(m, train_set, recipe.eval_batch_size, "cpu", task)["top1"]

        masks, metrics = _decide(model, settings, inputs, train_top1)
        # what the surgery removes: a channel shared through a residual addition goes only
        # if every layer adding into it drops it
        removed = effective_keep(model, masks, inputs)
        macs_before = summary(model, inputs).total_macs
        apply_masks(model, masks)
        model = prune_channels(model, masks, inputs)
        metrics.update(
            filters_removed=sum(int((~k).sum()) for k in removed.values()),
            filters_total=sum(int(k.numel()) for k in masks.values()),
            macs_removed=1 - summary(model, inputs).total_macs / macs_before,
            **{f"test_{k}": v for k, v in
               evaluate(model, test_set, recipe.eval_batch_size, "cpu", task).items()})
        done["prune"] = metrics
        _save_model(out / "prune" / MODEL_FILE, model, rebuild_state("prune", masks))
        _write_state(out, recipe.to_dict(), done)

    # 4. fine-tune the smaller model (its removed channels are gone: no masks, no regularizer),
    #    converted first by the recipe's method if it has one
    if "finetune" in done:
        model, _ = _load_model(out / "finetune" / MODEL_FILE)
    else:
        converted = recipe.method is not None
        if converted:
            model = convert(model, recipe.method)
        done["finetune"] = fit("finetune", model, masks=masks, converted=converted)
        _save_model(out / "finetune" / MODEL_FILE, model,
                    rebuild_state("finetune", masks, converted))
        _write_state(out, recipe.to_dict(), done)

    model = model.cpu().eval()
    before: nn.Module = reference
    after: nn.Module = model
    sizes = None
    if recipe.method is not None:
        # compare deployed forms: both frozen (BatchNorm folded; the compressed layers packed)
        from ..deploy import freeze, save

        before, after = freeze(copy.deepcopy(reference)), freeze(copy.deepcopy(model))
        sizes = []
        for m, name in ((before, REFERENCE_FILE), (after, FROZEN_FILE)):
            save(m, out / name)
            sizes.append((out / name).stat().st_size)
    comparison = compare_models(before, after, inputs, rounds=latency_rounds,
                                dtype=getattr(reference, "input_dtype", torch.float32))
    if sizes is not None:
        comparison["file_bytes"] = {"before": sizes[0], "after": sizes[1],
                                    "ratio": sizes[0] / sizes[1]}
    return PruneResult(done, comparison, before, after)
