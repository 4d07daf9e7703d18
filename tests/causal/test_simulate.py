"""The heterogeneous additive-noise simulator."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

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


@pytest.mark.parametrize("cause, skewed, heavy, light", [
    ("gaussian", False, False, False), ("uniform", False, False, True),
    ("skewed", True, True, False), ("heavy-tailed", False, True, False),
    ("bimodal", False, False, True)])
def test_cause_distributions(cause, skewed, heavy, light):
    x = simulate(20000, 1, cause=cause, seed=3).x
    assert abs(x.mean()) < 0.05 and abs(x.std() - 1) < 0.05
    assert (stats.skew(x) > 1) == skewed
    assert (stats.kurtosis(x) > 2) == heavy and (stats.kurtosis(x) < -0.5) == light


def test_new_mechanisms_and_noise_are_usable():
    for name in ("abs", "threshold", "log"):
        pair = simulate(500, 1, mechanisms=[name], noises=["student-t"], noise_scales=[0.1],
                        offsets=[0], seed=0)
        noise = pair.y - MECHANISMS[name](pair.x)
        assert abs(noise.std() - 0.1) < 0.03
    flat = simulate(500, 1, mechanisms=["threshold"], noise_scales=[0.0], offsets=[0], seed=0)
    assert np.all(flat.y[flat.x < 0] == -0.5)  # flat below 0: not invertible


def test_defaults_do_not_draw_the_new_options():
    """The random noise pool is unchanged, so default data are what they were."""
    for seed in range(10):
        assert all(g["noise"] in ("gaussian", "uniform", "laplace")
                   for g in simulate(60, 3, seed=seed).groups)


@pytest.mark.parametrize("share", [0.01, 0.1, 0.3])
def test_outliers_are_the_requested_share_of_gross_errors(share):
    clean = simulate(1000, 2, seed=5)
    dirty = simulate(1000, 2, seed=5, effect_outliers=share)
    np.testing.assert_array_equal(dirty.x, clean.x)
    moved = dirty.y != clean.y
    assert moved.sum() == round(share * 1000)
    shift = np.abs(dirty.y - clean.y)[moved] / clean.y.std()
    assert shift.min() >= 4 - 1e-9 and shift.max() <= 8 + 1e-9
    cause = simulate(1000, 2, seed=5, cause_outliers=share)
    assert (cause.x != clean.x).sum() == round(share * 1000)
    np.testing.assert_array_equal(cause.y, clean.y)  # the effect of the true cause


@pytest.mark.parametrize("resolution", [0.05, 0.5, 1.0])
def test_rounding_to_a_resolution(resolution):
    clean = simulate(2000, 1, seed=2)
    pair = simulate(2000, 1, seed=2, cause_resolution=resolution, effect_resolution=resolution)
    for rounded, raw in ((pair.x, clean.x), (pair.y, clean.y)):
        np.testing.assert_allclose(rounded / resolution, np.round(rounded / resolution),
                                   atol=1e-9)
        assert np.abs(rounded - raw).max() <= resolution / 2 + 1e-12
    assert len(np.unique(pair.x)) < len(np.unique(simulate(
        2000, 1, seed=2, cause_resolution=resolution / 2).x))


@pytest.mark.parametrize("rounding", [{"cause_resolution": 0.4}, {"cause_levels": 6}])
def test_a_discrete_cause_is_what_the_mechanisms_act_on(rounding):
    """With ``discrete_cause`` the effect is the mechanism of the recorded (rounded) cause plus
    the same noise; without it, of the unrounded cause."""
    options = dict(mechanisms=["sin", "exp"], noises=["uniform", "laplace"],
                   noise_scales=[0.2, 0.3], offsets=[0, 3], seed=4, **rounding)
    clean = simulate(800, 2, seed=4, mechanisms=["sin", "exp"], noises=["uniform", "laplace"],
                     noise_scales=[0.2, 0.3], offsets=[0, 3])
    coarse = simulate(800, 2, **options)
    discrete = simulate(800, 2, discrete_cause=True, **options)
    np.testing.assert_array_equal(discrete.x, coarse.x)  # the same recorded cause
    np.testing.assert_array_equal(coarse.y, clean.y)
    for g, (name, offset, scale) in enumerate([("sin", 0, 0.2), ("exp", 3, 0.3)]):
        mine = discrete.labels == g
        noise = clean.y[mine] - MECHANISMS[name](clean.x[mine]) - offset
        np.testing.assert_allclose(discrete.y[mine], MECHANISMS[name](discrete.x[mine]) + offset
                                   + noise, atol=1e-12)
    assert not np.allclose(discrete.y, coarse.y)


def test_a_discrete_causes_outliers_stay_on_its_grid():
    pair = simulate(1000, 2, seed=3, cause_levels=8, cause_outliers=0.1, discrete_cause=True,
                    mechanisms=["linear", "tanh"], noise_scales=[0.0, 0.0])
    plain = simulate(1000, 2, seed=3, cause_levels=8, discrete_cause=True,
                     mechanisms=["linear", "tanh"], noise_scales=[0.0, 0.0])
    levels = np.unique(plain.x)
    step = levels[1] - levels[0]
    assert len(levels) == 8 and len(np.unique(pair.x)) > 8  # gross errors add new values
    offsets = (pair.x - levels[0]) / step
    np.testing.assert_allclose(offsets, np.round(offsets), atol=1e-9)
    assert np.mean(pair.x != plain.x) == pytest.approx(0.1, abs=0.01)


def test_outliers_are_rounded_too():
    pair = simulate(500, 1, seed=1, effect_outliers=0.1, effect_levels=10)
    assert len(np.unique(pair.y)) <= 10


@pytest.mark.parametrize("options, message", [
    ({"cause": "cauchy"}, "unknown cause 'cauchy'; available: gaussian"),
    ({"cause_resolution": 0}, "cause_resolution must be a positive number; got 0"),
    ({"effect_resolution": -1.0}, "effect_resolution must be a positive number"),
    ({"effect_resolution": "fine"}, "effect_resolution must be a positive number"),
    ({"cause_outliers": 0.5}, r"cause_outliers must be a share in \[0, 0.5\); got 0.5"),
    ({"effect_outliers": -0.1}, "effect_outliers must be a share"),
    ({"effect_outliers": True}, "effect_outliers must be a share"),
    ({"cause_levels": 10, "cause_resolution": 0.1},
     "cause_levels and cause_resolution are alternatives"),
    ({"discrete_cause": True}, "discrete_cause needs cause_levels or cause_resolution"),
])
def test_bad_recording_options(options, message):
    with pytest.raises(CausalInputError, match=message):
        simulate(100, 1, **options)
