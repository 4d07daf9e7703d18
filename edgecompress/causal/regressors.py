"""Nonparametric regressors of one variable on another, selectable by name or given as any
object with scikit-learn's ``fit(X, y)`` / ``predict(X)`` (``X`` of shape ``(n, 1)``).

- ``"gp"``: Gaussian-process regression, the ANM default (Hoyer et al. 2008). Kernel
  ``c * RBF(l) + WhiteKernel(s2)``; the hyperparameters maximise the marginal likelihood on at
  most ``fit_size`` points; the posterior mean uses every point through the subset-of-regressors
  form with at most ``n_inducing`` inducing points (exactly the GP posterior when
  ``n <= n_inducing``), so the cost is O(n m^2) instead of O(n^3).
- ``"kernel-ridge"``: Gaussian-kernel ridge regression, bandwidth by the median heuristic, ridge
  penalty by leave-one-out over a grid, on at most ``n_components`` Nystrom components (exact
  kernel ridge when ``n <= n_components``).
- ``"gradient-boosting"``: gradient-boosted trees of depth 3 with early stopping (single
  threaded; its piecewise-constant fit leaves some dependence in the residual, so it needs more
  samples than the smooth regressors).
- ``"spline"``: cubic B-splines on ``n_knots`` uniform knots (constant beyond the data), ridge
  penalty by generalized cross-validation; cheap (plain numpy, O(n) per fit), the default
  inside mechanism clustering where fits are repeated many times.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Protocol

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel
from sklearn.kernel_approximation import Nystroem
from sklearn.linear_model import Ridge, RidgeCV
from sklearn.pipeline import make_pipeline
from scipy.interpolate import BSpline

from ..errors import CausalInputError
from ..registry import Registry
from .hsic import median_bandwidth
from .inputs import as_rng

RIDGE_ALPHAS = tuple(np.logspace(-4, 2, 13))


class Regressor(Protocol):
    """What the tests need of a regressor (scikit-learn's estimator interface)."""

    def fit(self, X: np.ndarray, y: np.ndarray) -> Any: ...

    def predict(self, X: np.ndarray) -> np.ndarray: ...


class GPRegressor(RegressorMixin, BaseEstimator):
    """Gaussian-process regression with fitted hyperparameters, cheap for large n (module
    docstring: hyperparameters on ``fit_size`` points, subset-of-regressors posterior mean)."""

    def __init__(self, fit_size: int = 250, n_inducing: int = 300, random_state: int = 0):
        self.fit_size = fit_size
        self.n_inducing = n_inducing
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: np.ndarray) -> "GPRegressor":
        X, y = np.asarray(X, dtype=float), np.asarray(y, dtype=float)
        rng = as_rng(self.random_state)
        self.y_mean_, self.y_std_ = float(y.mean()), float(y.std()) or 1.0
        z = (y - self.y_mean_) / self.y_std_
        subset = (rng.choice(len(X), self.fit_size, replace=False) if len(X) > self.fit_size
                  else slice(None))
        kernel = (ConstantKernel(1.0, (1e-3, 1e3)) * RBF(1.0, (1e-2, 1e2))
                  + WhiteKernel(0.1, (1e-6, 1e1)))
        gp = GaussianProcessRegressor(kernel, random_state=self.random_state)
        with warnings.catch_warnings():  # a bound reached (e.g. no noise) is a valid fit here
            warnings.simplefilter("ignore", ConvergenceWarning)
            gp.fit(X[subset], z[subset])
        self.kernel_ = gp.kernel_
        signal, noise = self.kernel_.k1.k1.constant_value, self.kernel_.k2.noise_level
        length = float(self.kernel_.k1.k2.length_scale)
        self.model_ = make_pipeline(
            Nystroem(gamma=0.5 / length**2, n_components=min(self.n_inducing, len(X)),
                     random_state=self.random_state),
            Ridge(alpha=noise / signal, fit_intercept=False)).fit(X, z)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.model_.predict(np.asarray(X, dtype=float)) * self.y_std_ + self.y_mean_


