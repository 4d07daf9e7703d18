"""The ANM direction test on textbook nonlinear additive-noise pairs, with each regressor."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.neighbors import KNeighborsRegressor

from edgecompress.causal import anm_test, direction, make_regressor
from edgecompress.causal.regressors import GPRegressor, SplineRegressor, available


def _cubic(seed: int, n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    return x, x**3 + rng.normal(size=n)


def _tanh_uniform(seed: int, n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    return x, np.tanh(x) + rng.uniform(-0.5, 0.5, size=n)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("make", [_cubic, _tanh_uniform])
def test_default_anm_finds_the_cause(make, seed):
    x, y = make(seed)
    forward = direction(x, y, seed=seed)
    assert forward.direction == "x->y", str(forward)
    assert forward.x_to_y.p_value >= 0.05 > forward.y_to_x.p_value
    assert direction(y, x, seed=seed).direction == "y->x"  # the same pair, columns swapped


@pytest.mark.parametrize("regressor", ["gp", "kernel-ridge", "spline",
                                       KNeighborsRegressor(n_neighbors=15)])
def test_regressors_by_name_or_object(regressor):
    x, y = _cubic(0, n=300)
    assert direction(x, y, regressor=regressor, rule="forced").direction == "x->y"


def test_gradient_boosting_runs():
    x, y = _cubic(0, n=300)
    result = direction(x, y, regressor="gradient-boosting")
    assert result.direction in ("x->y", "y->x", "undecided")
    assert 0 < result.x_to_y.p_value <= 1


def test_regressors_fit_the_mechanism():
    rng = np.random.default_rng(5)
    x = rng.uniform(-2, 2, size=(400, 1))
    f = np.sin(2 * x[:, 0])
    y = f + 0.2 * rng.normal(size=400)
    for name in available():
        fitted = make_regressor(name).fit(x, y).predict(x)
        assert np.sqrt(np.mean((fitted - f) ** 2)) < 0.15, name


def test_gp_low_rank_path_matches_exact_posterior_on_small_data():
    """With n <= n_inducing the subset-of-regressors mean is the exact GP posterior mean."""
    from sklearn.gaussian_process import GaussianProcessRegressor

    rng = np.random.default_rng(6)
    x = rng.normal(size=(150, 1))
    y = np.tanh(2 * x[:, 0]) + 0.2 * rng.normal(size=150)
    gp = GPRegressor(n_inducing=500).fit(x, y)
    exact = GaussianProcessRegressor(gp.kernel_, optimizer=None, normalize_y=True).fit(x, y)
    np.testing.assert_allclose(gp.predict(x), exact.predict(x), atol=2e-3)


def test_spline_extrapolates_constant():
    x = np.linspace(-1, 1, 50)[:, None]
    model = SplineRegressor().fit(x, x[:, 0] ** 2)
    assert model.predict(np.array([[5.0]]))[0] == pytest.approx(model.predict(np.array([[1.0]]))[0])


def test_anm_test_of_one_direction_reports_one_cluster():
    x, y = _cubic(3)
    test = anm_test((x - x.mean()) / x.std(), (y - y.mean()) / y.std(), "x->y", regressor="spline")
    assert test.k == 1 and (test.labels == 0).all() and test.clusters[0]["n"] == 200
