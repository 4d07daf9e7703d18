"""TrainConfig: every knob of a training run, as plain JSON-able data."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import UnknownNameError

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "multistep")

# Fields that change the training math: a resumed run must agree with its checkpoint on these.
MATH_FIELDS = (
    "epochs", "batch_size", "optimizer", "lr", "momentum", "nesterov", "betas", "weight_decay",
    "no_decay", "decay_1d", "schedule", "milestones", "gamma", "warmup_epochs",
    "label_smoothing", "grad_clip", "kd_alpha", "kd_temperature", "seed",
)


@dataclass
class TrainConfig:
    """Configuration of :class:`~edgecompress.train.Trainer`.

    ``batch_size`` is the global batch: with N processes each one takes ``batch_size // N``.
    Weight decay skips every 1-D parameter (biases, normalisation scales) unless ``decay_1d``, and
    every parameter whose name matches one of the ``no_decay`` glob patterns. The learning-rate
    schedule is stepped once per optimisation step; ``cosine`` reaches 0 at the last step and
    ``multistep`` multiplies by ``gamma`` at each epoch in ``milestones``; ``warmup_epochs``
    prepends a linear warm-up. ``kd_alpha > 0`` with a teacher gives knowledge distillation:
    ``(1 - a) * CE + a * T^2 * KL(softmax(teacher / T) || softmax(student / T))``.
    ``kd_alpha = 1`` with ``kd_temperature = 1`` is distillation only, BinaryViT's loss: the
    soft-target cross-entropy against the teacher minus the teacher's entropy, a constant, so the
    same gradients.
    """

    epochs: int = 1
    batch_size: int = 64
    eval_batch_size: int = 256
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    no_decay: list[str] = field(default_factory=list)
    decay_1d: bool = False
    schedule: str = "cosine"
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1
    warmup_epochs: int = 0
    label_smoothing: float = 0.0
    grad_clip: float | None = None
    kd_alpha: float = 0.0
    kd_temperature: float = 4.0
    seed: int = 0
    out_dir: str | None = None
    resume: bool = False
    num_workers: int = 0
    progress: bool = True
    log_every: int = 50

    def __post_init__(self) -> None:
        self.optimizer = self.optimizer.lower()
        self.schedule = self.schedule.lower()
        if self.optimizer not in OPTIMIZERS:
            raise UnknownNameError(
                f"unknown optimizer {self.optimizer!r}; available: {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise UnknownNameError(
                f"unknown schedule {self.schedule!r}; available: {', '.join(SCHEDULES)}")
        self.betas = tuple(self.betas)  # type: ignore[assignment]
        self.milestones = [int(m) for m in self.milestones]
        self.no_decay = list(self.no_decay)
        for name in ("epochs", "batch_size", "eval_batch_size", "log_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)!r}")
        for name in ("lr", "weight_decay", "label_smoothing", "kd_alpha", "warmup_epochs",
                     "num_workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)!r}")
        if not 0 <= self.kd_alpha <= 1:
            raise ValueError(f"TrainConfig.kd_alpha must be in [0, 1], got {self.kd_alpha!r}")
        if self.kd_temperature <= 0:
            raise ValueError(f"TrainConfig.kd_temperature must be > 0, got {self.kd_temperature!r}")
        if self.warmup_epochs >= self.epochs and self.warmup_epochs > 0:
            raise ValueError(f"TrainConfig.warmup_epochs ({self.warmup_epochs}) must be < epochs "
                             f"({self.epochs})")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d