class KernelRidgeRegressor(RegressorMixin, BaseEstimator):
    """Gaussian-kernel ridge regression: median-heuristic bandwidth, leave-one-out penalty."""

    def __init__(self, n_components: int = 500, alphas: tuple[float, ...] = RIDGE_ALPHAS,
                 random_state: int = 0):
        self.n_components = n_components
        self.alphas = alphas
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: np.ndarray) -> "KernelRidgeRegressor":
        X = np.asarray(X, dtype=float)
        bandwidth = median_bandwidth(X, self.random_state)
        self.model_ = make_pipeline(
            Nystroem(gamma=0.5 / bandwidth**2, n_components=min(self.n_components, len(X)),
                     random_state=self.random_state),
            RidgeCV(alphas=self.alphas)).fit(X, y)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.model_.predict(np.asarray(X, dtype=float))


class SplineRegressor(RegressorMixin, BaseEstimator):
    """Penalized cubic regression splines; ``n_knots + 2`` basis functions; ridge penalty by
    generalized cross-validation over ``alphas``."""

    degree = 3

    def __init__(self, n_knots: int = 8, alphas: tuple[float, ...] = RIDGE_ALPHAS):
        self.n_knots = n_knots
        self.alphas = alphas

    def _basis(self, x: np.ndarray) -> np.ndarray:
        low, high = self.knots_[0], self.knots_[-1]
        return BSpline.design_matrix(np.clip(x, low, high), self.knots_, self.degree).toarray()

    def fit(self, X: np.ndarray, y: np.ndarray) -> "SplineRegressor":
        x, y = np.asarray(X, dtype=float).reshape(-1), np.asarray(y, dtype=float)
        low, high = float(x.min()), float(x.max())
        if high <= low:  # a single cause value: the best constant
            high = low + 1.0
        inner = np.linspace(low, high, self.n_knots)
        self.knots_ = np.r_[[low] * self.degree, inner, [high] * self.degree]
        u, sv, vt = np.linalg.svd(self._basis(x), full_matrices=False)
        uy = u.T @ y
        outside = float(y @ y - uy @ uy)  # the part of y no spline reaches
        alphas = np.asarray(self.alphas, dtype=float)[:, None]
        shrink = alphas / (sv**2 + alphas)  # (alphas, basis)
        rss = outside + ((shrink * uy) ** 2).sum(1)
        dof = (sv**2 / (sv**2 + alphas)).sum(1)
        best = int(np.argmin(rss / np.maximum(len(y) - dof, 1e-9) ** 2))
        self.coef_ = vt.T @ (sv / (sv**2 + alphas[best]) * uy)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self._basis(np.asarray(X, dtype=float).reshape(-1)) @ self.coef_


def _gp(seed: int) -> Regressor:
    return GPRegressor(random_state=seed)


def _kernel_ridge(seed: int) -> Regressor:
    return KernelRidgeRegressor(random_state=seed)


def _gradient_boosting(seed: int) -> Regressor:
    return GradientBoostingRegressor(n_estimators=300, learning_rate=0.05, max_depth=3,
                                     subsample=0.8, n_iter_no_change=10, random_state=seed)


def _spline(seed: int) -> Regressor:
    return SplineRegressor()


_REGRESSORS: Registry[Callable[[int], Regressor]] = Registry("regressor")
_REGRESSORS.register("gp", _gp)
_REGRESSORS.register("kernel-ridge", _kernel_ridge)
_REGRESSORS.register("gradient-boosting", _gradient_boosting)
_REGRESSORS.register("spline", _spline)


def available() -> list[str]:
    """Names accepted as ``regressor=``."""
    return _REGRESSORS.available()


def make_regressor(spec: str | Regressor, seed: int = 0) -> Regressor:
    """A fresh, unfitted regressor: a registered name (built with ``seed``), a clone of a
    scikit-learn estimator, or any other object with ``fit`` and ``predict`` (used as is)."""
    if isinstance(spec, str):
        return _REGRESSORS.get(spec)(seed)
    if isinstance(spec, BaseEstimator):
        return clone(spec)
    if callable(getattr(spec, "fit", None)) and callable(getattr(spec, "predict", None)):
        return spec
    raise CausalInputError(f"regressor must be a name ({', '.join(available())}) or an object "
                           f"with fit(X, y) and predict(X); got {type(spec).__name__}")


def residuals(regressor: str | Regressor, cause: np.ndarray, effect: np.ndarray,
              seed: int = 0) -> np.ndarray:
    """``effect - f(cause)`` for ``f`` the regressor fitted on these samples (1-D arrays)."""
    X = cause[:, None]
    model = make_regressor(regressor, seed)
    model.fit(X, effect)
    return effect - np.asarray(model.predict(X), dtype=float).reshape(-1)
