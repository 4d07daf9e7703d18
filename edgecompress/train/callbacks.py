"""Callbacks: the trainer's extension points (schedules, diagnostics, regularisers)."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from .state import TrainerState


class Callback:
    """Base class: override the hooks you need; all are no-ops by default.

    A callback's :meth:`state_dict` is saved in every checkpoint and handed back to
    :meth:`load_state_dict` on resume, so a schedule continues where it stopped.
    """

    def on_fit_start(self, trainer: TrainerState) -> None: ...

    def on_epoch_start(self, trainer: TrainerState, epoch: int) -> None: ...

    def on_step_end(self, trainer: TrainerState, step: int, loss: float) -> None: ...

    def on_epoch_end(self, trainer: TrainerState, epoch: int, metrics: dict[str, Any]) -> None:
        """Called after evaluation; entries added to ``metrics`` go to the metrics log."""

    def on_fit_end(self, trainer: TrainerState, metrics: dict[str, Any]) -> None: ...

    def extra_loss(self, trainer: TrainerState) -> Tensor | None:
        """A term added to the training loss at every step (e.g. a regulariser)."""
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def regularized_modules(model) -> list:
    """Modules of ``model`` that add a term to the loss (they define ``regularizer()``, e.g.
    S3's dense-weight regularizer on its shift layers)."""
    return [m for m in model.modules() if callable(getattr(m, "regularizer", None))]


class LayerRegularizers(Callback):
    """Adds every layer's ``regularizer()`` to the training loss (added by the trainer
    automatically when the model has such layers) and logs the epoch's last value as
    ``regularizer``."""

    def __init__(self) -> None:
        self.last = 0.0

    def extra_loss(self, trainer: TrainerState) -> Tensor | None:
        terms = [m.regularizer() for m in regularized_modules(trainer.model)]
        if not terms:
            return None
        total = sum(terms[1:], terms[0])
        self.last = float(total.detach())
        return total

    def on_epoch_end(self, trainer: TrainerState, epoch: int, metrics: dict[str, Any]) -> None:
        metrics["regularizer"] = self.last
