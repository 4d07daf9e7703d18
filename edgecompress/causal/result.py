"""What a direction test returns, and the decision rule.

Both hypothesised directions are tested (residual of the effect regressed on the cause, against
the cause); :func:`decide` turns their p-values into ``"x->y"``, ``"y->x"`` or ``"undecided"``:

- ``rule="level"`` (the spec, after Hoyer et al. 2008 and Mooij et al. 2016): a direction is
  chosen when its independence hypothesis is kept (p >= level) and the other one is rejected
  (p < level); when both or neither are rejected the answer is ``"undecided"``;
- ``rule="forced"``: always the direction with the higher p-value (compared in log space), the
  lower statistic on a tie, ``"undecided"`` only when both are equal; the rule used for accuracy
  over benchmark pairs, where every pair needs an answer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import CausalInputError

X_TO_Y, Y_TO_X, UNDECIDED = "x->y", "y->x", "undecided"
RULES = ("level", "forced")


@dataclass(frozen=True)
class DirectionTest:
    """The test of one hypothesised direction (``"x->y"``: y = f(x) + noise, noise independent
    of x). ``k`` and ``labels`` are the mechanism clusters the statistic was computed within
    (one cluster for plain ANM); ``clusters`` holds each cluster's size, statistic and p-value."""

    hypothesis: str
    statistic: float
    p_value: float
    log_p_value: float
    k: int = 1
    labels: np.ndarray | None = field(default=None, repr=False)
    clusters: tuple[dict[str, float], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"hypothesis": self.hypothesis, "statistic": self.statistic,
                "p_value": self.p_value, "log_p_value": _finite_or_none(self.log_p_value),
                "k": self.k, "clusters": [dict(c) for c in self.clusters],
                "labels": None if self.labels is None else self.labels.tolist()}


@dataclass(frozen=True)
class DirectionResult:
    """The answer of :func:`edgecompress.causal.direction`: ``direction`` is ``"x->y"``,
    ``"y->x"`` or ``"undecided"``; ``x_to_y`` / ``y_to_x`` are the two tests. ``k`` and
    ``labels`` are the clusters of the chosen direction (of ``x->y`` when undecided).
    ``str()`` is a readable table; :meth:`to_dict` is JSON-serializable."""

    direction: str
    method: str
    level: float
    rule: str
    n: int
    x_to_y: DirectionTest
    y_to_x: DirectionTest
    options: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def chosen(self) -> DirectionTest:
        """The test of the decided direction (``x_to_y`` when undecided)."""
        return self.y_to_x if self.direction == Y_TO_X else self.x_to_y

    @property
    def k(self) -> int:
        return self.chosen.k

    @property
    def labels(self) -> np.ndarray | None:
        return self.chosen.labels

    def to_dict(self) -> dict[str, Any]:
        return {"direction": self.direction, "method": self.method, "level": self.level,
                "rule": self.rule, "n": self.n, "k": self.k, "seconds": self.seconds,
                "x_to_y": self.x_to_y.to_dict(), "y_to_x": self.y_to_x.to_dict(),
                "options": {key: _jsonable(v) for key, v in self.options.items()}}

    def __str__(self) -> str:
        lines = [f"causal direction ({self.method}, n={self.n}, level={self.level:g}, "
                 f"rule={self.rule}): {self.direction}",
                 f"  {'hypothesis':<10} {'HSIC':>11} {'p-value':>10} {'k':>3}"]
        for test in (self.x_to_y, self.y_to_x):
            lines.append(f"  {test.hypothesis:<10} {test.statistic:>11.4g} "
                         f"{_format_p(test):>10} {test.k:>3}")
        return "\n".join(lines)


def _format_p(test: DirectionTest) -> str:
    if test.p_value > 0 or not math.isfinite(test.log_p_value):
        return f"{test.p_value:.3g}"
    return f"1e{test.log_p_value / math.log(10):.0f}"  # below float range: show the exponent


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return type(value).__name__ if not isinstance(value, (list, tuple)) else list(value)


def check_level(level: float) -> float:
    """``level`` if it is a probability strictly between 0 and 1."""
    if not 0.0 < float(level) < 1.0:
        raise CausalInputError(f"level must be between 0 and 1 (exclusive), got {level}")
    return float(level)


def check_rule(rule: str) -> str:
    """``rule`` if it is one of :data:`RULES`."""
    if rule not in RULES:
        raise CausalInputError(f"unknown rule {rule!r}; available: {', '.join(RULES)}")
    return rule


def decide(x_to_y: DirectionTest, y_to_x: DirectionTest, level: float, rule: str) -> str:
    """The direction the two tests support under ``rule`` (module docstring)."""
    if check_rule(rule) == "forced":
        key_xy = (x_to_y.log_p_value, -x_to_y.statistic)
        key_yx = (y_to_x.log_p_value, -y_to_x.statistic)
        if key_xy == key_yx:
            return UNDECIDED
        return X_TO_Y if key_xy > key_yx else Y_TO_X
    keep_xy, keep_yx = x_to_y.p_value >= level, y_to_x.p_value >= level
    if keep_xy == keep_yx:
        return UNDECIDED
    return X_TO_Y if keep_xy else Y_TO_X
