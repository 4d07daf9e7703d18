"""HSIC: the statistic against its textbook formula, calibrated p-values under independence,
power under dependence, permutation vs gamma, low-rank vs exact."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
from scipy import stats

from edgecompress.causal import hsic, median_bandwidth
from edgecompress.errors import CausalInputError, UnknownNameError


def _reference_hsic(x: np.ndarray, y: np.ndarray) -> float:
    """tr(K H L H) / n^2 written out with explicit matrices."""
    n = len(x)
    sx, sy = median_bandwidth(x), median_bandwidth(y)
    K = np.exp(-np.subtract.outer(x, x) ** 2 / (2 * sx**2))
    L = np.exp(-np.subtract.outer(y, y) ** 2 / (2 * sy**2))
    H = np.eye(n) - np.ones((n, n)) / n
    return float(np.trace(K @ H @ L @ H) / n**2)


def test_exact_statistic_is_the_textbook_formula():
    rng = np.random.default_rng(0)
    x = rng.normal(size=60)
    y = np.sin(x) + 0.3 * rng.normal(size=60)
    assert hsic(x, y, approx="exact").statistic == pytest.approx(_reference_hsic(x, y), rel=1e-10)


def test_median_bandwidth_is_the_median_distance_and_survives_ties():
    assert median_bandwidth(np.array([0.0, 1.0, 3.0])) == pytest.approx(2.0)
    ties = np.r_[np.zeros(50), np.ones(10)]  # most distances are zero
    assert median_bandwidth(ties) == pytest.approx(1.0)
    assert median_bandwidth(np.zeros(10)) == 1.0


@pytest.mark.parametrize("pvalue", ["gamma", "permutation"])
def test_p_values_are_uniform_under_independence(pvalue):
    p = np.array([hsic(np.random.default_rng(s).normal(size=100),
                       np.random.default_rng(1000 + s).standard_t(4, size=100),
                       pvalue=pvalue, n_permutations=200, seed=s).p_value for s in range(40)])
    # 40 draws at level 0.05: P(>= 7 rejections) < 0.003 for a calibrated test
    assert (p < 0.05).sum() <= 6
    assert stats.kstest(p, "uniform").pvalue > 0.001


def test_statistic_near_zero_under_independence_and_large_under_dependence():
    rng = np.random.default_rng(1)
    x, noise = rng.normal(size=200), rng.normal(size=200)
    independent = hsic(x, noise)
    dependent = hsic(x, np.sin(2 * x) + 0.3 * noise)
    assert independent.statistic < independent.null_mean + 4 * math.sqrt(independent.null_var)
    assert dependent.statistic > 10 * independent.statistic
    assert dependent.p_value < 1e-6
    assert hsic(x, np.sin(2 * x) + 0.3 * noise, pvalue="permutation",
                n_permutations=200).p_value == pytest.approx(1 / 201)


def test_gamma_p_value_is_close_to_the_permutation_p_value():
    diffs = []
    for s in range(10):
        rng = np.random.default_rng(s)
        x = rng.normal(size=150)
        y = 0.15 * x**2 + rng.normal(size=150)  # weak dependence: p-values spread over (0, 1)
        diffs.append(hsic(x, y, seed=s).p_value
                     - hsic(x, y, pvalue="permutation", n_permutations=1000, seed=s).p_value)
    assert np.mean(np.abs(diffs)) < 0.05 and np.max(np.abs(diffs)) < 0.15


@pytest.mark.parametrize("dependent", [False, True])
def test_low_rank_hsic_is_close_to_exact(dependent):
    rng = np.random.default_rng(2)
    x, noise = rng.normal(size=600), rng.normal(size=600)
    y = np.tanh(2 * x) + 0.5 * noise if dependent else noise
    exact = hsic(x, y, approx="exact")
    nystrom = hsic(x, y, approx="nystrom", rank=200)
    rff = hsic(x, y, approx="rff", rank=1000)
    assert nystrom.approx == "nystrom" and exact.approx == "exact"
    assert nystrom.statistic == pytest.approx(exact.statistic, rel=1e-3)
    assert nystrom.null_mean == pytest.approx(exact.null_mean, rel=1e-3)
    assert nystrom.null_var == pytest.approx(exact.null_var, rel=0.1)  # from sampled pairs
    assert rff.statistic == pytest.approx(exact.statistic, rel=0.1, abs=2 * exact.null_mean)
    if dependent:
        assert nystrom.log_p_value == pytest.approx(exact.log_p_value, rel=0.1)
    else:
        assert abs(nystrom.p_value - exact.p_value) < 0.05


def test_auto_switches_to_low_rank_above_the_threshold(monkeypatch):
    module = sys.modules["edgecompress.causal.hsic"]  # the name hsic is the function
    monkeypatch.setattr(module, "EXACT_MAX_N", 100)
    rng = np.random.default_rng(3)
    assert hsic(rng.normal(size=100), rng.normal(size=100)).approx == "exact"
    assert hsic(rng.normal(size=101), rng.normal(size=101)).approx == "nystrom"


def test_seeded_and_validated():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=300), rng.normal(size=300)
    assert hsic(x, y, approx="rff", seed=7) == hsic(x, y, approx="rff", seed=7)
    with pytest.raises(UnknownNameError, match="nystrom"):
        hsic(x, y, approx="svd")
    with pytest.raises(CausalInputError, match="pvalue"):
        hsic(x, y, pvalue="bootstrap")
    with pytest.raises(CausalInputError, match="different lengths"):
        hsic(x, y[:-1])
