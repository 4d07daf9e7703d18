"""The additive-noise-model test of one hypothesised direction (Hoyer et al., "Nonlinear causal
discovery with additive noise models", NIPS 2008; Mooij et al., JMLR 2016): regress the effect
on the cause, and test the residual against the cause with HSIC. Under "cause -> effect" with
additive noise independent of the cause, the residual is independent of the cause; in the wrong
direction it generally is not."""

from __future__ import annotations

import numpy as np

from .hsic import DEFAULT_RANK, hsic
from .regressors import Regressor, residuals
from .result import DirectionTest


def anm_test(cause: np.ndarray, effect: np.ndarray, hypothesis: str, *,
             regressor: str | Regressor = "gp", pvalue: str = "gamma", approx: str = "auto",
             rank: int = DEFAULT_RANK, n_permutations: int = 500, seed: int = 0) -> DirectionTest:
    """Test ``hypothesis`` ("x->y" or "y->x", a label) that ``effect = f(cause) + noise`` with the
    noise independent of ``cause`` (standardized 1-D arrays); options as in :func:`.hsic.hsic`."""
    residual = residuals(regressor, cause, effect, seed)
    test = hsic(cause, residual, pvalue=pvalue, approx=approx, rank=rank,
                n_permutations=n_permutations, seed=seed)
    return DirectionTest(hypothesis=hypothesis, statistic=test.statistic, p_value=test.p_value,
                         log_p_value=test.log_p_value, k=1,
                         labels=np.zeros(len(cause), dtype=int),
                         clusters=({"n": len(cause), "statistic": test.statistic,
                                    "p_value": test.p_value},))
