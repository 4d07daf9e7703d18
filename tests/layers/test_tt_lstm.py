"""TTLSTM: at full TT rank it is nn.LSTM (float64, multi-layer, batch first or not, with and
without an initial state, unbatched); its counts; clear errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgecompress import summary
from edgecompress.errors import ConversionError
from edgecompress.layers import TTLSTM, TTLinear, tt_params

FULL = 10**6  # an int rank is capped at every bond's bound: the exact TT


def dense_lstm(batch_first: bool, layers: int = 2, bias: bool = True, seed: int = 0) -> nn.LSTM:
    torch.manual_seed(seed)
    return nn.LSTM(6, 8, num_layers=layers, bias=bias, batch_first=batch_first).double()


def assert_same(a, b):
    out_a, (h_a, c_a) = a
    out_b, (h_b, c_b) = b
    for x, y in ((out_a, out_b), (h_a, h_b), (c_a, c_b)):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-12)


@pytest.mark.parametrize("mode", ["mps", "mpo"])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("which", ["both", "input", "hidden"])
def test_full_rank_tt_lstm_equals_nn_lstm(mode, batch_first, which):
    lstm = dense_lstm(batch_first)
    tt = TTLSTM.from_lstm(lstm, FULL, mode, which=which)
    assert [type(m) for m in (tt.ih[0], tt.hh[0])] == [
        TTLinear if which != "hidden" else nn.Linear, TTLinear if which != "input" else nn.Linear]
    x = torch.randn(3, 5, 6, dtype=torch.float64)  # (B, T, F) or (T, B, F)
    rows = 3 if batch_first else 5
    state = (torch.randn(2, rows, 8, dtype=torch.float64),
             torch.randn(2, rows, 8, dtype=torch.float64))
    assert_same(tt(x), lstm(x))
    assert_same(tt(x, state), lstm(x, state))


def test_unbatched_input_gradients_and_no_bias_match_nn_lstm():
    lstm = dense_lstm(batch_first=True, layers=3, bias=False)
    tt = TTLSTM.from_lstm(lstm, FULL, "mps", factorization=((3, 2), (4, 2)))
    assert tt.ih[0].factorization == ((3, 2), (16, 2)) and tt.hh[1].factorization == (
        (4, 2), (16, 2))
    x = torch.randn(4, 6, dtype=torch.float64)  # unbatched (T, F), whatever batch_first says
    state = (torch.randn(3, 8, dtype=torch.float64), torch.randn(3, 8, dtype=torch.float64))
    assert_same(tt(x, state), lstm(x, state))
    xa, xb = (torch.randn(2, 4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
              .requires_grad_() for _ in range(2))
    lstm(xa)[0].sum().backward()
    tt(xb)[0].sum().backward()
    torch.testing.assert_close(xb.grad, xa.grad, rtol=0, atol=1e-12)


def test_dropout_between_layers_in_training_only():
    torch.manual_seed(0)
    x = torch.randn(5, 2, 6)
    two = TTLSTM(6, 8, num_layers=2, dropout=0.5, ranks=2)
    one = TTLSTM(6, 8, num_layers=1, dropout=0.5, ranks=2)
    assert not torch.equal(two.train()(x)[0], two.eval()(x)[0])
    assert torch.equal(one.train()(x)[0], one.eval()(x)[0])  # never after the last layer
    lstm = nn.LSTM(6, 8, num_layers=2, dropout=0.5)
    assert TTLSTM.from_lstm(lstm, 2).dropout == 0.5


def test_parameters_and_summary_count_the_tt_matrices():
    torch.manual_seed(0)
    tt = TTLSTM(16, 32, num_layers=2, ranks=4, mode="mps")
    n_ih0 = tt_params(tt.ih[0].factorization, 4, "mps")
    n_hh = tt_params(tt.hh[0].factorization, 4, "mps")
    assert sum(p.numel() for p in tt.parameters()) == n_ih0 + 3 * n_hh + 4 * (4 * 32)
    dense = nn.LSTM(16, 32, num_layers=2)
    x = torch.zeros(7, 3, 16)  # (T, B, F)
    s, d = summary(tt, input=x, batch_size=3), summary(dense, input=x, batch_size=3)
    assert s.total_params == sum(p.numel() for p in tt.parameters())
    assert s.total_macs == tt.macs(7, 3) // 3
    assert tt.macs(7, 3) == tt.ih[0].macs(21) + tt.ih[1].macs(21) + 7 * 2 * tt.hh[0].macs(3)
    assert s.total_macs < d.total_macs and s.total_params < d.total_params / 5


def test_state_dict_round_trip():
    torch.manual_seed(0)
    tt = TTLSTM(6, 8, num_layers=2, ranks=3, mode="mpo", which="hidden")
    assert {"ih.0.weight", "ih.0.bias", "hh.0.cores.0", "hh.1.bias"} <= set(tt.state_dict())
    other = TTLSTM(6, 8, num_layers=2, ranks=3, mode="mpo", which="hidden")
    other.load_state_dict(tt.state_dict())
    x = torch.randn(4, 2, 6)
    assert_same(other(x), tt(x))


@pytest.mark.parametrize("make, message", [
    (lambda: TTLSTM(6, 8, ranks=2, which="gates"),
     "which must be one of ('both', 'input', 'hidden'), got 'gates'"),
    (lambda: TTLSTM(6, 8, ranks=[2, 2, 2, 2, 2]), "layer 0, input-to-hidden matrix (32 x 6): "
                                                 "ranks=[2, 2, 2, 2, 2] is not"),
    (lambda: TTLSTM(6, 8, ranks=2, factorization=((3, 2), (4, 4))),
     "the hidden factors must be positive ints multiplying to hidden_size 8"),
    (lambda: TTLSTM(6, 8, ranks=2, factorization=((3, 3), (4, 2))),
     "input-to-hidden matrix (32 x 6): factorization ((3, 3), (16, 2)): the input factors"),
    (lambda: TTLSTM(6, 8, ranks=2, dropout=1.5), "dropout must be a number in [0, 1], got 1.5"),
    (lambda: TTLSTM.from_lstm(nn.LSTM(6, 8, bidirectional=True), 2),
     "TTLSTM converts unidirectional LSTMs without projection"),
    (lambda: TTLSTM.from_lstm(nn.LSTM(6, 8, proj_size=4), 2), "proj_size=4"),
    (lambda: TTLSTM.from_lstm(nn.GRU(6, 8), 2), "from_lstm needs an nn.LSTM, got GRU"),
])
def test_bad_configurations_are_rejected_clearly(make, message):
    with pytest.raises(ConversionError) as info:
        make()
    assert message in str(info.value)


def test_bad_input_and_state_shapes_are_rejected_clearly():
    tt = TTLSTM(6, 8, num_layers=2, ranks=2)
    with pytest.raises(ValueError, match=r"initial state h_0 must have shape \(2, 3, 8\), got "
                                         r"\(1, 3, 8\)"):
        tt(torch.zeros(5, 3, 6), (torch.zeros(1, 3, 8), torch.zeros(2, 3, 8)))
    with pytest.raises(ValueError, match="expects an input of 3 dimensions"):
        tt(torch.zeros(6))
