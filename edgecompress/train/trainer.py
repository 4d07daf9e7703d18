"""The training loop: one process or many (``torchrun``), checkpoint every epoch, exact resume."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm.auto import tqdm

from ..errors import CheckpointError
from .callbacks import Callback, LayerRegularizers, regularized_modules
from .checkpoint import load_checkpoint, load_model_state, save_checkpoint
from .config import MATH_FIELDS, TrainConfig
from .distributed import (all_reduce_sum, init_process_group, resolve_device, world_from_env,
                          wrap_ddp)
from .log import plot_curves, write_metrics
from .optim import build_optimizer, build_scheduler
from .schedules import ScheduleStepper, scheduled_modules
from .tasks import Task, add_sums
from .tasks import create as create_task

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
CURVES = "curves.png"


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global random number generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    return (seed * 1_000_003 + epoch * 1_009 + rank) % 2**63


def _to(value: Any, device: torch.device) -> Any:
    """``value`` (a tensor, or a tuple/list of them) moved to ``device``."""
    if isinstance(value, Tensor):
        return value.to(device)
    if isinstance(value, (tuple, list)):
        return type(value)(_to(v, device) for v in value)
    return value


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, batch_size: int = 256,
             device: torch.device | str = "cpu",
             task: Task | str | Mapping[str, Any] | None = None) -> dict[str, float]:
    """The metrics of ``task`` (default classification: mean cross-entropy ``loss`` and top-1
    accuracy ``top1`` in percent; language modelling: ``loss`` per token and perplexity ``ppl``)
    of ``model`` on ``dataset``.

    Under ``torchrun`` each process evaluates its shard (classification: every N-th sample;
    language modelling: its block of the ``batch_size`` rows) and the sums are all-reduced, so
    every process returns the exact global numbers.
    """
    task = create_task(task)
    device = torch.device(device)
    rank, world = world_from_env()
    if not torch.distributed.is_initialized():
        rank, world = 0, 1
    was_training = model.training
    model.eval()
    sums = [0.0] * len(task.measures)
    try:
        state = task.initial_state()
        for batch in task.loader(dataset, batch_size, train=False, rank=rank, world_size=world):
            inputs, targets = (_to(t, device) for t in task.split(batch))
            output, state = task.forward(model, inputs, state)
            sums = add_sums(sums, task.measure(output, targets))
    finally:
        model.train(was_training)
    sums = all_reduce_sum(sums, device)
    if sums[-1] == 0:
        raise ValueError("cannot evaluate on an empty dataset")
    return task.report(sums)


class Trainer:
    """Train ``model`` on ``train_set`` and evaluate on ``test_set`` after every epoch, or, with
    a ``valid_set``, on it after every epoch (``valid_<m>``) and on ``test_set`` only once,
    after the last epoch (``test_<m>`` in the final record): the test split then plays no part
    in watching or selecting the run.

    Launched by ``torchrun`` (WORLD_SIZE > 1) it trains with DistributedDataParallel (gloo on CPU;
    nccl on CUDA, each process on ``cuda:LOCAL_RANK``); only rank 0 writes files and shows
    progress. ``device``: ``"cpu"``, ``"cuda"`` (this process's GPU), ``"cuda:N"``, or None for
    CUDA if available else CPU (see :func:`~edgecompress.train.distributed.resolve_device`). BatchNorm statistics stay per process (use SyncBatchNorm on
    GPUs if that matters). With ``config.out_dir`` set, every epoch ends with an atomic
    ``checkpoint.pt``, ``metrics.jsonl`` and ``curves.png``; ``config.resume`` continues from the
    checkpoint. Each epoch reseeds every RNG from (seed, epoch, rank), so a run resumed after a
    kill ends exactly where the uninterrupted run does. Without ``resume`` an existing checkpoint
    in ``out_dir`` is overwritten by the new run.

    A model with scheduled quantizers gets a :class:`ScheduleStepper` callback automatically,
    and one with layer regularizers (S3) a :class:`LayerRegularizers` callback.

    ``task`` (a :class:`~edgecompress.train.tasks.Task`, a registered name such as
    ``"language-modelling"``, or a mapping with its options; default classification) says how
    batches are read and unpacked, how the model is run (with a state carried across batches,
    e.g. an LSTM's, reset every epoch), the loss and the metrics (``train_<m>``/``test_<m>``).

    Callbacks see the trainer as a :class:`~edgecompress.train.state.TrainerState`; beyond it
    they may use: module (what is called in the forward pass, DDP-wrapped when distributed),
    task, optimizer, scheduler, rank, world_size.
    """

    def __init__(
        self,
        model: nn.Module,
        train_set: Dataset,
        test_set: Dataset | None = None,
        config: TrainConfig | None = None,
        callbacks: Sequence[Callback] = (),
        teacher: nn.Module | None = None,
        extra_state: dict[str, Any] | None = None,
        device: torch.device | str | None = None,
        task: Task | str | Mapping[str, Any] | None = None,
        valid_set: Dataset | None = None,
    ) -> None:
        self.config = config or TrainConfig()
        self.task = create_task(task)
        self.device = resolve_device(device)
        self.rank, self.world_size = world_from_env()
        if self.config.batch_size % self.world_size:
            raise ValueError(f"batch_size {self.config.batch_size} is not divisible by the "
                             f"number of processes {self.world_size}")
        if self.config.kd_alpha > 0 and teacher is None:
            raise ValueError("kd_alpha > 0 needs a teacher model")
        if self.config.kd_alpha > 0 and not self.task.distills:
            raise ValueError(f"task {self.task.name!r} does not support knowledge distillation "
                             f"(kd_alpha > 0)")
        self.model = model.to(self.device)
        self.module: nn.Module = self.model
        self.train_set, self.test_set, self.valid_set = train_set, test_set, valid_set
        self.callbacks = list(callbacks)
        if scheduled_modules(self.model) and not any(
                isinstance(cb, ScheduleStepper) for cb in self.callbacks):
            self.callbacks.append(ScheduleStepper())
        if regularized_modules(self.model) and not any(
                isinstance(cb, LayerRegularizers) for cb in self.callbacks):
            self.callbacks.append(LayerRegularizers())
        self.teacher = teacher.to(self.device).eval() if teacher is not None else None
        self.extra_state = dict(extra_state or {})
        self.history: list[dict[str, Any]] = []
        self.epoch = 0
        self.step = 0
        self.total_steps = 0
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: torch.optim.lr_scheduler.LRScheduler | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def out_dir(self) -> Path | None:
        return Path(self.config.out_dir) if self.config.out_dir else None

    # --- the loop ---------------------------------------------------------------------------

    def fit(self) -> dict[str, Any]:
        """Train for ``config.epochs`` epochs (or the remaining ones on resume); return the final
        epoch's metrics."""
        created = init_process_group(self.device)
        try:
            metrics = self._fit()
            if created:  # every process is done with its collectives before any tears down
                torch.distributed.barrier()
            return metrics
        finally:
            if created:
                # the DDP wrapper holds the group's pending work: drop it before the group
                # (gloo work outliving its group aborted a process at exit)
                self.module = self.model
                torch.distributed.destroy_process_group()

    def _fit(self) -> dict[str, Any]:
        cfg = self.config
        if self.world_size > 1:
            self.module = wrap_ddp(self.model, self.device)
        loader = self.task.loader(self.train_set, cfg.batch_size, train=True, rank=self.rank,
                                  world_size=self.world_size, seed=cfg.seed,
                                  num_workers=cfg.num_workers)
        self.optimizer = build_optimizer(self.model, cfg)
        self.scheduler = build_scheduler(self.optimizer, len(loader), cfg)
        self.total_steps = cfg.epochs * len(loader)
        start = 0
        if cfg.resume and self.out_dir and (self.out_dir / CHECKPOINT).is_file():
            start = self._restore(self.out_dir / CHECKPOINT)
        for cb in self.callbacks:
            cb.on_fit_start(self)
        metrics: dict[str, Any] = self.history[-1] if self.history else {}
        for epoch in range(start, cfg.epochs):
            self.epoch = epoch
            seed_everything(_epoch_seed(cfg.seed, epoch, self.rank))
            if isinstance(loader.sampler, DistributedSampler):
                loader.sampler.set_epoch(epoch)
            for cb in self.callbacks:
                cb.on_epoch_start(self, epoch)
            began = time.perf_counter()
            metrics = {"epoch": epoch + 1, **self._train_epoch(loader, epoch)}
            if self.valid_set is not None:
                scores = self.evaluate(self.valid_set)
                metrics.update({f"valid_{k}": v for k, v in scores.items()})
            if self.test_set is not None and (self.valid_set is None
                                              or epoch == cfg.epochs - 1):
                scores = self.evaluate(self.test_set)
                metrics.update({f"test_{k}": v for k, v in scores.items()})
            for cb in self.callbacks:
                cb.on_epoch_end(self, epoch, metrics)
            metrics["seconds"] = time.perf_counter() - began
            self.history.append(metrics)
            self._save()
        for cb in self.callbacks:
            cb.on_fit_end(self, metrics)
        return dict(metrics)

    def _train_epoch(self, loader: DataLoader, epoch: int) -> dict[str, Any]:
        cfg, task = self.config, self.task
        self.module.train()
        sums, lr = [0.0] * len(task.measures), float("nan")
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                   disable=not (cfg.progress and self.is_main), dynamic_ncols=True)
        state = task.initial_state()
        for i, batch in enumerate(bar):
            inputs, targets = (_to(t, self.device) for t in task.split(batch))
            output, state = task.forward(self.module, inputs, state)
            loss = self._loss(output, inputs, targets)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            state = task.detach(state)
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            lr = self.optimizer.param_groups[0]["lr"]
            self.optimizer.step()
            self.scheduler.step()
            self.step += 1
            value = loss.item()
            sums = add_sums(sums, task.measure(output.detach(), targets, value))
            for cb in self.callbacks:
                cb.on_step_end(self, self.step, value)
            if i % cfg.log_every == 0:
                bar.set_postfix(**{k: f"{v:.4g}" for k, v in task.report(sums).items()},
                                lr=f"{lr:.3g}")
        bar.close()
        sums = all_reduce_sum(sums, self.device)
        return {"step": self.step, "lr": lr,  # the learning rate of the epoch's last step
                **{f"train_{k}": v for k, v in task.report(sums).items()}}

    def _loss(self, output: Tensor, inputs: Any, targets: Tensor) -> Tensor:
        loss = self.task.loss(output, targets, inputs, self.config, self.teacher)
        for cb in self.callbacks:
            extra = cb.extra_loss(self)
            if extra is not None:
                loss = loss + extra
        return loss

    def evaluate(self, dataset: Dataset) -> dict[str, float]:
        """The task's metrics of the current model on ``dataset`` (see :func:`evaluate`)."""
        return evaluate(self.model, dataset, self.config.eval_batch_size, self.device, self.task)

    # --- checkpoints --------------------------------------------------------------------------

    def _save(self) -> None:
        if not (self.is_main and self.out_dir):
            return
        save_checkpoint(self.out_dir / CHECKPOINT, {
            "epoch": self.epoch + 1,  # number of completed epochs
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "callbacks": [cb.state_dict() for cb in self.callbacks],
            "config": self.config.to_dict(),
            "extra_state": self.extra_state,
            "history": self.history,
            "task": self.task.to_dict(),
        })
        write_metrics(self.out_dir / METRICS, self.history)
        plot_curves(self.out_dir / CURVES, self.history, self.task.curves)

    def _restore(self, path: Path) -> int:
        """Load everything a resumed run needs; return the first epoch still to run."""
        state = load_checkpoint(path)
        saved = state.get("config", {})
        current = self.config.to_dict()
        differ = [k for k in MATH_FIELDS if saved.get(k) != current[k]]
        if differ:
            details = ", ".join(f"{k}: checkpoint {saved.get(k)!r} vs now {current[k]!r}"
                                for k in differ)
            raise CheckpointError(f"{path}: cannot resume, the configuration changed ({details})")
        saved_task = state.get("task", {"name": "classification"})
        if saved_task != self.task.to_dict():
            raise CheckpointError(f"{path}: cannot resume, the task changed (checkpoint "
                                  f"{saved_task} vs now {self.task.to_dict()})")
        if len(state.get("callbacks", [])) != len(self.callbacks):
            raise CheckpointError(f"{path}: cannot resume, the checkpoint has "
                                  f"{len(state.get('callbacks', []))} callback states but the "
                                  f"trainer has {len(self.callbacks)} callbacks")
        load_model_state(self.model, state["model"], path)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        for cb, cb_state in zip(self.callbacks, state["callbacks"]):
            cb.load_state_dict(cb_state)
        self.history = list(state.get("history", []))
        self.step = int(state.get("step", 0))
        if self.is_main and self.out_dir:
            write_metrics(self.out_dir / METRICS, self.history)
        return int(state["epoch"])
