"""A direction test scored on the cause-effect pairs: each pair decided (optionally on a seeded
subsample), and the weighted accuracy of the benchmark (Mooij et al. 2016: each pair counts with
its weight, so that a source dataset with many pairs does not dominate; an undecided pair counts
as wrong)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from .methods import direction
from .pairs import CausePair
from .result import DirectionResult


@dataclass(frozen=True)
class PairDecision:
    """The answer of a test on one pair, against the pair's ground truth."""

    pair: CausePair
    result: DirectionResult
    n_used: int

    @property
    def correct(self) -> bool:
        return self.result.direction == self.pair.direction

    def to_dict(self) -> dict[str, Any]:
        return {"pair": self.pair.name, "n": len(self.pair), "n_used": self.n_used,
                "weight": self.pair.weight, "truth": self.pair.direction,
                "decision": self.result.direction, "correct": self.correct,
                "k": self.result.k, "seconds": self.result.seconds,
                "p_x_to_y": self.result.x_to_y.p_value, "p_y_to_x": self.result.y_to_x.p_value}


def subsample(pair: CausePair, max_n: int | None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The pair's samples, or ``max_n`` of them drawn without replacement (seeded by ``seed`` and
    the pair id, so every method sees the same points of a pair)."""
    if max_n is None or len(pair) <= max_n:
        return pair.x, pair.y
    keep = np.sort(np.random.default_rng([seed, pair.pair_id]).choice(len(pair), max_n,
                                                                       replace=False))
    return pair.x[keep], pair.y[keep]


def decide_pair(pair: CausePair, method: str = "anm", *, max_n: int | None = None,
                seed: int = 0, rule: str = "forced", **options: Any) -> PairDecision:
    """:func:`~.methods.direction` on ``pair`` (at most ``max_n`` samples); ``rule`` defaults
    to "forced", which answers every pair, as accuracy on the benchmark needs."""
    x, y = subsample(pair, max_n, seed)
    result = direction(x, y, method, seed=seed, rule=rule, **options)
    return PairDecision(pair=pair, result=result, n_used=len(x))


def weighted_accuracy(decisions: Iterable[PairDecision]) -> float:
    """Sum of the weights of the correctly decided pairs over the sum of all their weights."""
    decisions = list(decisions)
    total = sum(d.pair.weight for d in decisions)
    return sum(d.pair.weight for d in decisions if d.correct) / total if total else float("nan")
