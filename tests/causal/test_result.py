"""The result object (printable, JSON-serializable) and the decision rules."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from edgecompress.causal import DirectionTest, decide, direction
from edgecompress.causal.ties import DEFAULT_TIES


def _test(hypothesis: str, p: float, statistic: float = 0.01) -> DirectionTest:
    return DirectionTest(hypothesis, statistic, p, math.log(p) if p > 0 else -math.inf)


@pytest.mark.parametrize("p_xy, p_yx, level_rule, forced_rule", [
    (0.5, 0.001, "x->y", "x->y"),
    (0.001, 0.5, "y->x", "y->x"),
    (0.5, 0.2, "undecided", "x->y"),      # neither rejected
    (0.01, 0.001, "undecided", "x->y"),   # both rejected
    (0.0, 0.0, "undecided", "undecided"),  # equal p-values and statistics
])
def test_decision_rules(p_xy, p_yx, level_rule, forced_rule):
    xy, yx = _test("x->y", p_xy), _test("y->x", p_yx)
    assert decide(xy, yx, 0.05, "level") == level_rule
    assert decide(xy, yx, 0.05, "forced") == forced_rule


def test_forced_rule_compares_tiny_p_values_in_log_space():
    xy = DirectionTest("x->y", 0.2, 0.0, -900.0)  # both p-values underflow to 0.0
    yx = DirectionTest("y->x", 0.3, 0.0, -1200.0)
    assert decide(xy, yx, 0.05, "forced") == "x->y"


def test_result_prints_and_serializes():
    rng = np.random.default_rng(0)
    x = rng.normal(size=120)
    result = direction(x, x**3 + rng.normal(size=120), regressor="spline", seed=3)
    text = str(result)
    assert text.startswith("causal direction (anm, n=120, level=0.05, rule=level): x->y")
    assert "x->y" in text.splitlines()[2] and "y->x" in text.splitlines()[3]
    payload = json.loads(json.dumps(result.to_dict()))
    assert payload["direction"] == "x->y" and payload["k"] == 1 and payload["n"] == 120
    assert payload["options"] == {"seed": 3, "ties": DEFAULT_TIES, "regressor": "spline"}
    assert len(payload["x_to_y"]["labels"]) == 120
    assert payload["y_to_x"]["p_value"] == pytest.approx(result.y_to_x.p_value)
    assert result.labels is result.x_to_y.labels and result.k == 1


def test_non_finite_log_p_serializes_as_null():
    test = DirectionTest("x->y", 1.0, 0.0, -math.inf)
    assert json.loads(json.dumps(test.to_dict()))["log_p_value"] is None
