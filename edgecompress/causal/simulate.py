"""Heterogeneous additive-noise data: k groups of samples, each with its own mechanism
``effect = scale_g * f_g(cause) + offset_g + noise_g`` (its own function, noise type and noise
scale), the benchmark situation of the heterogeneous direction test. Seeded.

Options that make the data look like recorded data (the cause-effect pairs: often rounded,
skewed or heavy-tailed, with outliers):

- ``cause``: the cause's distribution, a name of :data:`CAUSES` (zero mean, unit variance);
- ``cause_levels`` / ``effect_levels`` round a variable to a grid of that many equally spaced
  values over its range; ``cause_resolution`` / ``effect_resolution`` round it to multiples of
  that step instead (in the variable's units; the cause has unit variance), as many real pairs
  are recorded (ring counts, ages in years, a few significant digits), where the continuous
  additive-noise model no longer holds exactly;
- ``cause_outliers`` / ``effect_outliers``: that share of the samples get a gross error,
  4 to 8 standard deviations of the variable either way (a typo, a unit slip); the rounding
  applies after it, as to any recorded value;
- ``discrete_cause``: the cause is a discrete quantity (a count, a category, a year), not a
  continuous one recorded coarsely: the mechanisms act on its rounded values, so the
  additive-noise model holds exactly in the causal direction (the cause's gross errors, if
  any, come afterwards and are rounded to the same grid).

The options draw after the default ones, so the default data stay what they were."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import CausalInputError
from .inputs import as_rng
from .result import X_TO_Y, Y_TO_X

#: Mechanisms on causes of roughly unit scale; the nonlinear ones keep the direction
#: identifiable with any noise (a linear mechanism with Gaussian noise is not).
MECHANISMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "cubic": lambda x: 0.5 * x**3,
    "tanh": lambda x: 2.0 * np.tanh(2.0 * x),
    "sin": lambda x: 1.5 * np.sin(2.0 * x),
    "quadratic": lambda x: x**2 - 1.0,
    "exp": lambda x: np.exp(x) - 1.5,
    "linear": lambda x: x,
    "abs": lambda x: 1.5 * np.abs(x) - 1.0,  # non-invertible
    "threshold": lambda x: 2.0 * np.maximum(x, 0.0) - 0.5,  # flat, then rising
    "log": lambda x: 1.5 * np.sign(x) * np.log1p(np.abs(x)),  # compresses the tails
}
NOISES: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {  # unit variance each
    "gaussian": lambda rng, n: rng.normal(size=n),
    "uniform": lambda rng, n: rng.uniform(-np.sqrt(3), np.sqrt(3), size=n),
    "laplace": lambda rng, n: rng.laplace(scale=1 / np.sqrt(2), size=n),
    "student-t": lambda rng, n: rng.standard_t(5, size=n) / np.sqrt(5 / 3),
}
#: Distributions of the cause, zero mean and unit variance each.
CAUSES: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "gaussian": lambda rng, n: rng.normal(size=n),
    "uniform": NOISES["uniform"],
    # lognormal with sigma 0.5: skewness 1.75, excess kurtosis 5.9
    "skewed": lambda rng, n: ((rng.lognormal(sigma=0.5, size=n) - np.exp(0.125))
                              / np.sqrt((np.exp(0.25) - 1) * np.exp(0.25))),
    "heavy-tailed": NOISES["student-t"],  # excess kurtosis 6
    # two modes at -0.8 and 0.8, each with standard deviation 0.6
    "bimodal": lambda rng, n: rng.choice([-0.8, 0.8], size=n) + 0.6 * rng.normal(size=n),
}
DEFAULT_MECHANISMS = ("cubic", "tanh", "sin", "quadratic", "exp")
DEFAULT_NOISES = ("gaussian", "uniform", "laplace")


@dataclass(frozen=True)
class SimulatedPair:
    """Samples ``x``, ``y`` with the true ``direction`` ("x->y" or "y->x"), the group of each
    sample (``labels``) and each group's mechanism, noise type, noise scale and offset."""

    x: np.ndarray
    y: np.ndarray
    direction: str
    labels: np.ndarray
    groups: tuple[dict[str, Any], ...] = field(default=())

    @property
    def k(self) -> int:
        return len(self.groups)


