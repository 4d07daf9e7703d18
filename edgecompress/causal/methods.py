"""The direction tests by name, and the entry point :func:`direction`.

A method tests one hypothesised direction: ``fn(cause, effect, hypothesis, **options) ->``
:class:`~.result.DirectionTest` on standardized 1-D arrays. :func:`direction` checks the data,
handles tied values (:mod:`.ties`), standardizes both variables, runs the method for ``x -> y`` and for ``y -> x`` with the same
options and seed, and decides by the rule of :mod:`.result`.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
from threadpoolctl import threadpool_limits

from ..registry import Registry, normalize_name
from .anm import anm_test
from .hetero import hetero_test
from .inputs import MIN_SAMPLES, check_pair, standardize
from .ties import DEFAULT_TIES, break_ties, check_ties
from .result import (X_TO_Y, Y_TO_X, DirectionResult, DirectionTest, check_level, check_rule,
                     decide)

Method = Callable[..., DirectionTest]
_METHODS: Registry[Method] = Registry("causal method")
_METHODS.register("anm", anm_test)
_METHODS.register("hetero", hetero_test)
register_method = _METHODS.register


def available() -> list[str]:
    """Names accepted as ``method=``."""
    return _METHODS.available()


def direction(x: Any, y: Any, method: str = "anm", *, level: float = 0.05, rule: str = "level",
              seed: int = 0, min_samples: int = MIN_SAMPLES, ties: str = DEFAULT_TIES,
              threads: int | None = 1, **options: Any) -> DirectionResult:
    """Which of ``x -> y`` and ``y -> x`` the data support, or ``"undecided"``.

    ``x``, ``y``: 1-D samples of equal length (at least ``min_samples``, finite, not constant).
    ``method``: ``"anm"`` (additive noise model, :func:`.anm.anm_test`) or ``"hetero"`` (the same
    adjusted by mechanism clusters with unknown k, :func:`.hetero.hetero_test`). ``level`` and
    ``rule`` ("level" or "forced") decide (:mod:`.result`). ``ties``: "none" or "jitter", how
    a variable with few distinct values is handled before standardizing (:mod:`.ties`; the same
    seeded jitter for both directions). ``options`` go to the method:
    ``regressor`` ("gp", "kernel-ridge", "gradient-boosting", "spline" or an estimator),
    ``pvalue`` ("gamma" or "permutation"), ``approx`` ("auto", "exact", "nystrom", "rff"),
    ``rank``, ``n_permutations``; for "hetero" also ``combine``, ``max_k``, ``min_size``,
    ``restarts``, ``cluster_regressor``, ``cluster_dof`` and ``assign``.

    ``threads``: BLAS threads during the test (None: leave the setting alone). The work is many
    small matrix products and factorizations, where BLAS threading costs more than it gains
    (on 2 busy cores, 1 thread was 3-6x faster than 2); run several pairs in parallel
    processes instead.
    """
    test = _METHODS.get(method)
    level, rule, ties = check_level(level), check_rule(rule), check_ties(ties)
    xs, ys = check_pair(x, y, min_samples)
    xs, ys = (standardize(break_ties(v, ties, np.random.default_rng([seed, column])))
              for column, v in enumerate((xs, ys)))
    start = time.perf_counter()
    with threadpool_limits(limits=threads, user_api="blas"):
        x_to_y = test(xs, ys, X_TO_Y, seed=seed, **options)
        y_to_x = test(ys, xs, Y_TO_X, seed=seed, **options)
    return DirectionResult(direction=decide(x_to_y, y_to_x, level, rule),
                           method=normalize_name(method),
                           level=level, rule=rule, n=len(xs), x_to_y=x_to_y, y_to_x=y_to_x,
                           options={"seed": seed, "ties": ties, **options},
                           seconds=time.perf_counter() - start)
