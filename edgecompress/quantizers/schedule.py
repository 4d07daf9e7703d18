"""Schedules of trained parameters (mu, beta, lambda, theta) over training.

A :class:`Schedule` is plain data: the value at step ``i`` of ``total`` (epochs, or optimisation
steps with ``per="step"``), with ``t = i / (total - 1)`` running from 0 at the first to 1 at the
last (a run of a single epoch or step is at its end value: it is the last). A ramp
(``ramp`` steps, or ``ramp_fraction`` of the run) reaches the end value earlier and holds it.
The trainer's :class:`~edgecompress.train.ScheduleStepper` applies it to the quantizers and
layers and saves its state in checkpoints.
"""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass
from typing import Any, Mapping

from ..errors import ScheduleError

KINDS = ("constant", "linear", "geometric", "exponential")
KEYS = ("kind", "start", "end", "rate", "per", "ramp", "ramp_fraction")


@dataclass(frozen=True)
class Schedule:
    """``constant``: start. ``linear``: start + (end - start) t. ``geometric``:
    start (end / start)^t (both > 0). ``exponential``: start * rate^i (BinaryRelax's
    lam_i = lam_0 g^i, not normalised by the run length).

    The ramp ends at step ``L`` (0-based) and the value holds from there on:
    ``t = min(1, i / L)`` (t = 1 when L = 0) and, for ``exponential``, ``i`` is replaced by
    ``min(i, L)``, with

    - no ramp: ``L = total - 1`` (the end value at the last step of the run);
    - ``ramp = R`` (a count of epochs, or of steps with ``per="step"``; 1 <= R <= total):
      ``L = R - 1``, the end value from step R (1-based) on; ``R = total`` is no ramp;
    - ``ramp_fraction = f`` (0 < f <= 1): ``L = f (total - 1)``; ``f = 1`` is no ramp.

    A ramp longer than the run is an error (:meth:`check_run`, called by the trainer), never a
    silent clamp. Invalid fields raise :class:`~edgecompress.errors.ScheduleError`.
    """

    kind: str
    start: float
    end: float | None = None
    rate: float | None = None
    per: str = "epoch"
    ramp: int | None = None
    ramp_fraction: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ScheduleError(f"schedule kind must be one of {KINDS}, got {self.kind!r}")
        if self.per not in ("epoch", "step"):
            raise ScheduleError(f"schedule per must be 'epoch' or 'step', got {self.per!r}")
        if self.kind in ("linear", "geometric") and self.end is None:
            raise ScheduleError(f"a {self.kind} schedule needs an end value")
        if self.kind == "geometric" and (self.start <= 0 or (self.end or 0) <= 0):
            raise ScheduleError("a geometric schedule needs start > 0 and end > 0")
        if self.kind == "exponential" and (self.rate is None or self.rate <= 0):
            raise ScheduleError("an exponential schedule needs a rate > 0")
        self._check_ramp()

    def _check_ramp(self) -> None:
        if self.ramp is None and self.ramp_fraction is None:
            return
        if self.kind == "constant":
            raise ScheduleError("a constant schedule has no ramp; ramp and ramp_fraction apply "
                                "to linear, geometric and exponential schedules")
        if self.ramp is not None and self.ramp_fraction is not None:
            raise ScheduleError(f"give ramp ({self.per}s) or ramp_fraction (of the run), not "
                                f"both; got ramp={self.ramp!r}, "
                                f"ramp_fraction={self.ramp_fraction!r}")
        if self.ramp is not None and (isinstance(self.ramp, bool) or not isinstance(
                self.ramp, numbers.Integral) or self.ramp < 1):
            raise ScheduleError(f"schedule ramp must be a positive integer (the {self.per}s "
                                f"until the end value), got {self.ramp!r}")
        fraction = self.ramp_fraction
        if fraction is not None and (isinstance(fraction, bool) or not isinstance(
                fraction, numbers.Real) or not 0 < fraction <= 1):
            raise ScheduleError(f"schedule ramp_fraction must be a number in (0, 1] (the "
                                f"fraction of the run until the end value), got {fraction!r}")

    def ramp_end(self, total: int) -> float:
        """``L``: the 0-based step of a run of ``total`` from which the end value holds."""
        if self.ramp is not None:
            return float(self.ramp - 1)
        fraction = 1.0 if self.ramp_fraction is None else float(self.ramp_fraction)
        return fraction * max(total - 1, 0)

    def check_run(self, total: int, owner: str = "schedule") -> None:
        """Raise ScheduleError, naming ``owner``, if the ramp is longer than a run of ``total``
        epochs (or steps, with ``per="step"``)."""
        if self.ramp is not None and self.ramp > total:
            raise ScheduleError(f"{owner}: ramp={self.ramp} {self.per}s is longer than the run "
                                f"({total} {self.per}s); give ramp <= {total}, or "
                                f"ramp_fraction (0 < f <= 1) to scale with the run")

    def value(self, i: int, total: int) -> float:
        last = self.ramp_end(total)
        t = 1.0 if last <= 0 else min(1.0, i / last)  # one step: it is the last
        if self.kind == "constant":
            return self.start
        if self.kind == "linear":
            return self.start + (self.end - self.start) * t  # type: ignore[operator]
        if self.kind == "geometric":
            return self.start * (self.end / self.start) ** t  # type: ignore[operator]
        ramped = self.ramp is not None or self.ramp_fraction is not None
        return self.start * self.rate ** (min(i, last) if ramped else i)  # type: ignore[operator]

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_value(cls, value: "Schedule | Mapping[str, Any] | float") -> "Schedule":
        """A Schedule from a Schedule, a mapping (as written in a recipe) or a constant."""
        if isinstance(value, Schedule):
            return value
        if isinstance(value, Mapping):
            unknown = set(value) - set(KEYS)
            if unknown:
                raise ScheduleError(f"unknown schedule key(s) {sorted(unknown)}; valid: "
                                    f"{', '.join(KEYS)}")
            if "kind" not in value or "start" not in value:
                raise ScheduleError(f"a schedule needs kind and start, got {dict(value)}")
            return cls(**value)
        return cls("constant", float(value))

    def __repr__(self) -> str:
        body = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items())
        return f"Schedule({body})"
