"""The heterogeneous direction test: the ANM test adjusted by mechanism clusters.

Our reading of Partovi Nia et al. (arXiv 2006.04877; the abstract says the estimated labels
"adjust a commonly used causal direction test statistic"). For one hypothesised direction:

1. cluster the samples by mechanism with k unknown (:func:`.clustering.cluster_mechanisms`,
   on the hypothesised cause and effect);
2. within each cluster j (n_j samples), regress the effect on the cause with the ANM regressor
   and compute ``HSIC_j`` of cause and residual, with its gamma null mean ``m_j`` and variance
   ``v_j`` (:mod:`.hsic`);
3. combine, ``combine=``

   - ``"weighted"`` (the spec's reading): ``T = sum_j w_j HSIC_j`` with ``w_j = n_j / n``;
     clusters are independent under the null, so T has mean ``sum_j w_j m_j`` and variance
     ``sum_j w_j^2 v_j``, and its p-value is that of the gamma law with these moments, as for one
     population; with ``pvalue="permutation"``, T is recomputed with every cluster's residuals
     permuted within the cluster;
   - ``"fisher"`` (default, chosen on realistic simulations: ``DEFAULT_COMBINE``): Fisher's
     combination ``-2 sum_j log p_j`` of the clusters' p-values against chi-squared with 2k
     degrees of freedom.

With one cluster both reduce to the ANM test. Both directions are tested this way and decided
by the rule of :mod:`.result`.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from ..errors import CausalInputError
from .clustering import SPLINE_DOF, cluster_mechanisms
from .hsic import (DEFAULT_RANK, gamma_log_sf, grams, null_moments, permutation_log_p,
                   permutation_statistics)
from .inputs import as_rng
from .regressors import Regressor, residuals
from .result import DirectionTest

COMBINE = ("weighted", "fisher")
#: Chosen on simulations only by ``benchmarks/causal.py select --setting realistic`` (its
#: docstring states the rule, fixed before the run): on simulations copying the pairs' data
#: features (rounding, skew, heavy tails, outliers) fisher/jitter had the highest mean accuracy,
#: 0.745 against weighted/jitter 0.740 over 200 pairs (one pair apart, well within noise; the
#: rule, not the margin, decides), and again with ``--setting discrete`` (fisher/none 0.74).
#: The first selection, on Gaussian causes with at most one variable on 20 levels, had chosen
#: "weighted".
DEFAULT_COMBINE = "fisher"


def hetero_test(cause: np.ndarray, effect: np.ndarray, hypothesis: str, *,
                regressor: str | Regressor = "gp", pvalue: str = "gamma", approx: str = "auto",
                rank: int = DEFAULT_RANK, n_permutations: int = 500,
                combine: str = DEFAULT_COMBINE, max_k: int = 5, min_size: int | None = None, restarts: int = 5,
                cluster_regressor: str | Regressor = "spline", cluster_dof: int = SPLINE_DOF,
                assign: str = "likelihood", seed: int = 0) -> DirectionTest:
    """Test ``hypothesis`` that ``effect = f_j(cause) + noise_j`` within mechanism clusters,
    the noise independent of the cause in each (module docstring). Clustering options are those
    of :func:`.clustering.cluster_mechanisms` (``cluster_regressor``, ``cluster_dof``); the
    others those of :func:`.anm.anm_test`."""
    if combine not in COMBINE:
        raise CausalInputError(f"unknown combine {combine!r}; available: {', '.join(COMBINE)}")
    if pvalue not in ("gamma", "permutation"):
        raise CausalInputError(f"unknown pvalue {pvalue!r}; available: gamma, permutation")
    rng = as_rng(seed)
    clustering = cluster_mechanisms(cause, effect, max_k=max_k, min_size=min_size,
                                    restarts=restarts, regressor=cluster_regressor,
                                    dof=cluster_dof, assign=assign, seed=rng)
    n = len(cause)
    parts = []
    for j in range(clustering.k):
        mine = clustering.labels == j
        resid = residuals(regressor, cause[mine], effect[mine], seed)
        gram_c, gram_r, _ = grams(cause[mine], resid, approx, rank, rng)
        statistic = gram_c.hsic(gram_r)
        mean, var = null_moments(gram_c, gram_r, rng)
        permuted = (permutation_statistics(gram_c, gram_r, n_permutations, rng)
                    if pvalue == "permutation" else None)
        log_p = (gamma_log_sf(statistic, mean, var) if permuted is None
                 else permutation_log_p(statistic, permuted))
        parts.append({"n": int(mine.sum()), "statistic": statistic, "mean": mean, "var": var,
                      "log_p": log_p, "permuted": permuted})
    weights = np.array([p["n"] for p in parts]) / n
    statistic = float(sum(w * p["statistic"] for w, p in zip(weights, parts)))
    if combine == "fisher":
        fisher = -2.0 * sum(p["log_p"] for p in parts)
        log_p = float(stats.chi2.logsf(fisher, 2 * len(parts)))
    elif pvalue == "permutation":
        log_p = permutation_log_p(statistic, sum(w * p["permuted"] for w, p in zip(weights, parts)))
    else:
        log_p = gamma_log_sf(statistic, float(sum(w * p["mean"] for w, p in zip(weights, parts))),
                             float(sum(w**2 * p["var"] for w, p in zip(weights, parts))))
    return DirectionTest(
        hypothesis=hypothesis, statistic=statistic, p_value=math.exp(log_p), log_p_value=log_p,
        k=clustering.k, labels=clustering.labels,
        clusters=tuple({"n": p["n"], "statistic": p["statistic"], "p_value": math.exp(p["log_p"])}
                       for p in parts))
