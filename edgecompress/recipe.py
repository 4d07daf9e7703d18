"""Experiment recipes: one YAML file says what to train, on what, compressed how, for how long.

A recipe names a model, a dataset, an optional compression method, the optimizer, the LR
schedule, the number of epochs and the seed::

    name: mnist-mlp-bnn
    model: {name: mlp, hidden: [256, 256]}
    data: {name: mnist-bundled}
    method: {name: bnn, mode: w1a1}
    optimizer: {name: adam, lr: 0.001}
    schedule: {name: cosine}
    epochs: 5
    batch_size: 100
    seed: 0

``data`` takes ``root``, ``augment``, ``limit`` (the first N samples), ``classes`` (only these
class indices, relabelled 0.. in the list's order: ``classes: [5, 6, 7, 8, 9]``) and, for
``fsdd``, ``speakers`` or ``exclude_speakers`` (lists of speaker names): the splits of a
transfer setting (see :func:`edgecompress.data.load`).

``model``, ``data`` and ``method`` may be a bare name instead of a mapping; ``method: null`` (or
``float``) trains the float model. ``method`` may also be a list of methods applied in order::

    method:
      - {name: bnn, mode: w1a1, include: ["stages.0*"]}
      - {name: s3, bits: 3}

``regularizer: {name: spr, lam: 1.0, alpha: 0.1, reference: PATH_OR_NULL}`` adds a pruning
regularizer to the training loss (see :mod:`edgecompress.pruning`; ``reference`` is the checkpoint
of a trained unregularized run, from which the SPR's M is taken; without it M comes from the
model's weights when training starts).

``prune:`` configures ``edgecompress prune`` (train or load -> regularize -> prune -> fine-tune,
:mod:`edgecompress.pruning.pipeline`)::

    prune:
      reference: null        # checkpoint of a trained unregularized run (skips the train phase)
      start_from: null       # another prune run's directory: reuse its train (and regularize) phase
      criterion: magnitude   # magnitude (after SPR / group lasso / nothing) or l1 (Li et al.)
      # magnitude: one of threshold / tolerance / macs_reduction (default: tolerance 1.0)
      threshold: null        # fixed magnitude threshold, or
      tolerance: 1.0         # largest threshold keeping the training top-1 drop <= 1 point, or
      macs_reduction: null   # smallest threshold removing this fraction of the MACs (e.g. 0.5)
      round_to: 1            # with macs_reduction: keep multiples of this many channels
      survive_fraction: 0.0  # a filter is removed when at most this fraction of it survives
      groups: conv+bn        # the groups the pruning decision looks at
      # l1: ratio (default 0.5) or macs_reduction, residual (false), round_to (1); see l1-prune
      train:      {epochs: 2}                       # each phase: epochs, optimizer, schedule
      regularize: {epochs: 4}                       # (defaults: the recipe's)
      finetune:   {epochs: 2, optimizer: {name: sgd, lr: 0.01}}

``pretrained: PATH`` (or ``{checkpoint: PATH, head: NAME, reset_head: true}``) starts from
the weights of a trained float run of the same model (a checkpoint of ``edgecompress train``)
for transfer learning: every weight but the classification head's (the module ``head`` names,
else the last ``nn.Linear``) is loaded, the head is new for this data's classes, then
``method`` converts the model (:mod:`edgecompress.transfer`). The file is read when the model
is built; a missing file, another architecture or a mismatched weight is a clear error.

The training task (``classification``, ``language-modelling``) comes from the dataset;
``task: {name: language-modelling, bptt: 35}`` states it, or its options, explicitly.
Unknown keys are rejected with the list of valid ones, so a typo never silently falls back to a
default: this holds for the model's options too (the keywords of the model's factory), for the
task's, and for each method's (what the method's ``options()`` lists, see
:func:`edgecompress.convert.method_options`: e.g. a binarization method's converter keywords and
the scheduled parameters of its quantizers, and for a layer converter
:func:`~edgecompress.convert`'s own ``keep_first_last``, ``include`` and ``exclude``). The whole
recipe is stored in every checkpoint, which is how
``edgecompress eval CHECKPOINT`` rebuilds the model.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml
from torch import nn

from . import data as data_lib
from . import models as models_lib
from . import pruning, transfer
from .convert import ConversionReport, available_methods, convert, method_options
from .errors import EdgecompressError, PruningError, RecipeError, UnknownNameError
from .registry import normalize_name
from .train import TrainConfig
from .train import tasks as tasks_lib

_TOP_KEYS = {
    "name", "model", "data", "method", "optimizer", "schedule", "epochs", "batch_size",
    "eval_batch_size", "seed", "label_smoothing", "grad_clip", "distill", "out_dir", "task",
    "regularizer", "prune", "pretrained",
}
_PRUNE_KEYS = {"reference", "start_from", "criterion", "threshold", "tolerance",
               "macs_reduction", "ratio", "residual", "round_to", "survive_fraction", "groups",
               "train", "regularize", "finetune"}
#: the prune-section keys of each pruning criterion (besides the phases, reference, start_from)
PRUNE_CRITERIA = {"magnitude": {"threshold", "tolerance", "macs_reduction", "round_to",
                                "survive_fraction", "groups"},
                  "l1": {"ratio", "macs_reduction", "residual", "round_to"}}
PRUNE_PHASES = ("train", "regularize", "finetune")
_PRUNE_PHASE_KEYS = {"epochs", "optimizer", "schedule"}


@dataclass(frozen=True)
class _Kind:
    """What the value of a recipe key must be: ``test(value)`` holds; ``description`` says it in
    the error message. ``optional``: null is accepted too."""

    description: str
    test: Callable[[Any], bool]
    optional: bool = False

    def or_null(self) -> "_Kind":
        return dataclasses.replace(self, description=f"{self.description} or null", optional=True)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


_STRING = _Kind("a string", lambda v: isinstance(v, str))
_BOOL = _Kind("true or false", lambda v: isinstance(v, bool))
_POSITIVE_INT = _Kind("a positive integer", lambda v: _is_int(v) and v >= 1)
_COUNT = _Kind("an integer >= 0", lambda v: _is_int(v) and v >= 0)
_NON_NEGATIVE = _Kind("a number >= 0", lambda v: _is_number(v) and v >= 0)
_POSITIVE = _Kind("a number > 0", lambda v: _is_number(v) and v > 0)
_FRACTION = _Kind("a number in [0, 1]", lambda v: _is_number(v) and 0 <= v <= 1)
_BELOW_ONE = _Kind("a number in [0, 1)", lambda v: _is_number(v) and 0 <= v < 1)
_STRINGS = _Kind("a list of strings",
                 lambda v: isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v))
_COUNTS = _Kind("a list of integers >= 0",
                lambda v: isinstance(v, (list, tuple)) and all(_COUNT.test(x) for x in v))
_BETAS = _Kind("a list of two numbers in [0, 1)",
               lambda v: isinstance(v, (list, tuple)) and len(v) == 2
               and all(_BELOW_ONE.test(x) for x in v))

#: the kinds of the top-level values (the sections are checked by their own tables)
_TOP_VALUES = {"name": _STRING, "epochs": _POSITIVE_INT, "batch_size": _POSITIVE_INT,
               "eval_batch_size": _POSITIVE_INT, "seed": _COUNT, "label_smoothing": _BELOW_ONE,
               "grad_clip": _POSITIVE.or_null(), "out_dir": _STRING.or_null()}
_OPTIMIZER_VALUES = {"name": _STRING, "lr": _NON_NEGATIVE, "momentum": _NON_NEGATIVE,
                     "nesterov": _BOOL, "betas": _BETAS, "weight_decay": _NON_NEGATIVE,
                     "no_decay": _STRINGS, "decay_1d": _BOOL}
_SCHEDULE_VALUES = {"name": _STRING, "milestones": _COUNTS, "gamma": _POSITIVE,
                    "warmup_epochs": _COUNT}
_DISTILL_VALUES = {"teacher": _STRING, "alpha": _FRACTION, "temperature": _POSITIVE}
_PRETRAINED_VALUES = {"checkpoint": _STRING, "head": _STRING.or_null(), "reset_head": _BOOL}
_DATA_VALUES = {"name": _STRING, "root": _STRING.or_null(), "augment": _BOOL,
                "limit": _POSITIVE_INT.or_null(), "classes": _COUNTS.or_null(),
                "speakers": _STRINGS.or_null(), "exclude_speakers": _STRINGS.or_null()}


def _named(value: Any, where: str) -> dict[str, Any]:
    """``"x"`` -> ``{"name": "x"}``; mappings must have a name, a string."""
    if isinstance(value, str):
        return {"name": value}
    if isinstance(value, Mapping):
        if "name" not in value:
            raise RecipeError(f"recipe key {where!r} needs a 'name'")
        _check_values(value, {"name": _STRING}, f"{where}.")
        return dict(value)
    raise RecipeError(f"recipe key {where!r} must be a name or a mapping, got {value!r}")


def _check_keys(section: Mapping[str, Any], valid: set[str], where: str) -> None:
    unknown = sorted(set(section) - valid)
    if unknown:
        raise RecipeError(
            f"unknown key(s) {', '.join(repr(where + k) for k in unknown)} in recipe; "
            f"valid keys{' of ' + where.rstrip('.') if where else ''}: {', '.join(sorted(valid))}"
        )


def _check_values(section: Mapping[str, Any], kinds: Mapping[str, _Kind], where: str) -> None:
    """Each value of ``section`` whose key ``kinds`` lists is of that kind (``where``: the
    section's key prefix, e.g. ``"optimizer."``)."""
    for key, value in section.items():
        kind = kinds.get(key)
        if kind is not None and not (value is None and kind.optional) and not kind.test(value):
            raise RecipeError(f"recipe key {where + key!r} must be {kind.description}, got "
                              f"{value!r} ({type(value).__name__})")


def _check_section(section: Mapping[str, Any], kinds: Mapping[str, _Kind], where: str) -> None:
    """Only the keys ``kinds`` lists, each with a value of its kind."""
    _check_keys(section, set(kinds), where)
    _check_values(section, kinds, where)


def _check_options(section: Mapping[str, Any], valid: set[str] | None, kind: str) -> None:
    """Unknown options of the model or method section, listed with the valid ones."""
    if valid is None:
        return
    unknown = sorted(set(section) - valid - {"name"})
    if unknown:
        raise RecipeError(
            f"unknown key(s) {', '.join(repr(kind + '.' + k) for k in unknown)} in recipe; "
            f"valid keys of {kind} {section['name']!r}: name, {', '.join(sorted(valid))}")


def _prune(value: Any) -> dict[str, Any] | None:
    """The ``prune`` section: known keys, sane values; each phase's optimizer and schedule
    written as mappings with a name."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise RecipeError(f"recipe key 'prune' must be a mapping, got {value!r}")
    _check_keys(value, _PRUNE_KEYS, "prune.")
    out = dict(value)
    criterion = out.get("criterion") or "magnitude"
    if criterion not in PRUNE_CRITERIA:
        raise RecipeError(f"recipe key 'prune.criterion' must be one of "
                          f"{', '.join(PRUNE_CRITERIA)}, got {criterion!r}")
    foreign = sorted(k for k in set().union(*PRUNE_CRITERIA.values()) - PRUNE_CRITERIA[criterion]
                     if out.get(k) is not None)
    if foreign:
        raise RecipeError(f"recipe key(s) {', '.join('prune.' + k for k in foreign)} do not apply "
                          f"to prune.criterion {criterion!r} (its keys: "
                          f"{', '.join(sorted(PRUNE_CRITERIA[criterion]))})")
    chosen = [k for k in ("threshold", "tolerance", "macs_reduction", "ratio")
              if out.get(k) is not None]
    if len(chosen) > 1:
        raise RecipeError(f"recipe keys {' and '.join('prune.' + k for k in chosen)} exclude each "
                          f"other (a fixed threshold, the search under a tolerance, a MACs "
                          f"budget, or an L1 ratio)")
    if out.get("round_to") is not None and criterion == "magnitude" \
            and out.get("macs_reduction") is None:
        raise RecipeError("recipe key 'prune.round_to' needs 'prune.macs_reduction' with the "
                          "magnitude criterion")
    if out.get("macs_reduction") is not None:
        try:
            pruning.budget.check_macs_reduction(out["macs_reduction"], "prune.macs_reduction")
        except PruningError as exc:
            raise RecipeError(f"recipe key {exc}") from None
    for key, kind in (("round_to", int), ("residual", bool), ("start_from", str)):
        v = out.get(key)
        if v is not None and (not isinstance(v, kind) or (kind is int and isinstance(v, bool))
                              or (kind is int and v < 1)):
            raise RecipeError(f"recipe key 'prune.{key}' must be "
                              f"{'a positive int' if kind is int else kind.__name__}, got {v!r}")
    for key in ("threshold", "tolerance", "survive_fraction", "ratio"):
        v = out.get(key)
        if v is not None and (not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0
                              or (key == "ratio" and v >= 1)):
            raise RecipeError(f"recipe key 'prune.{key}' must be a number >= 0"
                              f"{' and < 1' if key == 'ratio' else ''}, got {v!r}")
    if out.get("groups") is not None:
        pruning.groups.parse_kind(out["groups"])
    for phase in PRUNE_PHASES:
        section = out.get(phase) or {}
        if not isinstance(section, Mapping):
            raise RecipeError(f"recipe key 'prune.{phase}' must be a mapping, got {section!r}")
        _check_keys(section, _PRUNE_PHASE_KEYS, f"prune.{phase}.")
        _check_values(section, _TOP_VALUES, f"prune.{phase}.")
        section = dict(section)
        for key, kinds in (("optimizer", _OPTIMIZER_VALUES), ("schedule", _SCHEDULE_VALUES)):
            if key in section:
                section[key] = _named(section[key], f"prune.{phase}.{key}")
                _check_section(section[key], kinds, f"prune.{phase}.{key}.")
        out[phase] = section
    return out


def _pretrained(value: Any) -> dict[str, Any] | None:
    """The ``pretrained`` section: a checkpoint path, or a mapping with a ``checkpoint``, an
    optional ``head`` (module name) and ``reset_head``."""
    if value is None:
        return None
    if isinstance(value, str):
        return {"checkpoint": value}
    if not isinstance(value, Mapping) or "checkpoint" not in value:
        raise RecipeError(f"recipe key 'pretrained' must be a checkpoint path or a mapping with "
                          f"a 'checkpoint', got {value!r}")
    _check_section(value, _PRETRAINED_VALUES, "pretrained.")
    return dict(value)


def _model_options(name: str) -> set[str]:
    return set(models_lib.options(name))


def _methods(value: Any) -> dict[str, Any] | list[dict[str, Any]] | None:
    """The ``method`` section: None (float), one method or a non-empty list of methods, each a
    mapping with a name."""
    if value in (None, "float", "none"):
        return None
    if not isinstance(value, list):
        return _named(value, "method")
    if not value:
        raise RecipeError("recipe key 'method' is an empty list; use null for the float model")
    return [_named(m, f"method[{i}]") for i, m in enumerate(value)]


def _check_method(method: Mapping[str, Any], where: str) -> None:
    """A known method name, and only the options that method lists."""
    if normalize_name(method["name"]) not in available_methods():
        raise UnknownNameError(f"recipe key '{where}.name': unknown name {method['name']!r}; "
                               f"available: {', '.join(available_methods())}")
    options = {k: v for k, v in method.items() if k != "name"}
    _check_options(method, method_options(method["name"], options), where)


@dataclass
class Recipe:
    """A validated recipe. Build one with :meth:`from_yaml` or :meth:`from_dict`."""

    name: str
    model: dict[str, Any]
    data: dict[str, Any]
    method: dict[str, Any] | list[dict[str, Any]] | None
    optimizer: dict[str, Any] = field(default_factory=lambda: {"name": "sgd"})
    schedule: dict[str, Any] = field(default_factory=lambda: {"name": "cosine"})
    epochs: int = 1
    batch_size: int = 64
    eval_batch_size: int = 256
    seed: int = 0
    label_smoothing: float = 0.0
    grad_clip: float | None = None
    distill: dict[str, Any] | None = None
    out_dir: str | None = None
    task: dict[str, Any] | None = None
    regularizer: dict[str, Any] | None = None
    prune: dict[str, Any] | None = None
    pretrained: dict[str, Any] | None = None

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], source: str = "<recipe>") -> "Recipe":
        if not isinstance(raw, Mapping):
            raise RecipeError(f"{source}: a recipe must be a mapping, got {type(raw).__name__}")
        try:
            _check_keys(raw, _TOP_KEYS, "")
            _check_values(raw, _TOP_VALUES, "")
            for key in ("model", "data"):
                if key not in raw:
                    raise RecipeError(f"recipe needs a {key!r} key")
            model = _named(raw["model"], "model")
            data = _named(raw["data"], "data")
            _check_section(data, _DATA_VALUES, "data.")
            method = _methods(raw.get("method"))
            optimizer = _named(raw.get("optimizer", "sgd"), "optimizer")
            _check_section(optimizer, _OPTIMIZER_VALUES, "optimizer.")
            schedule = _named(raw.get("schedule", "cosine"), "schedule")
            _check_section(schedule, _SCHEDULE_VALUES, "schedule.")
            distill = raw.get("distill")
            if distill is not None:
                if not isinstance(distill, Mapping) or "teacher" not in distill:
                    raise RecipeError("recipe key 'distill' must be a mapping with a 'teacher'")
                _check_section(distill, _DISTILL_VALUES, "distill.")
            task = raw.get("task")
            task = None if task is None else _named(task, "task")
            regularizer = raw.get("regularizer")
            regularizer = None if regularizer is None else _named(regularizer, "regularizer")
            prune = _prune(raw.get("prune"))
            pretrained = _pretrained(raw.get("pretrained"))
            values = {k: raw[k] for k in _TOP_KEYS & set(raw)}
            values.update(model=model, data=data, method=method, optimizer=optimizer,
                          schedule=schedule, distill=dict(distill) if distill else None,
                          task=task, regularizer=regularizer, prune=prune,
                          pretrained=pretrained)
            values.setdefault("name", Path(source).stem if source != "<recipe>" else "run")
            recipe = cls(**values)
            recipe.train_config()  # validates optimizer/schedule names and numeric fields
            for phase in PRUNE_PHASES if prune else ():
                recipe.phase(phase).train_config()
            names = [("model", model["name"], models_lib.available()),
                     ("data", data["name"], data_lib.available())]
            if task is not None:
                names.append(("task", task["name"], tasks_lib.available()))
            for key, name, registry in names:
                if normalize_name(name) not in registry:
                    raise UnknownNameError(f"recipe key '{key}.name': unknown name {name!r}; "
                                           f"available: {', '.join(registry)}")
            _check_options(model, _model_options(model["name"]), "model")
            steps = [method] if isinstance(method, dict) else method or []
            for i, step in enumerate(steps):
                _check_method(step, "method" if isinstance(method, dict) else f"method[{i}]")
            if task is not None:
                _check_options(task, set(tasks_lib.task_options(task["name"])), "task")
                tasks_lib.create(task)  # validates the option values
            if regularizer is not None:
                _check_options(regularizer,
                               set(pruning.regularizer_options(regularizer["name"])),
                               "regularizer")
                # validates the values; the reference checkpoint is read when training starts
                pruning.create_regularizer(
                    {**regularizer, **({"reference": None} if "reference" in regularizer else {})})
        except (RecipeError, UnknownNameError, ValueError, TypeError) as exc:
            raise RecipeError(f"{source}: {exc}") from None
        return recipe

    @classmethod
    def from_yaml(cls, path: str | Path) -> "Recipe":
        path = Path(path)
        if not path.is_file():
            raise RecipeError(f"recipe file not found: {path}")
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise RecipeError(f"{path}: not valid YAML{where}: {problem}") from None
        return cls.from_dict(raw, str(path))

    def to_dict(self) -> dict[str, Any]:
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self)}

    def phase(self, name: str) -> "Recipe":
        """This recipe with the epochs, optimizer and schedule of phase ``name`` of its
        ``prune`` section (``train``, ``regularize``, ``finetune``; unset ones: the recipe's)."""
        section = (self.prune or {}).get(name) or {}
        return dataclasses.replace(self, **copy.deepcopy(dict(section)))

    def train_config(self, **overrides: Any) -> TrainConfig:
        """The trainer's configuration for this recipe (``overrides`` win)."""
        opt = {k: v for k, v in self.optimizer.items() if k != "name"}
        if "betas" in opt:
            opt["betas"] = tuple(opt["betas"])
        sched = {k: v for k, v in self.schedule.items() if k != "name"}
        kd = {}
        if self.distill:
            kd = dict(kd_alpha=self.distill.get("alpha", 0.5),
                      kd_temperature=self.distill.get("temperature", 4.0))
        values = dict(
            epochs=self.epochs, batch_size=self.batch_size, eval_batch_size=self.eval_batch_size,
            optimizer=self.optimizer["name"], schedule=self.schedule["name"], seed=self.seed,
            label_smoothing=self.label_smoothing, grad_clip=self.grad_clip,
            out_dir=self.out_dir, **opt, **sched, **kd,
        )
        values.update(overrides)
        return TrainConfig(**values)

    def load_data(self, split: str, root: str | None = None):
        """The recipe's dataset split (``root`` overrides the recipe's data root)."""
        options = {k: v for k, v in self.data.items() if k not in ("name", "root")}
        if split != "train":
            options.pop("augment", None)
        try:
            return data_lib.load(self.data["name"], root=root or self.data.get("root"),
                                 split=split, **options)
        except EdgecompressError:
            raise
        except (ValueError, TypeError) as exc:
            raise RecipeError(f"recipe {self.name!r}, data {self.data}: {exc}") from None

    def build_task(self, dataset: Any) -> tasks_lib.Task:
        """The recipe's training task: its ``task`` section, else the one ``dataset`` declares
        (its ``task`` attribute), else classification."""
        spec = self.task or {"name": getattr(dataset, "task", "classification")}
        try:
            return tasks_lib.create(spec)
        except (ValueError, TypeError) as exc:
            raise RecipeError(f"recipe {self.name!r}, task {spec}: {exc}") from None

    def build_model(
        self, num_classes: int, input_shape: tuple[int, ...], *, load_pretrained: bool = True
    ) -> tuple[nn.Module, ConversionReport | None]:
        """Create the recipe's model for this data, load its ``pretrained`` checkpoint's weights
        (all but the head's; see :mod:`edgecompress.transfer`) and convert it with the recipe's
        method (or methods, in order). ``load_pretrained=False`` skips the loading, for callers
        that load the trained weights of this recipe's own run next."""
        options = {k: v for k, v in self.model.items() if k != "name"}
        options.setdefault("num_classes", num_classes)
        options.setdefault("input_shape", tuple(input_shape))
        try:
            model = models_lib.create(self.model["name"], **options)
        except EdgecompressError as exc:
            raise RecipeError(f"recipe {self.name!r}: {exc}") from None
        except (TypeError, ValueError) as exc:  # an option value the model cannot use
            raise RecipeError(f"recipe {self.name!r}, model {self.model}: "
                              f"{type(exc).__name__}: {exc}") from None
        if self.pretrained and load_pretrained:
            transfer.load_pretrained(
                model, self.pretrained["checkpoint"], {**self.model, **options},
                head=self.pretrained.get("head"),
                reset_head=self.pretrained.get("reset_head", True))
        if self.method is None:
            return model, None
        return convert(model, self.method, return_report=True)  # type: ignore[return-value]

