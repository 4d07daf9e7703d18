"""The callback that steps quantizer schedules during training and checkpoints them."""

from __future__ import annotations

from typing import Any

from torch import nn

from .callbacks import Callback
from .state import TrainerState


def scheduled_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules carrying schedules (``module.schedules``: parameter name -> Schedule)."""
    return [(n, m) for n, m in model.named_modules() if getattr(m, "schedules", None)]


class ScheduleStepper(Callback):
    """Sets every scheduled quantizer parameter at the start of each epoch (``per="epoch"``) or
    before each step (``per="step"``), logs the values, and saves them in checkpoints.

    The trainer adds one automatically when the model has scheduled quantizers. A schedule
    whose ramp is longer than the run is an error at the start of training, naming it.
    """

    def __init__(self) -> None:
        self.values: dict[str, float] = {}

    @staticmethod
    def _total(trainer: TrainerState, per: str) -> int:
        return trainer.config.epochs if per == "epoch" else trainer.total_steps

    def on_fit_start(self, trainer: TrainerState) -> None:
        for name, module in scheduled_modules(trainer.model):
            for param, schedule in module.schedules.items():
                schedule.check_run(self._total(trainer, schedule.per),
                                   f"schedule of {param!r} in layer {name!r}")

    def _apply(self, trainer: TrainerState, per: str, i: int, total: int) -> None:
        for name, module in scheduled_modules(trainer.model):
            for param, schedule in module.schedules.items():
                if schedule.per == per:
                    value = schedule.value(i, total)
                    module.set_param(param, value)
                    self.values[f"{name}.{param}"] = value

    def on_epoch_start(self, trainer: TrainerState, epoch: int) -> None:
        self._apply(trainer, "epoch", epoch, trainer.config.epochs)
        self._apply(trainer, "step", trainer.step, trainer.total_steps)

    def on_step_end(self, trainer: TrainerState, step: int, loss: float) -> None:
        self._apply(trainer, "step", step, trainer.total_steps)

    def on_epoch_end(self, trainer: TrainerState, epoch: int, metrics: dict[str, Any]) -> None:
        # one value per parameter name (all layers of a method share their schedule)
        for key, value in self.values.items():
            metrics.setdefault(key.rsplit(".", 1)[-1], value)

    def state_dict(self) -> dict[str, Any]:
        return {"values": dict(self.values)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.values = dict(state.get("values", {}))
