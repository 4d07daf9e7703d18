"""Heterogeneous additive-noise data: k groups of samples, each with its own mechanism
``effect = scale_g * f_g(cause) + offset_g + noise_g`` (its own function, noise type and noise
scale), the benchmark situation of the heterogeneous direction test. Seeded.

``cause_levels`` / ``effect_levels`` round a variable to a grid of that many equally spaced
values over its range, as many real pairs are recorded (ring counts, ages in years, a few
significant digits), where the continuous additive-noise model no longer holds exactly."""

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
}
NOISES: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {  # unit variance each
    "gaussian": lambda rng, n: rng.normal(size=n),
    "uniform": lambda rng, n: rng.uniform(-np.sqrt(3), np.sqrt(3), size=n),
    "laplace": lambda rng, n: rng.laplace(scale=1 / np.sqrt(2), size=n),
}
DEFAULT_MECHANISMS = ("cubic", "tanh", "sin", "quadratic", "exp")


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


def discretize(values: np.ndarray, levels: int, name: str = "levels") -> np.ndarray:
    """``values`` rounded to the nearest of ``levels`` equally spaced values from their minimum
    to their maximum: exactly ``levels`` distinct values unless a grid point gets no sample
    (sparse tails)."""
    if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) or levels < 2:
        raise CausalInputError(f"{name} must be an integer of at least 2; got {levels!r}")
    low, step = values.min(), (values.max() - values.min()) / (levels - 1)
    return low + step * np.round((values - low) / step)


def simulate(n: int, k: int = 2, *, mechanisms: Sequence[str] | None = None,
             noises: Sequence[str] | None = None, noise_scales: Sequence[float] | None = None,
             offsets: Sequence[float] | None = None, proportions: Sequence[float] | None = None,
             direction: str = X_TO_Y, cause_levels: int | None = None,
             effect_levels: int | None = None, seed: int | np.random.Generator | None = 0
             ) -> SimulatedPair:
    """``n`` samples from ``k`` groups. The cause is standard normal in every group; each
    group's effect is its mechanism (a name of :data:`MECHANISMS`; default: distinct random ones
    of :data:`DEFAULT_MECHANISMS`) plus its offset (default ``1.5 * (g - (k-1)/2)``) plus noise
    of its type (a name of :data:`NOISES`, default random) times its scale (default uniform on
    [0.2, 0.5]). ``proportions`` default to equal; ``direction="y->x"`` swaps the columns and
    ``"random"`` picks either. ``cause_levels`` / ``effect_levels``: round the cause / the
    effect to that many levels (:func:`discretize`; default: continuous)."""
    rng = as_rng(seed)
    if k < 1 or n < k:
        raise CausalInputError(f"simulate needs k >= 1 and n >= k; got n={n}, k={k}")
    mech = _pick(mechanisms, DEFAULT_MECHANISMS, k, "mechanisms", MECHANISMS, rng)
    noise = _pick(noises, list(NOISES), k, "noises", NOISES, rng)
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
    labels = np.sort(rng.choice(k, size=n, p=weights / weights.sum()))
    cause, effect = rng.normal(size=n), np.empty(n)
    for g in range(k):
        mine = labels == g
        effect[mine] = (MECHANISMS[mech[g]](cause[mine]) + shifts[g]
                        + scales[g] * NOISES[noise[g]](rng, int(mine.sum())))
    if cause_levels is not None:
        cause = discretize(cause, cause_levels, "cause_levels")
    if effect_levels is not None:
        effect = discretize(effect, effect_levels, "effect_levels")
    order = rng.permutation(n)
    cause, effect, labels = cause[order], effect[order], labels[order]
    groups = tuple({"mechanism": str(mech[g]), "noise": str(noise[g]),
                    "noise_scale": float(scales[g]), "offset": float(shifts[g])} for g in range(k))
    x, y = (cause, effect) if direction == X_TO_Y else (effect, cause)
    return SimulatedPair(x=x, y=y, direction=direction, labels=labels, groups=groups)
