"""Training tasks: what a batch is, how the model is run on it, the loss and the metrics.

The trainer and :func:`~edgecompress.train.evaluate` are task-generic; a :class:`Task` supplies

- ``loader``: how a dataset is read (batching, sharding over ``torchrun`` processes, shuffling);
- ``split``: a batch -> (inputs, targets);
- ``initial_state`` / ``forward`` / ``detach``: running the model, with a state carried from
  batch to batch (an RNN's hidden state: reset at the start of every epoch and evaluation,
  detached between batches so gradients stop at the window boundary: truncated BPTT);
- ``criterion`` (+ knowledge distillation in :meth:`Task.loss`): the training loss;
- ``measure`` / ``report``: per-batch sums (the last one is the count) and the metrics computed
  from their totals, which become ``train_<name>`` / ``test_<name>`` in the metrics log.

Tasks are selected by name (``create("language-modelling", bptt=35)``, the recipe's ``task:``
key, or a dataset's ``task`` attribute) or passed as objects; a new task is a subclass
registered with ``@register("name")``.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Callable, ClassVar, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from ..registry import Registry
from .config import TrainConfig

_REGISTRY: Registry[type["Task"]] = Registry("task")


def register(name: str) -> Callable[[type["Task"]], type["Task"]]:
    """Class decorator: register a :class:`Task` subclass as ``name`` (sets ``cls.name``)."""

    def add(cls: type[Task]) -> type[Task]:
        cls.name = name
        _REGISTRY.register(name, cls)
        return cls

    return add


def distillation_loss(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """T^2 * KL(softmax(teacher / T) || softmax(student / T)), averaged over the batch
    (Hinton et al., 2015)."""
    t = temperature
    return F.kl_div(F.log_softmax(student / t, dim=-1), F.log_softmax(teacher / t, dim=-1),
                    reduction="batchmean", log_target=True) * (t * t)


def _detach(state: Any) -> Any:
    """``state`` with every tensor in it (nested tuples/lists) detached from the graph."""
    if isinstance(state, Tensor):
        return state.detach()
    if isinstance(state, (tuple, list)):
        return type(state)(_detach(s) for s in state)
    return state


class Task:
    """Base class; the defaults are those of a stateless model ``model(inputs) -> output``."""

    name: ClassVar[str] = ""
    #: (metric, axis label) pairs plotted in ``curves.png``, train and test side by side
    curves: ClassVar[tuple[tuple[str, str], ...]] = (("loss", "loss"),)
    #: what the sums of :meth:`measure` are, in order (the count last)
    measures: ClassVar[tuple[str, ...]] = ("loss_sum", "count")
    #: whether :meth:`loss` supports knowledge distillation from a teacher
    distills: ClassVar[bool] = True

    def loader(self, dataset: Dataset, batch_size: int, *, train: bool, rank: int = 0,
               world_size: int = 1, seed: int = 0, num_workers: int = 0) -> DataLoader:
        """How ``dataset`` is read by process ``rank`` of ``world_size``: for training,
        ``batch_size`` is the global batch; the loop calls ``sampler.set_epoch(epoch)`` when the
        sampler is a :class:`DistributedSampler`."""
        raise NotImplementedError

    def split(self, batch: Any) -> tuple[Any, Tensor]:
        """(inputs, targets) of a batch as the loader yields it."""
        inputs, targets = batch
        return inputs, targets

    def initial_state(self) -> Any:
        """The carried state at the start of an epoch or an evaluation."""
        return None

    def forward(self, model: nn.Module, inputs: Any, state: Any) -> tuple[Tensor, Any]:
        """(output, next state) of ``model`` on ``inputs``."""
        return model(inputs), None

    def detach(self, state: Any) -> Any:
        """The state handed to the next batch (cut from this batch's graph)."""
        return _detach(state)

    def criterion(self, output: Tensor, targets: Tensor, config: TrainConfig) -> Tensor:
        """The task's own training loss (a mean over the batch)."""
        raise NotImplementedError

    def teacher_output(self, teacher: nn.Module, inputs: Any) -> Tensor:
        """The teacher's output on ``inputs``, for distillation."""
        return teacher(inputs)

    def loss(self, output: Tensor, targets: Tensor, inputs: Any, config: TrainConfig,
             teacher: nn.Module | None = None) -> Tensor:
        """:meth:`criterion`, mixed with knowledge distillation when ``config.kd_alpha > 0``
        and a teacher is given: ``(1 - a) * criterion + a * T^2 * KL(teacher || student)``."""
        loss = self.criterion(output, targets, config)
        if teacher is not None and config.kd_alpha > 0:
            with torch.no_grad():
                teacher_out = self.teacher_output(teacher, inputs)
            kd = distillation_loss(output, teacher_out, config.kd_temperature)
            loss = (1 - config.kd_alpha) * loss + config.kd_alpha * kd
        return loss

    def measure(self, output: Tensor, targets: Tensor, loss: float | None = None) -> list[float]:
        """Per-batch sums, the count last. ``loss`` is the batch's mean training loss during
        training and None during evaluation (where the task's plain loss is measured)."""
        raise NotImplementedError

    def report(self, sums: list[float]) -> dict[str, float]:
        """The metrics from the totals of :meth:`measure` (``loss`` first)."""
        raise NotImplementedError

    def describe(self, metrics: Mapping[str, float]) -> str:
        """One line for people, e.g. ``loss 0.3120, top-1 91.20%``."""
        return ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())

    def to_dict(self) -> dict[str, Any]:
        """The task's name and options (stored in checkpoints; a resume must agree)."""
        return {"name": self.name}

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items() if k != "name")
        return f"{type(self).__name__}({options})"


