"""Causal direction between two variables, for one population or heterogeneous ones.

``edgecompress.causal.direction(x, y, method="anm" | "hetero", level=0.05, ...)`` tests both
``x -> y`` and ``y -> x`` and returns a :class:`DirectionResult` (``.direction`` is "x->y",
"y->x" or "undecided"; statistics, p-values, mechanism clusters; ``str()`` a table,
``to_dict()`` JSON). The parts, one module each:

- :mod:`.hsic`: HSIC independence test (exact, Nystrom or random Fourier features);
- :mod:`.regressors`: regressors by name (Gaussian process, kernel ridge, boosting, splines);
- :mod:`.anm`: the additive-noise-model test of one direction;
- :mod:`.clustering`: mechanism clustering with unknown k;
- :mod:`.hetero`: the cluster-adjusted test (heterogeneous populations);
- :mod:`.ties`: variables with few distinct values (ties="none" or "jitter");
- :mod:`.simulate`: heterogeneous additive-noise data; :mod:`.pairs`: the Tuebingen pairs;
- :mod:`.evaluation`: a test scored on the pairs (weighted accuracy);
- :mod:`.table`: two columns of a CSV or whitespace table file.

numpy, scipy and scikit-learn only: importing this package does not import torch.
"""

from .anm import anm_test
from .clustering import Clustering, cluster_mechanisms
from .hetero import hetero_test
from .hsic import HSICTest, hsic, median_bandwidth
from .inputs import MIN_SAMPLES
from .methods import available, direction, register_method
from .regressors import make_regressor
from .result import UNDECIDED, X_TO_Y, Y_TO_X, DirectionResult, DirectionTest, decide
from .pairs import CausePair, load_pairs
from .evaluation import PairDecision, decide_pair, subsample, weighted_accuracy
from .table import read_columns
from .simulate import SimulatedPair, simulate

__all__ = ["direction", "available", "register_method", "DirectionResult", "DirectionTest",
           "decide", "X_TO_Y", "Y_TO_X", "UNDECIDED", "MIN_SAMPLES", "hsic", "HSICTest",
           "median_bandwidth", "anm_test", "hetero_test", "cluster_mechanisms", "Clustering",
           "make_regressor", "simulate", "SimulatedPair", "load_pairs", "CausePair",
           "decide_pair", "PairDecision", "subsample", "weighted_accuracy", "read_columns"]
