"""Bad data and bad options are refused with a message naming the problem."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from edgecompress.causal import MIN_SAMPLES, direction
from edgecompress.errors import CausalInputError, EdgecompressError, UnknownNameError


@pytest.fixture
def xy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=50)
    return x, x**3 + rng.normal(size=50)


def test_error_class():
    assert issubclass(CausalInputError, EdgecompressError)
    assert issubclass(CausalInputError, ValueError)


@pytest.mark.parametrize("bad, message", [
    (np.nan, r"x: 1 non-finite value\(s\) \(NaN\), first at index 7"),
    (np.inf, r"x: 1 non-finite value\(s\) \(inf\), first at index 7"),
])
def test_non_finite_values(xy, bad, message):
    x, y = xy
    x = x.copy()
    x[7] = bad
    with pytest.raises(CausalInputError, match=message):
        direction(x, y)


def test_constant_column(xy):
    x, _ = xy
    with pytest.raises(CausalInputError, match=r"y is constant \(every value is 2\)"):
        direction(x, np.full(50, 2.0))


def test_mismatched_lengths(xy):
    x, y = xy
    with pytest.raises(CausalInputError, match=r"different lengths \(50 and 49\)"):
        direction(x, y[:-1])


def test_too_few_samples(xy):
    x, y = xy
    n = MIN_SAMPLES - 1
    with pytest.raises(CausalInputError, match=rf"{n} samples; .* at least {MIN_SAMPLES}"):
        direction(x[:n], y[:n])


def test_not_one_dimensional_or_not_numeric(xy):
    x, y = xy
    with pytest.raises(CausalInputError, match=r"x: expected a 1-D array .* shape \(25, 2\)"):
        direction(x.reshape(25, 2), y[:25])
    with pytest.raises(CausalInputError, match="y: not numeric"):
        direction(x, ["a"] * 50)
    assert direction(x[:, None], y, regressor="spline").n == 50  # an (n, 1) column is fine


def test_bad_options(xy):
    x, y = xy
    with pytest.raises(UnknownNameError, match="unknown causal method 'lingam'; available: anm"):
        direction(x, y, method="lingam")
    with pytest.raises(CausalInputError, match="level must be between 0 and 1"):
        direction(x, y, level=5)
    with pytest.raises(CausalInputError, match="unknown rule 'vote'; available: level, forced"):
        direction(x, y, rule="vote")
    with pytest.raises(UnknownNameError, match="unknown regressor 'svm'; available: gp"):
        direction(x, y, regressor="svm")
    with pytest.raises(CausalInputError, match="regressor must be a name"):
        direction(x, y, regressor=42)
    with pytest.raises(CausalInputError, match="unknown combine 'max'"):
        direction(x, y, method="hetero", combine="max")


def test_importing_causal_does_not_import_torch():
    code = "import sys, edgecompress.causal; assert 'torch' not in sys.modules, 'torch imported'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
