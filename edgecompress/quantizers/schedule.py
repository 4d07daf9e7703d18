"""Schedules of quantizer parameters (mu, beta, lambda) over training.

A :class:`Schedule` is plain data: the value at step ``i`` of ``total`` (epochs, or optimisation
steps with ``per="step"``), with ``t = i / (total - 1)`` running from 0 at the first to 1 at the
last (a run of a single epoch or step is at its end value: it is the last). The trainer's
:class:`~edgecompress.train.ScheduleStepper` applies it to the quantizers and saves its state in
checkpoints.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

KINDS = ("constant", "linear", "geometric", "exponential")


@dataclass(frozen=True)
class Schedule:
    """``constant``: start. ``linear``: start + (end - start) t. ``geometric``:
    start (end / start)^t (both > 0). ``exponential``: start * rate^i (BinaryRelax's
    lam_i = lam_0 g^i, not normalised by the run length)."""

    kind: str
    start: float
    end: float | None = None
    rate: float | None = None
    per: str = "epoch"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"schedule kind must be one of {KINDS}, got {self.kind!r}")
        if self.per not in ("epoch", "step"):
            raise ValueError(f"schedule per must be 'epoch' or 'step', got {self.per!r}")
        if self.kind in ("linear", "geometric") and self.end is None:
            raise ValueError(f"a {self.kind} schedule needs an end value")
        if self.kind == "geometric" and (self.start <= 0 or (self.end or 0) <= 0):
            raise ValueError("a geometric schedule needs start > 0 and end > 0")
        if self.kind == "exponential" and (self.rate is None or self.rate <= 0):
            raise ValueError("an exponential schedule needs a rate > 0")

    def value(self, i: int, total: int) -> float:
        t = 1.0 if total <= 1 else min(1.0, i / (total - 1))  # one step: it is the last
        if self.kind == "constant":
            return self.start
        if self.kind == "linear":
            return self.start + (self.end - self.start) * t  # type: ignore[operator]
        if self.kind == "geometric":
            return self.start * (self.end / self.start) ** t  # type: ignore[operator]
        return self.start * self.rate ** i  # type: ignore[operator]

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_value(cls, value: "Schedule | Mapping[str, Any] | float") -> "Schedule":
        """A Schedule from a Schedule, a mapping (as written in a recipe) or a constant."""
        if isinstance(value, Schedule):
            return value
        if isinstance(value, Mapping):
            unknown = set(value) - {"kind", "start", "end", "rate", "per"}
            if unknown:
                raise ValueError(f"unknown schedule key(s) {sorted(unknown)}; valid: kind, "
                                 f"start, end, rate, per")
            return cls(**value)
        return cls("constant", float(value))

    def __repr__(self) -> str:
        body = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items())
        return f"Schedule({body})"
