"""Mechanism clustering with an unknown number of groups: which samples share one additive-noise
mechanism ``effect = f_j(cause) + noise_j``.

This is our reading of the clustering in Partovi Nia et al., "A causal direction test for
heterogeneous populations" (arXiv 2006.04877), whose text says only: k-means-like, unknown k,
labels and k estimated together. The choices below are ours and switchable:

- k-regressions for a given k (k-means in mechanism space): alternately fit one regression per
  cluster and reassign every sample to the cluster that explains it best, ``assign=``
  ``"likelihood"`` (default: highest Gaussian log-likelihood ``log pi_j - log sigma_j -
  r^2 / (2 sigma_j^2)``, so that groups differing only in noise scale separate) or
  ``"residual"`` (smallest squared residual, the plain k-means analogue);
- unknown k as in X-means (Pelleg and Moore, 2000): start at k = 1; try to split every cluster
  in two (``restarts`` initial splits: above/below the cluster's regression, small/large
  residual, random thresholds and random labels; the best by likelihood is kept), keep a split
  when the local BIC of the two children beats the parent's, refine all clusters together,
  and accept the new k only when the global BIC improves; stop at ``max_k``;
- BIC ``-2 log L + p log n`` of the mixture likelihood ``L = prod_i sum_j pi_j N(r_ij; 0,
  sigma_j^2)`` at the fitted regressions (the hard-assignment likelihood over-splits), with
  ``p = k (dof + 1) + k - 1`` (``dof`` parameters per regression, one noise variance each, the
  mixing weights). The noise is modelled as Gaussian: a group with strongly non-Gaussian noise
  (Laplace, uniform) may be split in two;
- no cluster smaller than ``min_size`` (default ``max(20, 5% of n, 5 dof)``): a split leaving a
  smaller child is refused, and a cluster that shrinks below it during refinement is dissolved.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import logsumexp

from ..errors import CausalInputError
from .inputs import MIN_SAMPLES, as_rng
from .regressors import Regressor, make_regressor

ASSIGN = ("likelihood", "residual")
#: Parameters per regression counted by the BIC for the default "spline" regressor (cubic
#: B-splines on 8 knots: 10 basis functions).
SPLINE_DOF = 10


@dataclass(frozen=True)
class Clustering:
    """Cluster ``labels`` (0 .. k-1, one per sample), their number ``k`` and the BIC."""

    labels: np.ndarray
    k: int
    bic: float

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(int(s) for s in np.bincount(self.labels, minlength=self.k))


def default_min_size(n: int, dof: int = SPLINE_DOF) -> int:
    """``max(MIN_SAMPLES, ceil(0.05 n), 5 dof)``: each cluster is tested on its own, so it needs
    enough samples for a test; and a regression with ``dof`` parameters fitted to a few samples
    picked for fitting it well makes a spurious near-noiseless cluster."""
    return max(MIN_SAMPLES, math.ceil(0.05 * n), 5 * dof)


@dataclass
class _Settings:
    regressor: str | Regressor
    assign: str
    min_size: int
    dof: int
    max_iter: int
    seed: int


def _compact(labels: np.ndarray) -> np.ndarray:
    return np.unique(labels, return_inverse=True)[1]


def _fit(cause: np.ndarray, effect: np.ndarray, labels: np.ndarray,
         s: _Settings) -> tuple[np.ndarray, np.ndarray]:
    """Residuals of every sample under every cluster's regression ``(n, k)``, and each
    cluster's noise variance (from its own samples)."""
    k = int(labels.max()) + 1
    resid = np.empty((len(cause), k))
    var = np.empty(k)
    for j in range(k):
        mine = labels == j
        model = make_regressor(s.regressor, s.seed)
        model.fit(cause[mine, None], effect[mine])
        resid[:, j] = effect - np.asarray(model.predict(cause[:, None])).reshape(-1)
        var[j] = max(float(np.mean(resid[mine, j] ** 2)), 1e-8 * float(np.var(effect)) + 1e-300)
    return resid, var