@register("classification")
class Classification(Task):
    """One label per sample: cross-entropy (with ``config.label_smoothing``) and top-1 accuracy.

    Training shuffles with a :class:`DistributedSampler` (seeded by ``config.seed``, reset every
    epoch), each process taking ``batch_size // world_size`` samples; evaluation gives process
    ``r`` every ``world_size``-th sample from ``r``. Metrics: ``loss`` (mean training loss, or
    mean cross-entropy in evaluation) and ``top1`` (percent).
    """

    curves = (("loss", "loss"), ("top1", "top-1 (%)"))
    measures = ("loss_sum", "correct", "count")

    def loader(self, dataset: Dataset, batch_size: int, *, train: bool, rank: int = 0,
               world_size: int = 1, seed: int = 0, num_workers: int = 0) -> DataLoader:
        if train:
            sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank,
                                         shuffle=True, seed=seed, drop_last=False)
            return DataLoader(dataset, batch_size=batch_size // world_size, sampler=sampler,
                              num_workers=num_workers)
        shard = Subset(dataset, range(rank, len(dataset), world_size)) if world_size > 1 \
            else dataset
        return DataLoader(shard, batch_size=batch_size, num_workers=num_workers)

    def criterion(self, output: Tensor, targets: Tensor, config: TrainConfig) -> Tensor:
        return F.cross_entropy(output, targets, label_smoothing=config.label_smoothing)

    def measure(self, output: Tensor, targets: Tensor, loss: float | None = None) -> list[float]:
        if loss is None:
            total = F.cross_entropy(output, targets, reduction="sum").item()
        else:
            total = loss * len(targets)
        correct = (output.argmax(dim=-1) == targets).sum().item()
        return [total, correct, len(targets)]

    def report(self, sums: list[float]) -> dict[str, float]:
        loss_sum, correct, count = sums
        return {"loss": loss_sum / count, "top1": 100.0 * correct / count}

    def describe(self, metrics: Mapping[str, float]) -> str:
        return f"loss {metrics['loss']:.4f}, top-1 {metrics['top1']:.2f}%"


