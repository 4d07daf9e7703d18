"""The heterogeneous additive-noise simulator."""

from __future__ import annotations

import numpy as np
import pytest

from edgecompress.causal import simulate
from edgecompress.causal.simulate import MECHANISMS
from edgecompress.errors import CausalInputError


def test_groups_follow_their_mechanisms():
    pair = simulate(3000, 2, mechanisms=["sin", "cubic"], noises=["uniform", "laplace"],
                    noise_scales=[0.1, 0.3], offsets=[0, 5], seed=0)
    assert pair.direction == "x->y" and pair.k == 2 and set(pair.labels) == {0, 1}
    for g, (name, scale, offset) in enumerate([("sin", 0.1, 0), ("cubic", 0.3, 5)]):
        mine = pair.labels == g
        noise = pair.y[mine] - MECHANISMS[name](pair.x[mine]) - offset
        assert abs(noise.std() - scale) < 0.02 * (1 + 10 * scale)
    assert np.abs(pair.y[pair.labels == 0] - MECHANISMS["sin"](pair.x[pair.labels == 0])).max() \
        <= 0.1 * np.sqrt(3) + 1e-9  # uniform noise is bounded


def test_seeded_and_reversible():
    a, b = simulate(100, 3, seed=4), simulate(100, 3, seed=4)
    np.testing.assert_array_equal(a.y, b.y)
    assert a.groups == b.groups
    swapped = simulate(100, 3, seed=4, direction="y->x")
    assert swapped.direction == "y->x"
    np.testing.assert_array_equal(swapped.x, a.y)
    assert {simulate(50, 1, seed=s, direction="random").direction for s in range(20)} == \
        {"x->y", "y->x"}


def test_bad_arguments():
    with pytest.raises(CausalInputError, match="mechanisms: need 2 names"):
        simulate(100, 2, mechanisms=["sin"])
    with pytest.raises(CausalInputError, match="direction must be"):
        simulate(100, 2, direction="up")


@pytest.mark.parametrize("levels", [2, 7, 30])
def test_discretized_variables_have_the_requested_levels(levels):
    pair = simulate(2000, 2, cause_levels=levels, seed=1)
    assert len(np.unique(pair.x)) == levels
    assert len(np.unique(pair.y)) == 2000  # the effect stays continuous
    steps = np.diff(np.unique(pair.x))
    np.testing.assert_allclose(steps, steps[0])  # an equally spaced grid
    continuous = simulate(2000, 2, seed=1)  # the same draws, rounded
    assert np.abs(pair.x - continuous.x).max() <= steps[0] / 2 + 1e-12
    np.testing.assert_array_equal(pair.y, continuous.y)
    effect = simulate(2000, 2, effect_levels=levels, direction="y->x", seed=1)
    assert len(np.unique(effect.x)) == levels and len(np.unique(effect.y)) == 2000


@pytest.mark.parametrize("levels", [1, 0, 2.5, "ten", True])
def test_bad_levels(levels):
    with pytest.raises(CausalInputError, match="cause_levels must be an integer of at least 2"):
        simulate(100, 1, cause_levels=levels)
    with pytest.raises(CausalInputError, match="effect_levels must be an integer of at least 2"):
        simulate(100, 1, effect_levels=levels)
