"""Tied values: a variable recorded on a coarse grid (ring counts, ages in years, values rounded
to a few digits), as in many of the cause-effect pairs.

Rounding breaks the continuous additive-noise model in both directions: the rounded effect is
a step function of the cause plus noise that depends on where the cause falls in a step, and
the residual of a rounded cause is piled on a few columns. Both directions are then rejected
with tiny p-values. ``ties=``:

- ``"none"``: the values as given;
- ``"jitter"``: a variable with fewer than ``TIES_FRACTION * n`` distinct values has every sample
  moved uniformly at random within its value's cell, the interval from halfway to the next lower
  distinct value to halfway to the next higher one (one quantization step wide on a regular
  grid; an end cell mirrors its one neighbour's half-gap). This undoes the rounding as well as
  the data allow (the cell is where the unrounded value was), keeps the variable's scale, and
  keeps the order: the cells do not overlap, so a sample below another stays below it, and a
  strictly increasing transform of the variable gets the same ranks. Seeded, so a test stays
  deterministic. Rank transforms were the alternative; they change the marginal distributions,
  and with them the mechanism the regression has to fit, in continuous variables too.
"""

from __future__ import annotations

import numpy as np

from ..errors import CausalInputError
from .inputs import as_rng

TIES = ("none", "jitter")
#: The default of :func:`.methods.direction`, chosen on simulations only by
#: ``benchmarks/causal.py select`` (its docstring states the rules, each fixed before its run).
#: The first two selections (Gaussian causes with one variable on 20 levels; simulations
#: copying the pairs' data features) chose "jitter"; the third, the realistic simulations with
#: half of the rounded causes discrete quantities (a count, a category: the mechanism acts on
#: the rounded value), chose "none" (0.74 against 0.73 mean accuracy over 200 pairs, within
#: noise: the rule, not the margin, decides; on the discrete causes jitter lost, 0.65 against
#: 0.70).
DEFAULT_TIES = "none"
#: ``ties="jitter"`` changes a variable with fewer distinct values than this fraction of its
#: samples; continuous data (no ties) and lightly tied data are left alone.
TIES_FRACTION = 0.5


def check_ties(ties: str) -> str:
    if ties not in TIES:
        raise CausalInputError(f"unknown ties {ties!r}; available: {', '.join(TIES)}")
    return ties


def is_discretized(values: np.ndarray) -> bool:
    """Whether ``values`` has fewer than ``TIES_FRACTION * n`` distinct values."""
    return len(np.unique(values)) < TIES_FRACTION * len(values)


def jitter(values: np.ndarray, seed: int | np.random.Generator | None = 0) -> np.ndarray:
    """``values`` with each sample drawn uniformly in its distinct value's cell (module
    docstring); at least two distinct values."""
    levels, index = np.unique(values, return_inverse=True)
    if len(levels) < 2:
        raise CausalInputError("jitter needs at least two distinct values")
    middles = (levels[:-1] + levels[1:]) / 2
    low = np.concatenate([[2 * levels[0] - middles[0]], middles])[index]
    high = np.concatenate([middles, [2 * levels[-1] - middles[-1]]])[index]
    moved = low + as_rng(seed).random(len(values)) * (high - low)
    return np.minimum(moved, np.nextafter(high, low))  # cells [low, high) do not overlap


def break_ties(values: np.ndarray, ties: str, seed: int | np.random.Generator | None = 0
               ) -> np.ndarray:
    """``values`` handled as ``ties`` says (module docstring)."""
    if check_ties(ties) == "jitter" and is_discretized(values):
        return jitter(values, seed)
    return values
