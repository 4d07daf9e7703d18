"""TTLinear and the TT format (edgecompress.layers.tensor_train): exactness of TT-SVD at full
rank, equality of every contraction order, the analytic parameter and FLOP counts against the
real ones, the variance-matched init, and clear errors for bad factorizations and ranks."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from edgecompress import summary
from edgecompress.errors import ConversionError, EdgecompressError, UnknownNameError
from edgecompress.layers import TTLinear, tt_flops, tt_params
from edgecompress.layers.tensor_train import auto_factorization
from edgecompress.layers.tensor_train.layout import LAYOUTS, factorize, rank_bounds

# (in, out, factorization, ranks, mode): balanced, unbalanced, a prime side, ones, automatic
CASES = [
    (24, 30, ((4, 2, 3), (5, 6)), 3, "mps"),
    (24, 30, ((2, 3, 4), (5, 1, 6)), [3, 5], "mpo"),
    (7, 64, None, 4, "mps"),
    (7, 64, None, 2, "mpo"),
    (64, 256, None, 8, "mps"),
    (64, 256, None, [4, 8], "mpo"),
    (36, 10, ((6, 6), (10,)), [6, 10], "mps"),
]


def full_rank() -> int:
    return 10**6  # an int rank is capped at every bond's bound: the exact TT


def random_tt(case, seed=0) -> TTLinear:
    torch.manual_seed(seed)
    n, m, fact, ranks, mode = case
    return TTLinear(n, m, fact, ranks=ranks, mode=mode, dtype=torch.float64)


# --- exactness ---------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["mps", "mpo"])
@pytest.mark.parametrize("n, m, fact", [(24, 30, None), (24, 30, ((4, 6), (6, 5))),
                                        (13, 12, None), (8, 1, None)])
def test_full_rank_tt_svd_reproduces_the_dense_layer(mode, n, m, fact):
    torch.manual_seed(0)
    dense = nn.Linear(n, m).double()
    tt = TTLinear.from_linear(dense, full_rank(), mode, fact)
    x = torch.randn(5, 3, n, dtype=torch.float64)
    torch.testing.assert_close(tt.to_dense(), dense.weight, rtol=0, atol=1e-12)
    torch.testing.assert_close(tt(x), dense(x), rtol=0, atol=1e-12)
    assert tt.ranks == rank_bounds(tt.layout.modes)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_tt_svd_at_the_ranks_of_a_tt_weight_recovers_it(case):
    """A weight that is exactly a TT of ranks r is found again by TT-SVD truncated to r."""
    source = random_tt(case)
    n, m, fact, ranks, mode = case
    weight = source.to_dense().detach()
    recovered = TTLinear.from_linear(_linear(weight), ranks, mode, fact)
    torch.testing.assert_close(recovered.to_dense(), weight, rtol=0, atol=1e-11)


def _linear(weight: torch.Tensor) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=False).double()
    with torch.no_grad():
        layer.weight.copy_(weight)
    return layer


def test_truncation_error_falls_as_the_rank_grows():
    torch.manual_seed(1)
    dense = nn.Linear(64, 64).double()
    errors = [(TTLinear.from_linear(dense, r, "mps").to_dense() - dense.weight).norm().item()
              for r in (1, 2, 4, 8, 64)]
    assert errors == sorted(errors, reverse=True) and errors[-1] < 1e-12 < errors[-2]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_every_contraction_order_gives_the_same_result(case):
    tt = random_tt(case)
    for rows in (1, 6):
        x = torch.randn(rows, tt.in_features, dtype=torch.float64)
        expected = x @ tt.to_dense().T
        for order in tt.layout.orders:
            torch.testing.assert_close(tt.contract(x, order), expected, rtol=1e-12, atol=1e-12)


def test_the_order_run_is_the_cheapest_for_the_batch_size():
    """MPS at rank 8 on 64 -> 256: sweeping the batch through the cores wins for one row,
    multiplying the (batch-independent) cores first wins for many rows."""
    layout = TTLinear(64, 256, ranks=8, mode="mps").layout
    assert layout.best_order(1) == "batch-first"
    assert layout.best_order(4096) != "batch-first"
    for rows in (1, 32, 4096):
        best = layout.best_order(rows)
        assert layout.flops(best, rows) == min(layout.flops(o, rows) for o in layout.orders)
    mpo = TTLinear(24, 30, ((2, 3, 4), (5, 1, 6)), ranks=[3, 5], mode="mpo").layout
    assert mpo.flops("right-to-left", 1) < mpo.flops("left-to-right", 1)
    assert mpo.best_order(1) == "right-to-left"


def test_forward_runs_the_chosen_order(monkeypatch):
    tt = TTLinear(64, 256, ranks=8, mode="mps")
    ran = []
    original = type(tt.layout).contract
    monkeypatch.setattr(type(tt.layout), "contract",
                        lambda self, x, cores, order: ran.append(order) or original(
                            self, x, cores, order))
    tt(torch.randn(1, 64))
    tt(torch.randn(64, 64, 64))
    assert ran == [tt.layout.best_order(1), tt.layout.best_order(64 * 64)]


# --- the cost model ----------------------------------------------------------------------------

def test_parameter_formulas_by_hand():
    # MPS (4,4)x(4,4) rank 2: cores (1,4,2) (2,4,2) (2,4,2) (2,4,1)
    assert tt_params(((4, 4), (4, 4)), 2, "mps") == 8 + 16 + 16 + 8
    # MPO (4,4)x(4,4) rank 2: cores (1,4,4,2) (2,4,4,1)
    assert tt_params(((4, 4), (4, 4)), 2, "mpo") == 32 + 32
    # an int rank is capped at each bond's bound: MPS bonds of (2,8)x(8,2) at most 2, 16, 2
    assert tt_params(((2, 8), (8, 2)), 100, "mps") == 1 * 2 * 2 + 2 * 8 * 16 + 16 * 8 * 2 + 2 * 2
    # MPO, one row: batch x sum_k m_<k n_>k r_{k-1} n_k m_k r_k
    assert tt_flops(((4, 4), (4, 4)), 2, "mpo", batch=3, order="left-to-right") == \
        2 * 3 * (1 * 4 * 1 * 4 * 4 * 2 + 4 * 1 * 2 * 4 * 4 * 1)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_analytic_parameter_count_equals_the_real_one(case):
    tt = random_tt(case)
    n, m, fact, ranks, mode = case
    assert tt_params(tt.factorization, ranks, mode) == sum(c.numel() for c in tt.cores)
    assert sum(p.numel() for p in tt.parameters()) == tt_params(tt.factorization, ranks, mode) + m
    assert tt.compression_ratio == n * m / tt_params(tt.factorization, ranks, mode)


def counter() -> FlopCounterMode:
    """torch's FlopCounterMode (2 FLOPs per multiply-add of mm / bmm); an einsum contracting
    only size-1 dimensions (a core with n_k = 1 beside a rank-1 bond: an outer product) runs as
    a broadcast multiply, whose products count as multiply-adds too."""
    return FlopCounterMode(display=False, custom_mapping={
        torch.ops.aten.mul: lambda *shapes, out_shape, **_: 2 * math.prod(out_shape)})


@pytest.mark.parametrize("case", CASES, ids=str)
def test_flop_formulas_equal_the_counted_operations(case):
    """Every product the forward pass runs, counted by FlopCounterMode, equals the analytic
    count of its order."""
    tt = random_tt(case)
    for rows in (1, 5):
        x = torch.randn(rows, tt.in_features, dtype=torch.float64)
        for order in tt.layout.orders:
            with counter() as counted:
                tt.contract(x, order)
            assert counted.get_total_flops() == tt_flops(tt.factorization, case[3], case[4],
                                                         rows, order), order
        with counter() as counted:
            tt(x)
        assert counted.get_total_flops() == tt_flops(tt.factorization, case[3], case[4], rows)


def test_summary_counts_tt_layers_by_their_contractions():
    torch.manual_seed(0)
    net = nn.Sequential(TTLinear(64, 256, ranks=8, mode="mps"), nn.ReLU(),
                        TTLinear(256, 10, ranks=4, mode="mpo"))
    s = summary(net, (64,))
    first, last = s.layers
    assert first.params == sum(p.numel() for p in net[0].parameters())
    assert first.macs_by_precision == {"w32a32": net[0].layout.flops("batch-first", 1) // 2}
    assert last.macs_by_precision == {"w32a32": tt_flops(net[2].factorization, 4, "mpo") // 2}
    assert s.total_params == sum(p.numel() for p in net.parameters())
    assert s.total_macs < 64 * 256  # not the dense count
    tokens = summary(net, input=torch.zeros(1, 7, 64))  # rows beyond the batch all count
    assert tokens.layers[0].macs_by_precision["w32a32"] == net[0].macs(7)


# --- initialisation ----------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["mps", "mpo"])
@pytest.mark.parametrize("ranks", [1, 4, 16])
def test_random_init_matches_the_output_variance_of_a_dense_layer(mode, ranks):
    torch.manual_seed(0)
    x = torch.randn(2048, 128)
    dense = nn.Linear(128, 192, bias=False)(x).var().item()
    for _ in range(3):
        tt = TTLinear(128, 192, ranks=ranks, mode=mode, bias=False)
        assert tt(x).var().item() == pytest.approx(dense, rel=0.1)
    assert dense == pytest.approx(1 / 3, rel=0.05)  # nn.Linear's default: Var(w) = 1/(3N)


# --- factorization ---------------------------------------------------------------------------

def test_automatic_factorization_is_balanced_and_documented():
    assert factorize(1024, 4) == (8, 8, 4, 4)
    assert factorize(256, 3) == (8, 8, 4)
    assert factorize(100, 2) == (10, 10)
    assert factorize(7, 3) == (7, 1, 1)
    assert auto_factorization(64, 1024, "mps") == ((8, 8), (8, 8, 4, 4))
    assert auto_factorization(7, 1024, "mps") == ((7,), (8, 8, 4, 4))  # a prime: one core
    assert auto_factorization(7, 1024, "mpo") == ((7, 1, 1, 1), (8, 8, 4, 4))  # padded
    assert auto_factorization(256, 1024, "mpo") == ((4, 4, 4, 4), (8, 8, 4, 4))


# --- bad input -------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, error, message", [
    (dict(ranks=0), ConversionError, "ranks=0 is not a positive int"),
    (dict(ranks=[2, 0, 2]), ConversionError, "rank 0 of bond 2 is outside 1..16"),
    (dict(ranks=[2, 17, 2]), ConversionError, "rank 17 of bond 2 is outside 1..16 (the TT-rank "
                                              "bound"),
    (dict(ranks=[5, 4, 4]), ConversionError, "rank 5 of bond 1 is outside 1..4"),
    (dict(ranks=[1, 16, 2]), ConversionError, "rank 16 of bond 2 exceeds what its neighbours"),
    (dict(ranks=[2, 2]), ConversionError, "a list of 3 positive ints, one per bond, at most "
                                          "[4, 16, 4]"),
    (dict(ranks=2.5), ConversionError, "ranks=2.5 is not"),
    (dict(ranks=2, factorization=((4, 4), (4, 3))), ConversionError,
     "the output factors (4, 3) multiply to 12, not output size 16"),
    (dict(ranks=2, factorization=((4, 5), (4, 4))), ConversionError,
     "the input factors (4, 5) multiply to 20, not input size 16"),
    (dict(ranks=2, factorization=((4, 0), (4, 4))), ConversionError, "is not a pair (input "
                                                                     "factors, output factors)"),
    (dict(ranks=2, factorization=(16, 16)), ConversionError, "is not a pair"),
    (dict(ranks=2, mode="mpo", factorization=((16,), (4, 4))), ConversionError,
     "both sides need the same number of factors (got 1 and 2; pad with 1)"),
    (dict(ranks=2, mode="tucker"), UnknownNameError, "unknown tensor-train mode 'tucker'; "
                                                      "available: mpo, mps"),
])
def test_bad_factorizations_ranks_and_modes_are_rejected_clearly(kwargs, error, message):
    kwargs = {"factorization": ((4, 4), (4, 4)), **kwargs}
    with pytest.raises(error) as info:
        TTLinear(16, 16, **kwargs)
    assert message in str(info.value)
    assert isinstance(info.value, (EdgecompressError, ValueError))


def test_bad_calls_are_rejected_clearly():
    tt = TTLinear(16, 8, ranks=2)
    with pytest.raises(ValueError, match="got an input whose last dimension is 12, not 16"):
        tt(torch.zeros(3, 12))
    with pytest.raises(ConversionError, match="unknown contraction order 'fastest' for mode "
                                              "'mps'; available: batch-first"):
        tt.contract(torch.zeros(1, 16), "fastest")
    with pytest.raises(ConversionError, match="from_linear needs an nn.Linear, got Conv2d"):
        TTLinear.from_linear(nn.Conv2d(1, 1, 1), 2)
    with pytest.raises(ConversionError, match="in_features must be a positive int, got 0"):
        TTLinear(0, 8, ranks=2)


# --- module behaviour --------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["mps", "mpo"])
def test_state_dict_round_trip_and_gradients(mode):
    torch.manual_seed(0)
    tt = TTLinear(24, 30, ranks=3, mode=mode)
    assert set(tt.state_dict()) == {f"cores.{k}" for k in range(len(tt.cores))} | {"bias"}
    other = TTLinear(24, 30, ranks=3, mode=mode)
    other.load_state_dict(tt.state_dict())
    x = torch.randn(4, 24)
    torch.testing.assert_close(other(x), tt(x), rtol=0, atol=0)
    other(x).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in other.parameters())
    with pytest.raises(RuntimeError, match="size mismatch"):
        TTLinear(24, 30, ranks=2, mode=mode).load_state_dict(tt.state_dict())


def test_layouts_are_registered_by_name():
    assert LAYOUTS.available() == ["mpo", "mps"]
    assert TTLinear(16, 16, ranks=2, mode="MPO").mode == "mpo"


@pytest.mark.slow
def test_forward_under_torch_compile():
    torch.manual_seed(0)
    net = nn.Sequential(TTLinear(64, 96, ranks=4, mode="mps"), nn.Tanh(),
                        TTLinear(96, 32, ranks=4, mode="mpo"))
    x = torch.randn(8, 64)
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(net, fullgraph=True)(x), net(x))
