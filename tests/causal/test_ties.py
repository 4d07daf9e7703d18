"""ties="jitter": variables with few distinct values spread within their cells, seeded and
order-preserving; other variables untouched."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from edgecompress.causal import direction, simulate
from edgecompress.causal.ties import TIES_FRACTION, break_ties, is_discretized, jitter
from edgecompress.errors import CausalInputError


def _rounded(n: int = 400, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 25, size=n).astype(float)  # every level


def test_only_variables_with_few_distinct_values_change():
    continuous = np.random.default_rng(0).normal(size=400)
    assert break_ties(continuous, "jitter") is continuous
    lightly_tied = np.concatenate([continuous[:300], continuous[:100]])  # 300 of 400 distinct
    assert not is_discretized(lightly_tied) and 300 >= TIES_FRACTION * 400
    assert break_ties(lightly_tied, "jitter") is lightly_tied
    rounded = _rounded()
    assert is_discretized(rounded)
    moved = break_ties(rounded, "jitter")
    assert len(np.unique(moved)) == len(rounded)
    assert break_ties(rounded, "none") is rounded


def test_jitter_is_seeded():
    rounded = _rounded()
    np.testing.assert_array_equal(jitter(rounded, 3), jitter(rounded, 3))
    assert not np.array_equal(jitter(rounded, 3), jitter(rounded, 4))


def test_jitter_stays_in_its_cell_and_keeps_the_order():
    rounded = _rounded()
    moved = jitter(rounded, 0)
    assert np.abs(moved - rounded).max() <= 0.5  # one grid step of 1, centred on the value
    low, high = rounded[:, None] < rounded[None, :], moved[:, None] < moved[None, :]
    assert (high[low]).all()  # below before, below after
    # a strictly increasing map (unequal gaps) gets the same ranks from the same seed
    warped = jitter(np.exp(rounded / 3), 0)
    np.testing.assert_array_equal(stats.rankdata(warped), stats.rankdata(moved))


def test_jitter_in_direction():
    pair = simulate(200, 1, mechanisms=["cubic"], noises=["uniform"], seed=2)
    plain = direction(pair.x, pair.y, regressor="spline")
    same = direction(pair.x, pair.y, regressor="spline", ties="jitter")  # nothing is tied
    assert same.x_to_y.p_value == plain.x_to_y.p_value and same.options["ties"] == "jitter"
    tied = simulate(200, 1, mechanisms=["cubic"], noises=["uniform"], effect_levels=12, seed=2)
    runs = [direction(tied.x, tied.y, regressor="spline", ties=t) for t in ("jitter", "jitter",
                                                                              "none")]
    assert runs[0].x_to_y.p_value == runs[1].x_to_y.p_value != runs[2].x_to_y.p_value


def test_bad_ties():
    x = np.random.default_rng(0).normal(size=50)
    with pytest.raises(CausalInputError, match="unknown ties 'rank'; available: none, jitter"):
        direction(x, x**3, ties="rank")
    with pytest.raises(CausalInputError, match="at least two distinct values"):
        jitter(np.ones(10))
