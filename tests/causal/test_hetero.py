"""The cluster-adjusted direction test: beats ANM on heterogeneous data, equals it on one
cluster."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from edgecompress.causal import anm_test, direction, hetero_test, simulate
from edgecompress.causal.inputs import standardize


def test_hetero_decides_where_anm_cannot():
    """Two groups (tanh and sin mechanisms, offsets -1.5 and +1.5): one regression leaves a
    residual that depends on x in both directions; the clusters explain it."""
    pair = simulate(300, 2, offsets=[-1.5, 1.5], seed=1)
    anm = direction(pair.x, pair.y, "anm", seed=1)
    hetero = direction(pair.x, pair.y, "hetero", seed=1)
    assert anm.direction != "x->y"
    assert hetero.direction == "x->y", str(hetero)
    assert hetero.k == 2 and adjusted_rand_score(pair.labels, hetero.labels) > 0.8
    assert [c["n"] for c in hetero.x_to_y.clusters] == list(np.bincount(hetero.labels))


def _standardized(seed: int):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=150)
    return standardize(x), standardize(x**3 + rng.normal(size=150))


def test_one_cluster_is_the_anm_test():
    x, y = _standardized(0)
    plain = anm_test(x, y, "x->y", regressor="spline")
    for combine in ("weighted", "fisher"):
        one = hetero_test(x, y, "x->y", regressor="spline", max_k=1, combine=combine)
        assert one.k == 1
        assert one.statistic == pytest.approx(plain.statistic)
        assert one.p_value == pytest.approx(plain.p_value, rel=1e-6)


def test_permutation_null_of_the_combined_statistic():
    pair = simulate(200, 2, offsets=[-3, 3], seed=2)
    x, y = standardize(pair.x), standardize(pair.y)
    test = hetero_test(x, y, "x->y", regressor="spline", pvalue="permutation",
                       n_permutations=100)
    assert test.k == 2
    assert 1 / 101 <= test.p_value <= 1 and math.log(test.p_value) == pytest.approx(
        test.log_p_value)
