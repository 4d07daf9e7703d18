"""The training loop: one process or many (``torchrun``), checkpoint every epoch, exact resume."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset
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


def distillation_loss(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """T^2 * KL(softmax(teacher / T) || softmax(student / T)), averaged over the batch
    (Hinton et al., 2015)."""
    t = temperature
    return F.kl_div(F.log_softmax(student / t, dim=-1), F.log_softmax(teacher / t, dim=-1),
                    reduction="batchmean", log_target=True) * (t * t)


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, batch_size: int = 256,
             device: torch.device | str = "cpu") -> dict[str, float]:
    """Mean cross-entropy and top-1 accuracy (percent) of ``model`` on ``dataset``.

    Under ``torchrun`` each process evaluates every N-th sample and the sums are all-reduced, so
    every process returns the exact global numbers.
    """
    device = torch.device(device)
    rank, world = world_from_env()
    if not torch.distributed.is_initialized():
        rank, world = 0, 1
    shard = Subset(dataset, range(rank, len(dataset), world)) if world > 1 else dataset
    was_training = model.training
    model.eval()
    loss_sum, correct, count = 0.0, 0.0, 0.0
    try:
        for x, y in DataLoader(shard, batch_size=batch_size):
            x, y = x.to(device), y.to(device)
            logits = model(x)
            loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
            correct += (logits.argmax(dim=-1) == y).sum().item()
            count += len(y)
    finally:
        model.train(was_training)
    loss_sum, correct, count = all_reduce_sum([loss_sum, correct, count], device)
    if count == 0:
        raise ValueError("cannot evaluate on an empty dataset")
    return {"loss": loss_sum / count, "top1": 100.0 * correct / count}


class Trainer:
    """Train ``model`` on ``train_set`` and evaluate on ``test_set`` after every epoch.

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

    Attributes callbacks may use: model (unwrapped), module (what is called in the forward pass,
    DDP-wrapped when distributed), optimizer, scheduler, epoch, step, total_steps, config, rank,
    world_size, is_main, history.
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
    ) -> None:
        self.config = config or TrainConfig()
        self.device = resolve_device(device)
        self.rank, self.world_size = world_from_env()
        if self.config.batch_size % self.world_size:
            raise ValueError(f"batch_size {self.config.batch_size} is not divisible by the "
                             f"number of processes {self.world_size}")
        if self.config.kd_alpha > 0 and teacher is None:
            raise ValueError("kd_alpha > 0 needs a teacher model")
        self.model = model.to(self.device)
        self.module: nn.Module = self.model
        self.train_set, self.test_set = train_set, test_set
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
            return self._fit()
        finally:
            if created:
                torch.distributed.destroy_process_group()

    def _fit(self) -> dict[str, Any]:
        cfg = self.config
        if self.world_size > 1:
            self.module = wrap_ddp(self.model, self.device)
        sampler = DistributedSampler(self.train_set, num_replicas=self.world_size, rank=self.rank,
                                     shuffle=True, seed=cfg.seed, drop_last=False)
        loader = DataLoader(self.train_set, batch_size=cfg.batch_size // self.world_size,
                            sampler=sampler, num_workers=cfg.num_workers)
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
            sampler.set_epoch(epoch)
            for cb in self.callbacks:
                cb.on_epoch_start(self, epoch)
            began = time.perf_counter()
            metrics = {"epoch": epoch + 1, **self._train_epoch(loader, epoch)}
            if self.test_set is not None:
                test = evaluate(self.model, self.test_set, cfg.eval_batch_size, self.device)
                metrics.update(test_loss=test["loss"], test_top1=test["top1"])
            for cb in self.callbacks:
                cb.on_epoch_end(self, epoch, metrics)
            metrics["seconds"] = time.perf_counter() - began
            self.history.append(metrics)
            self._save()
        for cb in self.callbacks:
            cb.on_fit_end(self, metrics)
        return dict(metrics)

    def _train_epoch(self, loader: DataLoader, epoch: int) -> dict[str, Any]:
        cfg = self.config
        self.module.train()
        loss_sum, correct, count, lr = 0.0, 0.0, 0.0, float("nan")
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                   disable=not (cfg.progress and self.is_main), dynamic_ncols=True)
        for i, (x, y) in enumerate(bar):
            x, y = x.to(self.device), y.to(self.device)
            logits = self.module(x)
            loss = self._loss(logits, x, y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            lr = self.optimizer.param_groups[0]["lr"]
            self.optimizer.step()
            self.scheduler.step()
            self.step += 1
            value = loss.item()
            loss_sum += value * len(y)
            correct += (logits.detach().argmax(dim=-1) == y).sum().item()
            count += len(y)
            for cb in self.callbacks:
                cb.on_step_end(self, self.step, value)
            if i % cfg.log_every == 0:
                bar.set_postfix(loss=f"{loss_sum / count:.4f}", top1=f"{100 * correct / count:.2f}",
                                lr=f"{lr:.3g}")
        bar.close()
        loss_sum, correct, count = all_reduce_sum([loss_sum, correct, count], self.device)
        return {"step": self.step, "lr": lr,  # the learning rate of the epoch's last step
                "train_loss": loss_sum / count, "train_top1": 100.0 * correct / count}

    def _loss(self, logits: Tensor, x: Tensor, y: Tensor) -> Tensor:
        cfg = self.config
        loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
        if self.teacher is not None and cfg.kd_alpha > 0:
            with torch.no_grad():
                teacher_logits = self.teacher(x)
            kd = distillation_loss(logits, teacher_logits, cfg.kd_temperature)
            loss = (1 - cfg.kd_alpha) * loss + cfg.kd_alpha * kd
        for cb in self.callbacks:
            extra = cb.extra_loss(self)
            if extra is not None:
                loss = loss + extra
        return loss

    def evaluate(self, dataset: Dataset) -> dict[str, float]:
        """Loss and top-1 (percent) of the current model on ``dataset``."""
        return evaluate(self.model, dataset, self.config.eval_batch_size, self.device)

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
        })
        write_metrics(self.out_dir / METRICS, self.history)
        plot_curves(self.out_dir / CURVES, self.history)

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
