"""Training: the loop (one process or DDP via torchrun), optimizers and LR schedules, knowledge
distillation, callbacks, atomic checkpoints with exact resume, metrics log and plot."""

from .callbacks import Callback, LayerRegularizers
from .checkpoint import load_checkpoint, load_model_state, save_checkpoint
from .config import TrainConfig
from .distributed import DeviceError, resolve_device
from .schedules import ScheduleStepper
from .trainer import Trainer, distillation_loss, evaluate, seed_everything

__all__ = [
    "Callback", "LayerRegularizers", "ScheduleStepper", "Trainer", "TrainConfig", "evaluate", "distillation_loss", "seed_everything",
    "load_checkpoint", "load_model_state", "save_checkpoint", "resolve_device", "DeviceError",
]
