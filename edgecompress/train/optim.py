"""Optimizers with weight-decay exclusions, and per-step learning-rate schedules."""

from __future__ import annotations

import fnmatch
import math

import torch
from torch import nn

from .config import TrainConfig


def param_groups(model: nn.Module, config: TrainConfig) -> list[dict]:
    """Two groups: parameters with weight decay and the excluded ones (1-D unless ``decay_1d``,
    and names matching ``no_decay`` patterns). Empty groups are dropped."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        excluded = (p.ndim <= 1 and not config.decay_1d) or any(
            fnmatch.fnmatchcase(name, pattern) for pattern in config.no_decay)
        (no_decay if excluded else decay).append(p)
    groups = [{"params": decay, "weight_decay": config.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, config)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum,
                               nesterov=config.nesterov)
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.lr, betas=config.betas)
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas)


def lr_factor(step: int, steps_per_epoch: int, config: TrainConfig) -> float:
    """Multiplier of the base learning rate before optimisation step ``step`` (0-based)."""
    total = config.epochs * steps_per_epoch
    warmup = config.warmup_epochs * steps_per_epoch
    if step < warmup:
        return (step + 1) / warmup
    if config.schedule == "constant":
        return 1.0
    if config.schedule == "cosine":
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    epoch = step // steps_per_epoch
    return config.gamma ** sum(epoch >= m for m in config.milestones)


def build_scheduler(optimizer: torch.optim.Optimizer, steps_per_epoch: int,
                    config: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR stepped once per optimisation step (its state goes into checkpoints)."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, steps_per_epoch, config))
