"""Checks of the data given to a causal-direction test, so that bad input fails with a message
naming the problem instead of giving a silent wrong answer."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import CausalInputError

#: Fewest samples a direction test accepts: below this, kernel bandwidths, regressions and the
#: HSIC null distribution are too poorly estimated for a decision to mean anything.
MIN_SAMPLES = 20


def as_column(values: Any, name: str) -> np.ndarray:
    """``values`` as a 1-D float array, or :class:`CausalInputError` naming ``name`` when it is
    not numeric, not one-dimensional (an ``(n, 1)`` column is accepted), or holds NaN or inf."""
    try:
        array = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as exc:
        raise CausalInputError(f"{name}: not numeric ({exc})") from None
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise CausalInputError(f"{name}: expected a 1-D array of samples, got shape {array.shape}")
    bad = ~np.isfinite(array)
    if bad.any():
        where = np.flatnonzero(bad)
        kinds = sorted({"NaN" if np.isnan(v) else "inf" for v in array[where]})
        raise CausalInputError(f"{name}: {int(bad.sum())} non-finite value(s) "
                               f"({', '.join(kinds)}), first at index {int(where[0])}; "
                               "remove or impute them first")
    return array


def check_pair(x: Any, y: Any, min_samples: int = MIN_SAMPLES,
               names: tuple[str, str] = ("x", "y")) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` as two finite 1-D float arrays of the same length, at least ``min_samples``
    long and not constant; otherwise :class:`CausalInputError` naming the problem."""
    xs, ys = as_column(x, names[0]), as_column(y, names[1])
    if len(xs) != len(ys):
        raise CausalInputError(f"{names[0]} and {names[1]} have different lengths "
                               f"({len(xs)} and {len(ys)})")
    if len(xs) < min_samples:
        raise CausalInputError(f"{len(xs)} samples; the direction test needs at least "
                               f"{min_samples}")
    for array, name in ((xs, names[0]), (ys, names[1])):
        if np.ptp(array) == 0:
            raise CausalInputError(f"{name} is constant (every value is {array[0]:g}); "
                                   "a constant variable has no causal direction")
    return xs, ys


def standardize(values: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance (the tests are scale-free; kernels and regressors see z-scores)."""
    return (values - values.mean()) / values.std()


def as_rng(seed: int | np.random.Generator | None) -> np.random.Generator:
    """A numpy generator from a seed, a generator (used as is) or None (fresh entropy)."""
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
