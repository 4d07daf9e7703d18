"""Scoring a test on cause-effect pairs: the seeded subsample and the weighted accuracy."""

from __future__ import annotations

import numpy as np
import pytest

from edgecompress.causal import CausePair, decide_pair, simulate, subsample, weighted_accuracy


def make_pair(pair_id: int, weight: float, swap: bool = False, n: int = 150) -> CausePair:
    sim = simulate(n, 1, mechanisms=["cubic"], noises=["uniform"], seed=pair_id)
    x, y = (sim.y, sim.x) if swap else (sim.x, sim.y)
    return CausePair(pair_id=pair_id, x=x, y=y, direction="y->x" if swap else "x->y",
                     weight=weight)


def test_subsample_is_seeded_per_pair_and_without_replacement():
    pair = make_pair(1, 1.0, n=300)
    x, y = subsample(pair, 100, seed=0)
    again, _ = subsample(pair, 100, seed=0)
    other, _ = subsample(pair, 100, seed=1)
    assert len(x) == 100 and len(set(x.tolist())) == 100
    np.testing.assert_array_equal(x, again)
    assert not np.array_equal(x, other)
    keep = np.flatnonzero(np.isin(pair.x, x))  # the points keep their order and pairing
    np.testing.assert_array_equal(pair.y[keep], y)
    assert subsample(pair, 1000)[0] is pair.x and subsample(pair, None)[0] is pair.x


def test_weighted_accuracy_weighs_pairs():
    decisions = [decide_pair(make_pair(1, 0.75), max_n=120),
                 decide_pair(make_pair(2, 0.25, swap=True), max_n=120)]
    assert [d.correct for d in decisions] == [True, True]
    assert decisions[0].n_used == 120 and decisions[0].result.rule == "forced"
    assert weighted_accuracy(decisions) == pytest.approx(1.0)
    wrong = decisions[1].pair
    flipped = decide_pair(CausePair(pair_id=2, x=wrong.x, y=wrong.y, direction="x->y",
                                    weight=0.25))
    assert not flipped.correct
    assert weighted_accuracy([decisions[0], flipped]) == pytest.approx(0.75)
    assert flipped.to_dict()["correct"] is False
