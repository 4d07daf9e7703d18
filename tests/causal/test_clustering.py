"""Mechanism clustering with unknown k recovers k and the groups of well separated mixtures."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from edgecompress.causal import cluster_mechanisms, simulate
from edgecompress.causal.inputs import standardize
from edgecompress.errors import CausalInputError


def _cluster(pair, **options):
    return cluster_mechanisms(standardize(pair.x), standardize(pair.y), **options)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_two_mechanisms(seed):
    pair = simulate(400, 2, offsets=[-3, 3], noises=["gaussian"] * 2, seed=seed)
    found = _cluster(pair, seed=seed)
    assert found.k == 2
    assert adjusted_rand_score(pair.labels, found.labels) > 0.9


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_three_mechanisms(seed):
    pair = simulate(600, 3, offsets=[-4, 0, 4], noises=["gaussian"] * 3, seed=seed)
    found = _cluster(pair, seed=seed)
    assert found.k == 3
    assert adjusted_rand_score(pair.labels, found.labels) > 0.9


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_one_mechanism_stays_one_cluster(seed):
    pair = simulate(300, 1, noises=["gaussian"], seed=seed)
    assert _cluster(pair, seed=seed).k == 1


def test_residual_assignment_also_separates():
    pair = simulate(400, 2, offsets=[-3, 3], noises=["gaussian"] * 2, seed=1)
    found = _cluster(pair, assign="residual", seed=1)
    assert found.k == 2 and adjusted_rand_score(pair.labels, found.labels) > 0.9


def test_cap_minimum_size_and_seed():
    pair = simulate(600, 3, offsets=[-4, 0, 4], noises=["gaussian"] * 3, seed=1)
    assert _cluster(pair, max_k=2, seed=0).k == 2
    found = _cluster(pair, min_size=150, seed=0)
    assert min(found.sizes) >= 150
    again = _cluster(pair, min_size=150, seed=0)
    np.testing.assert_array_equal(found.labels, again.labels)
    with pytest.raises(CausalInputError, match="unknown assign 'soft'"):
        _cluster(pair, assign="soft")
    with pytest.raises(CausalInputError, match="max_k >= 1"):
        _cluster(pair, max_k=0)