def _log_lik(resid: np.ndarray, var: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per-sample, per-cluster log of ``pi_j N(r; 0, sigma_j^2)``."""
    return np.log(weights) - 0.5 * np.log(2 * np.pi * var) - resid**2 / (2 * var)


def _k_regressions(cause: np.ndarray, effect: np.ndarray, labels: np.ndarray,
                   s: _Settings) -> tuple[np.ndarray, float]:
    """Alternate fits and reassignments from ``labels``; returns the labels and the mixture
    log-likelihood. Clusters below ``min_size`` are dissolved."""
    labels = _compact(labels)
    for _ in range(s.max_iter):
        resid, var = _fit(cause, effect, labels, s)
        weights = np.bincount(labels) / len(labels)
        score = _log_lik(resid, var, weights) if s.assign == "likelihood" else -resid**2
        new = score.argmax(1)
        while True:  # dissolve the smallest cluster while it is too small
            sizes = np.bincount(new, minlength=score.shape[1])
            alive = sizes > 0
            small = np.flatnonzero(alive & (sizes < s.min_size))
            if small.size == 0 or alive.sum() == 1:
                break
            score[:, small[np.argmin(sizes[small])]] = -np.inf
            new = score.argmax(1)
        new = _compact(new)
        if np.array_equal(new, labels):
            break
        labels = new
    resid, var = _fit(cause, effect, labels, s)
    weights = np.bincount(labels) / len(labels)
    return labels, float(logsumexp(_log_lik(resid, var, weights), axis=1).sum())


def _bic(log_lik: float, k: int, n: int, dof: int) -> float:
    return -2.0 * log_lik + (k * (dof + 1) + k - 1) * math.log(n)


def _initial_splits(residual: np.ndarray, restarts: int,
                    rng: np.random.Generator) -> list[np.ndarray]:
    """Two-cluster starting labels: above/below the fit, small/large residual, then random
    thresholds of either and random labels."""
    inits = [residual > np.median(residual), np.abs(residual) > np.median(np.abs(residual))]
    while len(inits) < restarts:
        kind = len(inits) % 3
        if kind == 2:
            inits.append(rng.random(len(residual)) < 0.5)
        else:
            value = residual if kind == 0 else np.abs(residual)
            inits.append(value > np.quantile(value, rng.uniform(0.2, 0.8)))
    return [init.astype(int) for init in inits[:max(restarts, 1)]]


def _best_split(cause: np.ndarray, effect: np.ndarray, restarts: int, s: _Settings,
                rng: np.random.Generator) -> tuple[float, np.ndarray] | None:
    """The BIC gain and child labels of the best split of one cluster, if it improves."""
    n = len(cause)
    parent_labels = np.zeros(n, dtype=int)
    resid, var = _fit(cause, effect, parent_labels, s)
    parent_bic = _bic(float(_log_lik(resid, var, np.ones(1)).sum()), 1, n, s.dof)
    best: tuple[float, np.ndarray] | None = None
    for init in _initial_splits(resid[:, 0], restarts, rng):
        if min(np.bincount(init, minlength=2)) < s.min_size:
            continue
        labels, log_lik = _k_regressions(cause, effect, init, s)
        if labels.max() != 1:
            continue
        gain = parent_bic - _bic(log_lik, 2, n, s.dof)
        if gain > 0 and (best is None or gain > best[0]):
            best = (gain, labels)
    return best


def cluster_mechanisms(cause: Any, effect: Any, *, max_k: int = 5, min_size: int | None = None,
                       restarts: int = 5, regressor: str | Regressor = "spline",
                       dof: int = SPLINE_DOF, assign: str = "likelihood", max_iter: int = 50,
                       seed: int | np.random.Generator | None = 0) -> Clustering:
    """Cluster the samples by mechanism ``effect = f_j(cause) + noise_j`` with k unknown (module
    docstring); ``dof`` is the parameter count the BIC charges per regression (set it when
    giving another ``regressor``). Seeded: random initial splits come from ``seed``."""
    cause, effect = np.asarray(cause, dtype=float), np.asarray(effect, dtype=float)
    n = len(cause)
    min_size = default_min_size(n, dof) if min_size is None else int(min_size)
    if assign not in ASSIGN:
        raise CausalInputError(f"unknown assign {assign!r}; available: {', '.join(ASSIGN)}")
    if max_k < 1 or min_size < 2 or restarts < 1 or dof < 1:
        raise CausalInputError(f"clustering needs max_k >= 1, min_size >= 2, restarts >= 1 and "
                               f"dof >= 1; got {max_k}, {min_size}, {restarts}, {dof}")
    rng = as_rng(seed)
    s = _Settings(regressor, assign, min_size, dof, max_iter, int(rng.integers(2**31)))
    labels, log_lik = _k_regressions(cause, effect, np.zeros(n, dtype=int), s)
    bic = _bic(log_lik, 1, n, dof)
    for _ in range(2 * max_k):  # each round strictly lowers the BIC; the cap is a safeguard
        k = int(labels.max()) + 1
        proposals = []
        for j in range(k):
            mine = np.flatnonzero(labels == j)
            if len(mine) >= 2 * min_size:
                split = _best_split(cause[mine], effect[mine], restarts, s, rng)
                if split is not None:
                    proposals.append((split[0], mine, split[1]))
        if not proposals or k >= max_k:
            break
        candidate = labels.copy()
        for _, mine, children in sorted(proposals, key=lambda p: -p[0])[:max_k - k]:
            candidate[mine[children == 1]] = candidate.max() + 1
        refined, refined_log_lik = _k_regressions(cause, effect, candidate, s)
        refined_bic = _bic(refined_log_lik, int(refined.max()) + 1, n, dof)
        if refined_bic >= bic:
            break
        labels, bic = refined, refined_bic
    return Clustering(labels=labels, k=int(labels.max()) + 1, bic=bic)
