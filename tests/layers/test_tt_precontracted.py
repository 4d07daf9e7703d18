"""The precontracted inference form of a TT weight (layers.tensor_train.precontracted): it
computes W x + b as the training contractions do (float64, so any wrong index shows far above
rounding), for MPS and MPO, every MPO grouping, ragged and prime factorizations, batch 1 and
32; its multiply-add and storage counts; and the grouping rule."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from edgecompress.layers import TTLinear
from edgecompress.layers.tensor_train.precontracted import (
    PRODUCT_MACS, MPOPrecontracted, MPSPrecontracted, best_grouping, mpo_groupings, plan_macs,
    precontract)

# (in, out, factorization, ranks, mode): balanced, unbalanced, ragged, prime sides, ones, auto
CASES = [
    (24, 30, ((4, 2, 3), (5, 6)), 3, "mps"),
    (30, 8, ((2, 3, 5), (2, 2, 2)), [2, 5, 7, 4, 2], "mps"),
    (7, 11, ((7,), (11,)), 4, "mps"),
    (200, 800, None, 8, "mps"),
    (24, 30, ((2, 3, 4), (5, 1, 6)), [3, 5], "mpo"),
    (30, 8, ((2, 3, 5), (2, 2, 2)), [2, 4], "mpo"),
    (7, 11, ((7,), (11,)), [], "mpo"),
    (200, 800, None, 4, "mpo"),
    (12, 30, ((3, 4), (5, 6)), 10**6, "mpo"),  # full rank: more numbers than W
]


def random_tt(case, seed=0) -> TTLinear:
    torch.manual_seed(seed)
    n, m, fact, ranks, mode = case
    return TTLinear(n, m, fact, ranks=ranks, mode=mode, dtype=torch.float64)


def reference(tt: TTLinear, x: torch.Tensor) -> torch.Tensor:
    return tt.layout.contract(x, list(tt.cores), tt.layout.orders[0]) + tt.bias


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[4]}-{c[0]}x{c[1]}-{c[3]}")
@pytest.mark.parametrize("batch", [1, 32])
def test_precontracted_form_equals_the_training_contraction(case, batch):
    tt = random_tt(case)
    x = torch.randn(batch, tt.in_features, dtype=torch.float64)
    with torch.no_grad():
        fast = precontract(tt.layout, list(tt.cores))
        expected = reference(tt, x)
        torch.testing.assert_close(fast(x, tt.bias), expected, rtol=0, atol=1e-12)
        torch.testing.assert_close(fast(x, None), expected - tt.bias, rtol=0, atol=1e-12)
    assert fast.macs(batch) == batch * (
        plan_macs(fast.shapes) if isinstance(fast, MPOPrecontracted) else fast.numel)


@pytest.mark.parametrize("case", [c for c in CASES if c[4] == "mpo"],
                         ids=lambda c: f"{c[0]}x{c[1]}-{c[3]}")
def test_every_mpo_grouping_computes_the_same_product(case):
    tt = random_tt(case, seed=1)
    x = torch.randn(5, tt.in_features, dtype=torch.float64)
    with torch.no_grad():
        expected = reference(tt, x)
        for ranges, shapes in mpo_groupings(tt.layout):
            fast = MPOPrecontracted(tt.layout, list(tt.cores), ranges)
            assert [tuple(s) for s in fast.shapes] == list(shapes)
            assert fast.numel == sum(math.prod(s) for s in shapes)
            torch.testing.assert_close(fast(x, tt.bias), expected, rtol=0, atol=1e-12)


def test_mps_form_is_two_products_of_n_r_plus_r_m():
    tt = TTLinear(200, 800, ((8, 5, 5), (8, 5, 5, 4)), ranks=16, mode="mps")
    fast = precontract(tt.layout, list(tt.cores))
    assert isinstance(fast, MPSPrecontracted)
    r = tt.ranks[2]  # the bond between the input and the output sides
    assert fast.left.shape == (200, r) and fast.right.shape == (r, 800)
    assert fast.numel == 200 * r + r * 800 < 200 * 800
    assert fast.macs(32) == 32 * (200 * r + r * 800)


def test_mpo_plan_costs_and_grouping_rule():
    tt = TTLinear(200, 800, ((5, 5, 4, 2), (8, 5, 5, 4)), ranks=4, mode="mpo")
    # one group per core is the training's right-to-left sweep
    singles = [shapes for ranges, shapes in mpo_groupings(tt.layout) if len(ranges) == 4][0]
    assert plan_macs(singles) == tt.layout.flops("right-to-left", 1) // 2
    # two groups (cores 1-2: M 40, N 25; cores 3-4: M 20, N 8), by hand:
    # 200 x 4 x 20 (the last group, all rows) + 25 x 4 x 800 (the first)
    assert best_grouping(tt.layout) == ((0, 2), (2, 4))
    fast = precontract(tt.layout, list(tt.cores))
    assert fast.macs(1) == 200 * 4 * 20 + 25 * 4 * 800
    assert fast.numel == 40 * 25 * 4 + 4 * 20 * 8 < 200 * 800
    dense = 200 * 800
    for ranges, shapes in mpo_groupings(tt.layout):
        stored = sum(math.prod(s) for s in shapes)
        if stored < dense:
            assert plan_macs(shapes) + PRODUCT_MACS * len(shapes) >= fast.macs(1) + 2 * PRODUCT_MACS


def test_mpo_falls_back_to_the_cores_when_every_merge_outgrows_w():
    tt = TTLinear(12, 30, ((3, 4), (5, 6)), ranks=10**6, mode="mpo")  # cores: 585 > 360
    assert tt.layout.params > 12 * 30
    assert best_grouping(tt.layout) == ((0, 1), (1, 2))


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[4]}-{c[0]}x{c[1]}-{c[3]}")
def test_macs_equal_the_counted_products(case):
    """Every product the precontracted form runs, counted by torch's FlopCounterMode (2 FLOPs
    per multiply-add of mm / bmm), equals its analytic count."""
    tt = random_tt(case)
    fast = precontract(tt.layout, list(tt.cores))
    for rows in (1, 5):
        x = torch.randn(rows, tt.in_features, dtype=torch.float64)
        with FlopCounterMode(display=False) as counted:
            fast(x, None)
        assert counted.get_total_flops() == 2 * fast.macs(rows)
