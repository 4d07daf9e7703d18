"""Baselines of the cause-effect pairs benchmark, from maintained packages: thin adapters that
turn each package's answer into "x->y" / "y->x". Benchmark baselines, not library methods:
edgecompress.causal never imports this module, nor the packages it wraps.

- ``causal-learn ANM``: ``causallearn.search.FCMBased.ANM.ANM`` (GP regression with fitted
  hyperparameters, KCI p-values); the direction with the higher p-value;
- ``causal-learn LiNGAM``: ``causallearn.search.FCMBased.lingam.DirectLiNGAM``; the first variable
  of its causal order is the cause (the linear non-Gaussian model);
- ``cdt IGCI``, ``cdt RECI``: ``cdt.causality.pairwise`` with the package defaults (IGCI: entropy
  estimator, Gaussian reference measure; RECI: degree-3 polynomial regression on min-max scaled
  data); a positive score means x -> y.

Every baseline gets the same standardized samples as our tests (zero mean, unit variance), one
BLAS thread. The packages are the ``baselines`` extra: ``pip install "edgecompress[baselines]"``.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Callable

import numpy as np

from edgecompress.errors import EdgecompressError

EXTRA = 'pip install "edgecompress[baselines]"'
Decide = Callable[[np.ndarray, np.ndarray], str]


class BaselineError(EdgecompressError, ValueError):
    """An unknown baseline, or one whose package is not installed."""


def _import(package: str, module: str):
    """``module`` of ``package``, or :class:`BaselineError` naming the pip extra."""
    try:
        with warnings.catch_warnings():  # cdt warns at import that no GPU was found
            warnings.simplefilter("ignore")
            return importlib.import_module(module)
    except ImportError as exc:
        raise BaselineError(f"the baseline needs the package {package!r}, which cannot be "
                                   f"imported ({exc}): {EXTRA}, or leave it out with "
                                   "--baselines") from None


def _causallearn_anm(x: np.ndarray, y: np.ndarray) -> str:
    anm = _import("causal-learn", "causallearn.search.FCMBased.ANM.ANM").ANM()
    p_forward, p_backward = anm.cause_or_effect(x[:, None], y[:, None])
    return "x->y" if p_forward > p_backward else "y->x"


def _causallearn_lingam(x: np.ndarray, y: np.ndarray) -> str:
    lingam = _import("causal-learn", "causallearn.search.FCMBased.lingam")
    model = lingam.DirectLiNGAM()
    model.fit(np.c_[x, y])
    return "x->y" if list(model.causal_order_)[0] == 0 else "y->x"


def _cdt(name: str) -> Decide:
    def decide(x: np.ndarray, y: np.ndarray) -> str:
        score = getattr(_import("cdt", "cdt.causality.pairwise"), name)().predict_proba((x, y))
        return "x->y" if score > 0 else "y->x"

    decide.__name__ = f"_cdt_{name.lower()}"
    return decide


#: name -> (the pip package, decision function on standardized 1-D samples)
BASELINES: dict[str, tuple[str, Decide]] = {
    "causal-learn ANM": ("causal-learn", _causallearn_anm),
    "causal-learn LiNGAM": ("causal-learn", _causallearn_lingam),
    "cdt IGCI": ("cdt", _cdt("IGCI")),
    "cdt RECI": ("cdt", _cdt("RECI")),
}
_MODULES = {"causal-learn": "causallearn", "cdt": "cdt.causality.pairwise"}


def select(names: str) -> list[str]:
    """The baselines a ``--baselines`` value names ("all", "none" or a comma list), after
    checking that their packages import; unknown names and missing packages raise, naming the
    valid names or the pip extra."""
    if names == "none":
        return []
    chosen = list(BASELINES) if names == "all" else [n.strip() for n in names.split(",")]
    unknown = [n for n in chosen if n not in BASELINES]
    if unknown:
        raise BaselineError(f"unknown baseline(s) {', '.join(map(repr, unknown))}; "
                                   f"available: {', '.join(BASELINES)}, all, none")
    for package in dict.fromkeys(BASELINES[n][0] for n in chosen):
        _import(package, _MODULES[package])
    return chosen


def decide(name: str, x: np.ndarray, y: np.ndarray) -> str:
    """The direction baseline ``name`` gives for standardized samples ``x``, ``y``."""
    return BASELINES[name][1](x, y)
