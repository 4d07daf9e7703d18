"""Training: the loop (one process or DDP via torchrun) over a task (classification, language
modelling), optimizers and LR schedules, knowledge distillation, callbacks, atomic checkpoints
with exact resume, metrics log and plot.

The training loop itself (:class:`Trainer`, :func:`evaluate`, :func:`seed_everything`) is
imported on first use, so that importing the callbacks, schedules or tasks never loads it.
"""

from __future__ import annotations

import importlib
from typing import Any

from . import tasks
from .callbacks import Callback, LayerRegularizers
from .checkpoint import load_checkpoint, load_model_state, save_checkpoint
from .config import TrainConfig
from .distributed import DeviceError, resolve_device
from .schedules import ScheduleStepper
from .state import TrainerState
from .tasks import Task, distillation_loss

_LAZY = {"Trainer", "evaluate", "seed_everything"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(".trainer", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Callback", "LayerRegularizers", "ScheduleStepper", "Trainer", "TrainConfig", "TrainerState",
    "Task", "tasks", "evaluate", "distillation_loss", "seed_everything", "load_checkpoint",
    "load_model_state", "save_checkpoint", "resolve_device", "DeviceError",
]
