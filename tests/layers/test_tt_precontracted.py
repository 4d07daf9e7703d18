"""The precontracted inference form of a TT weight (layers.tensor_train.precontracted): every
plan (dense, MPS two-sided, every MPO grouping in both directions) computes W x + b as the
training contractions do (float64, so any wrong index shows far above rounding), for ragged and
prime factorizations, batch 1 and 32; its multiply-add counts equal the products torch runs;
the plan run for each batch size is the cheapest by the cost formula."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from edgecompress.layers import TTLinear
from edgecompress.layers.tensor_train.precontracted import (
    FACTORED_MAC_WEIGHT, PLANS, PRODUCT_MACS, Precontracted, candidates, choose, envelope,
    precontract, sweep_macs)

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


def every_plan(tt: TTLinear):
    return PLANS.get(tt.mode)(tt.layout)


def case_id(c) -> str:
    return f"{c[4]}-{c[0]}x{c[1]}-{c[3]}"


@pytest.mark.parametrize("case", CASES, ids=case_id)
@pytest.mark.parametrize("batch", [1, 32])
def test_precontracted_form_equals_the_training_contraction(case, batch):
    tt = random_tt(case)
    x = torch.randn(batch, tt.in_features, dtype=torch.float64)
    with torch.no_grad():
        fast = precontract(tt.layout, list(tt.cores))
        expected = reference(tt, x)
        torch.testing.assert_close(fast(x, tt.bias), expected, rtol=0, atol=1e-12)
        torch.testing.assert_close(fast(x, None), expected - tt.bias, rtol=0, atol=1e-12)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_every_plan_computes_the_same_product_with_its_counted_macs(case):
    """Each plan alone, at batch 1 and 5: the training layer's output, and every product it runs,
    counted by torch's FlopCounterMode (2 FLOPs per multiply-add of mm / bmm), equals its
    analytic count; its factors hold the numbers it states."""
    tt = random_tt(case, seed=1)
    plans = every_plan(tt)
    kinds = {p.kind for p in plans}
    assert kinds == ({"dense", "two-sided"} if tt.mode == "mps" else
                     {"dense", "left-to-right", "right-to-left"} if len(tt.cores) > 1
                     else {"dense"})
    for plan in plans:
        fast = Precontracted(tt.layout, list(tt.cores), [plan])
        assert fast.numel == plan.numel
        for rows in (1, 5):
            x = torch.randn(rows, tt.in_features, dtype=torch.float64)
            with torch.no_grad(), FlopCounterMode(display=False) as counted:
                y = fast(x, tt.bias)
            torch.testing.assert_close(y, reference(tt, x), rtol=0, atol=1e-12)
            assert counted.get_total_flops() == 2 * fast.macs(rows) == 2 * rows * plan.macs


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_the_plan_run_is_the_cheapest_by_the_formula(case):
    tt = random_tt(case)
    fast = precontract(tt.layout, list(tt.cores))
    allowed = candidates(tt.layout)
    dense = tt.in_features * tt.out_features
    assert any(p.kind == "dense" for p in allowed)  # W itself is always a candidate
    assert all(p.numel <= dense for p in allowed) and set(allowed) <= set(every_plan(tt))
    for rows in (*range(1, 70), 128, 1000, 10**6):
        cost = min(p.cost(rows) for p in allowed)
        run = fast.plan(rows)
        assert run.cost(rows) == cost and run == choose(allowed, rows)
        assert fast.macs(rows) == rows * run.macs
        factored = 1 if run.kind == "dense" else FACTORED_MAC_WEIGHT
        assert run.cost(rows) == rows * run.macs * factored + PRODUCT_MACS * run.products


def test_mpo_sweep_costs_by_hand_and_the_training_orders():
    tt = TTLinear(200, 800, ((5, 5, 4, 2), (8, 5, 5, 4)), ranks=4, mode="mpo")
    by_ranges = {(p.kind, p.ranges): p for p in every_plan(tt)}
    singles = ((0, 1), (1, 2), (2, 3), (3, 4))  # one group per core: the training's sweeps
    for kind in ("left-to-right", "right-to-left"):
        assert by_ranges[kind, singles].macs == tt.layout.flops(kind, 1) // 2
    # two groups (cores 1-2: M 40, N 25; cores 3-4: M 20, N 8), by hand. From the last: the
    # last group by all 200 inputs x 4 x 20, then the first 25 x 4 x 800; from the first:
    # 25 x 40 x 4 x 8 (N_2 = 8 still to meet), then 40 x 4 x 8 x 20
    halves = ((0, 2), (2, 4))
    assert by_ranges["right-to-left", halves].macs == 200 * 4 * 20 + 25 * 4 * 800
    assert by_ranges["left-to-right", halves].macs == 25 * 40 * 4 * 8 + 40 * 4 * 8 * 20
    shapes = [(1, 40, 25, 4), (4, 20, 8, 1)]
    assert sweep_macs(shapes, "left-to-right") == by_ranges["left-to-right", halves].macs
    fast = precontract(tt.layout, list(tt.cores))
    assert [p.kind for p in fast.plans] == ["left-to-right"]
    assert fast.plan(1).ranges == halves  # 2 x 57,600 + 2 products < 160,000 + 1 product


def test_high_ranks_run_the_dense_matrix():
    """MPO rank 16 on the 200 x 800 gate matrix costs more per row in every grouping than W;
    at full rank the cores hold more numbers than W and no grouping is allowed but W."""
    tt = TTLinear(200, 800, ((5, 5, 4, 2), (8, 5, 5, 4)), ranks=16, mode="mpo")
    assert min(p.macs for p in every_plan(tt) if p.kind != "dense") > 200 * 800
    assert [p.kind for p in precontract(tt.layout, list(tt.cores)).plans] == ["dense"]
    full = TTLinear(12, 30, ((3, 4), (5, 6)), ranks=10**6, mode="mpo")  # cores: 585 > 360
    assert full.layout.params > 12 * 30
    assert [p.kind for p in candidates(full.layout)] == ["dense"]


def test_the_plan_changes_with_the_batch_where_the_costs_cross():
    """64 x 64 MPS at rank 8: two products of 2 x 1024 weighted multiply-adds per row against
    one of 4096, so W runs below 16 rows (where 4096 r + PRODUCT_MACS = 2048 r + 2 PRODUCT_MACS)
    and the two-sided form from there on; both are built and give the same outputs."""
    torch.manual_seed(0)
    tt = TTLinear(64, 64, ((8, 8), (8, 8)), ranks=8, mode="mps", dtype=torch.float64)
    assert FACTORED_MAC_WEIGHT * (64 * 8 + 8 * 64) == 2048 and PRODUCT_MACS == 16 * 2048
    fast = precontract(tt.layout, list(tt.cores))
    assert [p.kind for p in fast.plans] == ["two-sided", "dense"]
    assert [fast.plan(rows).kind for rows in (1, 15, 16, 17, 32)] == [
        "dense", "dense", "two-sided", "two-sided", "two-sided"]  # 16: a tie, fewer numbers
    assert envelope(every_plan(tt)) == fast.plans
    with torch.no_grad():
        for rows in (1, 32):
            x = torch.randn(rows, 64, dtype=torch.float64)
            torch.testing.assert_close(fast(x, tt.bias), reference(tt, x), rtol=0, atol=1e-12)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_the_envelope_holds_every_plan_chosen_for_some_batch(case):
    tt = random_tt(case)
    allowed = candidates(tt.layout)
    kept = envelope(allowed)
    chosen = {choose(allowed, rows) for rows in (*range(1, 300), 10**4, 10**6, 10**9)}
    assert set(kept) == chosen
