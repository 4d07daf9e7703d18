"""What callbacks may read from the trainer, as a :class:`typing.Protocol`.

Callbacks and schedules are typed against :class:`TrainerState`, not against the
:class:`~edgecompress.train.Trainer` class, so they never import the training loop: the import
graph stays a stack (config -> state -> callbacks -> schedules -> trainer).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from torch import nn

from .config import TrainConfig


@runtime_checkable
class TrainerState(Protocol):
    """The trainer as a callback sees it.

    ``model`` is the unwrapped model (not the DDP wrapper); ``epoch`` counts from 0; ``step`` is
    the number of optimisation steps taken so far and ``total_steps`` the number the whole run
    takes; ``history`` holds the metrics of the finished epochs; only the process with
    ``is_main`` writes files, into ``out_dir`` (None when the run keeps no files).
    """

    model: nn.Module
    epoch: int
    step: int
    total_steps: int
    config: TrainConfig
    history: list[dict[str, Any]]

    @property
    def is_main(self) -> bool: ...

    @property
    def out_dir(self) -> Path | None: ...