def _pick(names: Sequence[str] | None, pool: Sequence[str], k: int, what: str,
          registry: dict[str, Any], rng: np.random.Generator) -> list[str]:
    if names is None:
        return list(rng.choice(list(pool), size=k, replace=k > len(pool)))
    names = list(names)
    unknown = [name for name in names if name not in registry]
    if unknown or len(names) != k:
        raise CausalInputError(f"{what}: need {k} names from {', '.join(registry)}; got {names}")
    return names


def grid(values: np.ndarray, levels: int | None, resolution: float | None,
         name: str) -> tuple[float, float] | None:
    """The rounding grid ``(origin, step)`` that ``{name}_levels`` (``levels`` equally spaced
    values from the minimum of ``values`` to its maximum) or ``{name}_resolution`` (multiples of
    ``resolution``) asks for; None for neither. They are alternatives."""
    if levels is not None and resolution is not None:
        raise CausalInputError(f"{name}_levels and {name}_resolution are alternatives; "
                               f"got both ({levels!r}, {resolution!r})")
    if levels is not None:
        if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) or levels < 2:
            raise CausalInputError(f"{name}_levels must be an integer of at least 2; "
                                   f"got {levels!r}")
        return float(values.min()), float(values.max() - values.min()) / (levels - 1)
    if resolution is not None:
        if isinstance(resolution, bool) or not isinstance(resolution, (int, float, np.number)) \
                or not np.isfinite(resolution) or resolution <= 0:
            raise CausalInputError(f"{name}_resolution must be a positive number; "
                                   f"got {resolution!r}")
        return 0.0, float(resolution)
    return None


def snap(values: np.ndarray, on: tuple[float, float] | None) -> np.ndarray:
    """``values`` rounded to the nearest point of the grid ``on`` (:func:`grid`); unchanged
    for None."""
    if on is None:
        return values
    origin, step = on
    return origin + step * np.round((values - origin) / step)


def discretize(values: np.ndarray, levels: int, name: str = "values") -> np.ndarray:
    """``values`` rounded to the nearest of ``levels`` equally spaced values from their minimum
    to their maximum: exactly ``levels`` distinct values unless a grid point gets no sample
    (sparse tails)."""
    return snap(values, grid(values, levels, None, name))


def round_to(values: np.ndarray, resolution: float, name: str = "values") -> np.ndarray:
    """``values`` rounded to the nearest multiple of ``resolution`` (> 0)."""
    return snap(values, grid(values, None, resolution, name))


def contaminate(values: np.ndarray, share: float, rng: np.random.Generator,
                name: str = "outliers") -> np.ndarray:
    """``values`` with ``round(share * n)`` samples, chosen at random, moved by 4 to 8 standard
    deviations of ``values`` up or down; ``share`` in [0, 0.5)."""
    if isinstance(share, bool) or not isinstance(share, (int, float, np.number)) \
            or not 0 <= share < 0.5:
        raise CausalInputError(f"{name} must be a share in [0, 0.5); got {share!r}")
    count = int(round(share * len(values)))
    moved = values.copy()
    where = rng.choice(len(values), size=count, replace=False)
    moved[where] += (rng.choice([-1.0, 1.0], size=count) * rng.uniform(4, 8, size=count)
                     * values.std())
    return moved


def record(values: np.ndarray, levels: int | None, resolution: float | None,
           outliers: float, rng: np.random.Generator, name: str,
           on: tuple[float, float] | None = None) -> np.ndarray:
    """One variable as recorded: with gross errors (:func:`contaminate`), then rounded to
    ``levels`` or to ``resolution`` (:func:`grid`, found on the contaminated values), or to the
    given grid ``on``."""
    if on is None:
        grid(values, levels, resolution, name)  # bad options fail before any draw
    if outliers:
        values = contaminate(values, outliers, rng, f"{name}_outliers")
    return snap(values, on if on is not None else grid(values, levels, resolution, name))