@register("language-modelling")
class LanguageModelling(Task):
    """Next-token prediction on a token stream, with truncated back-propagation through time.

    The dataset is a :class:`~edgecompress.data.TokenStream`; it is read as consecutive
    windows of ``bptt`` tokens of a ``(batch_size, C)`` grid (see
    :class:`~edgecompress.data.TokenWindows`), process ``r`` of ``N`` taking its own block of
    rows, in order. The model is called ``model(tokens, state) -> (logits, state)``; the state
    starts as None at every epoch and evaluation and is detached between windows. Loss:
    cross-entropy per token (``config.label_smoothing`` applies). Metrics: ``loss`` (mean per
    token: the training loss, or the cross-entropy in evaluation) and ``ppl`` = exp(mean
    cross-entropy per token), the perplexity.
    """

    curves = (("loss", "loss per token"), ("ppl", "perplexity"))
    measures = ("loss_sum", "cross_entropy_sum", "tokens")
    distills = False

    def __init__(self, bptt: int = 35) -> None:
        if isinstance(bptt, bool) or not isinstance(bptt, int) or bptt < 1:
            raise ValueError(f"task 'language-modelling': bptt must be a positive integer, got "
                             f"{bptt!r}")
        self.bptt = bptt

    def loader(self, dataset: Dataset, batch_size: int, *, train: bool, rank: int = 0,
               world_size: int = 1, seed: int = 0, num_workers: int = 0) -> DataLoader:
        windows = getattr(dataset, "windows", None)
        if not callable(windows):
            raise TypeError(f"task 'language-modelling' needs a token stream "
                            f"(edgecompress.data.TokenStream, e.g. data.load('ptb')), got "
                            f"{type(dataset).__name__}")
        return DataLoader(windows(batch_size, self.bptt, rank, world_size), batch_size=None,
                          num_workers=num_workers)

    def forward(self, model: nn.Module, inputs: Tensor, state: Any) -> tuple[Tensor, Any]:
        return model(inputs, state)

    def criterion(self, output: Tensor, targets: Tensor, config: TrainConfig) -> Tensor:
        return F.cross_entropy(output.reshape(-1, output.shape[-1]), targets.reshape(-1),
                               label_smoothing=config.label_smoothing)

    def measure(self, output: Tensor, targets: Tensor, loss: float | None = None) -> list[float]:
        count = targets.numel()
        cross_entropy = F.cross_entropy(output.reshape(-1, output.shape[-1]),
                                        targets.reshape(-1), reduction="sum").item()
        total = cross_entropy if loss is None else loss * count
        return [total, cross_entropy, count]

    def report(self, sums: list[float]) -> dict[str, float]:
        loss_sum, cross_entropy, count = sums
        mean = cross_entropy / count
        return {"loss": loss_sum / count, "ppl": math.exp(mean) if mean < 700 else math.inf}

    def describe(self, metrics: Mapping[str, float]) -> str:
        return f"loss {metrics['loss']:.4f} per token, perplexity {metrics['ppl']:.2f}"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "bptt": self.bptt}


def create(spec: Task | str | Mapping[str, Any] | None = None, **options: Any) -> Task:
    """A task from a name (``"classification"``), a mapping ``{"name": ..., **options}``, or a
    :class:`Task` (returned as is); None means classification."""
    if isinstance(spec, Task):
        if options:
            raise TypeError(f"options {sorted(options)} given with a task object {spec!r}")
        return spec
    if spec is None:
        spec = "classification"
    if isinstance(spec, Mapping):
        options = {**{k: v for k, v in spec.items() if k != "name"}, **options}
        if "name" not in spec:
            raise ValueError(f"a task mapping needs a 'name', got {dict(spec)!r}")
        spec = spec["name"]
    cls = _REGISTRY.get(spec)
    bad = sorted(set(options) - set(task_options(spec)))
    if bad:
        raise TypeError(f"task {spec!r} got unknown option(s) {bad}; valid: "
                        f"{', '.join(task_options(spec)) or '(none)'}")
    return cls(**options)


def task_options(name: str) -> list[str]:
    """The options of task ``name`` (keywords of its constructor)."""
    params = inspect.signature(_REGISTRY.get(name).__init__).parameters
    return [p for p in params if p != "self" and params[p].kind in (
        inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]


def available() -> list[str]:
    """Registered task names."""
    return _REGISTRY.available()


def add_sums(totals: list[float], values: Iterable[float]) -> list[float]:
    """Element-wise ``totals + values`` (the running sums of :meth:`Task.measure`)."""
    return [a + b for a, b in zip(totals, values)]


__all__ = ["Task", "Classification", "LanguageModelling", "register", "create", "available",
           "task_options", "distillation_loss"]