def simulate(n: int, k: int = 2, *, mechanisms: Sequence[str] | None = None,
             noises: Sequence[str] | None = None, noise_scales: Sequence[float] | None = None,
             offsets: Sequence[float] | None = None, proportions: Sequence[float] | None = None,
             direction: str = X_TO_Y, cause: str = "gaussian", cause_levels: int | None = None,
             effect_levels: int | None = None, cause_resolution: float | None = None,
             effect_resolution: float | None = None, cause_outliers: float = 0.0,
             effect_outliers: float = 0.0, discrete_cause: bool = False,
             seed: int | np.random.Generator | None = 0) -> SimulatedPair:
    """``n`` samples from ``k`` groups. The cause is drawn from ``cause`` (a name of
    :data:`CAUSES`, default standard normal) in every group; each group's effect is its
    mechanism (a name of :data:`MECHANISMS`; default: distinct random ones of
    :data:`DEFAULT_MECHANISMS`) plus its offset (default ``1.5 * (g - (k-1)/2)``) plus noise of
    its type (a name of :data:`NOISES`, default random ones of :data:`DEFAULT_NOISES`) times
    its scale (default uniform on [0.2, 0.5]). ``proportions`` default to equal;
    ``direction="y->x"`` swaps the columns and ``"random"`` picks either. ``cause_outliers`` /
    ``effect_outliers``, ``cause_levels`` / ``effect_levels`` and ``cause_resolution`` /
    ``effect_resolution``: gross errors and rounding of the cause / the effect (:func:`record`,
    module docstring; default: none). ``discrete_cause``: the cause is a discrete quantity, its
    rounded values are what the mechanisms act on (module docstring); needs ``cause_levels``
    or ``cause_resolution``."""
    rng = as_rng(seed)
    if k < 1 or n < k:
        raise CausalInputError(f"simulate needs k >= 1 and n >= k; got n={n}, k={k}")
    mech = _pick(mechanisms, DEFAULT_MECHANISMS, k, "mechanisms", MECHANISMS, rng)
    noise = _pick(noises, DEFAULT_NOISES, k, "noises", NOISES, rng)
    scales = np.asarray(noise_scales if noise_scales is not None else rng.uniform(0.2, 0.5, k))
    shifts = np.asarray(offsets if offsets is not None else 1.5 * (np.arange(k) - (k - 1) / 2))
    weights = np.asarray(proportions if proportions is not None else np.ones(k), dtype=float)
    if len(scales) != k or len(shifts) != k or len(weights) != k or (weights < 0).any():
        raise CausalInputError(f"noise_scales, offsets and proportions need {k} values "
                               "(proportions non-negative)")
    if direction == "random":
        direction = X_TO_Y if rng.random() < 0.5 else Y_TO_X
    if direction not in (X_TO_Y, Y_TO_X):
        raise CausalInputError(f"direction must be 'x->y', 'y->x' or 'random'; got {direction!r}")
    if cause not in CAUSES:
        raise CausalInputError(f"unknown cause {cause!r}; available: {', '.join(CAUSES)}")
    labels = np.sort(rng.choice(k, size=n, p=weights / weights.sum()))
    cause, effect = CAUSES[cause](rng, n), np.empty(n)
    on = None
    if discrete_cause:
        on = grid(cause, cause_levels, cause_resolution, "cause")
        if on is None:
            raise CausalInputError("discrete_cause needs cause_levels or cause_resolution "
                                   "(the values the cause takes)")
        cause = snap(cause, on)
    for g in range(k):
        mine = labels == g
        effect[mine] = (MECHANISMS[mech[g]](cause[mine]) + shifts[g]
                        + scales[g] * NOISES[noise[g]](rng, int(mine.sum())))
    order = rng.permutation(n)
    cause, effect, labels = cause[order], effect[order], labels[order]
    cause = record(cause, cause_levels, cause_resolution, cause_outliers, rng, "cause", on)
    effect = record(effect, effect_levels, effect_resolution, effect_outliers, rng, "effect")
    groups = tuple({"mechanism": str(mech[g]), "noise": str(noise[g]),
                    "noise_scale": float(scales[g]), "offset": float(shifts[g])} for g in range(k))
    x, y = (cause, effect) if direction == X_TO_Y else (effect, cause)
    return SimulatedPair(x=x, y=y, direction=direction, labels=labels, groups=groups)
