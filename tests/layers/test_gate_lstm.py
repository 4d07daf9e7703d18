"""GateLSTM: nn.LSTM with Linear gate maps; the Linear converters take a plain nn.LSTM through
it (its gate maps inner layers), and unsupported LSTMs are named."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import edgecompress as ec
from edgecompress.errors import ConversionError
from edgecompress.layers import GateLSTM, ShiftLinear, UniformLinear


@pytest.mark.parametrize("batch_first, bias", [(False, True), (True, False)])
def test_from_lstm_computes_what_the_lstm_computes(batch_first, bias):
    torch.manual_seed(0)
    lstm = nn.LSTM(6, 8, num_layers=2, bias=bias, batch_first=batch_first).eval()
    gate = GateLSTM.from_lstm(lstm)
    assert [type(m) for m in (*gate.ih, *gate.hh)] == [nn.Linear] * 4
    assert gate.ih[1].in_features == 8 and gate.hh[0].out_features == 32
    x = torch.randn(3, 5, 6) if batch_first else torch.randn(5, 3, 6)
    state = (torch.randn(2, 3, 8), torch.randn(2, 3, 8))
    for args in ((x,), (x, state), (x[0] if batch_first else x[:, 0],)):
        out, (h, c) = gate(*args)
        ref, (h_ref, c_ref) = lstm(*args)
        for a, b in ((out, ref), (h, h_ref), (c, c_ref)):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("option, value", [("bidirectional", True), ("proj_size", 4)])
def test_unsupported_lstms_are_named(option, value):
    lstm = nn.LSTM(6, 8, **{option: value})
    with pytest.raises(ConversionError, match=f"{option}={value!r} \\(accepted"):
        GateLSTM.from_lstm(lstm)
    model, report = ec.convert(nn.Sequential(lstm), "s3", return_report=True)
    assert isinstance(model[0], nn.LSTM)  # kept float, with the reason
    assert [(n, r) for n, _, r in report.kept if option in r] == [("0", report.kept[0][2])]


class _Tagger(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(6, 8, num_layers=2)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.lstm(x)[0])


@pytest.mark.parametrize("method, layer", [({"name": "s3", "bits": 3}, ShiftLinear),
                                           ({"name": "uniform", "bits": 4}, UniformLinear)])
def test_linear_converters_convert_the_gate_maps_as_inner_layers(method, layer):
    model, report = ec.convert(_Tagger(), method, return_report=True)
    assert isinstance(model.lstm, GateLSTM)
    assert [type(m) for m in (*model.lstm.ih, *model.lstm.hh)] == [layer] * 4
    assert ("lstm", "LSTM", "GateLSTM") in report.converted
    assert type(model.head) is nn.Linear  # the first/last policy sees the head, not the gates
    kept = ec.convert(_Tagger(), {**method, "exclude": ["lstm"]})
    assert type(kept.lstm) is nn.LSTM
    only = ec.convert(_Tagger(), {**method, "include": ["lstm"], "keep_first_last": False})
    assert isinstance(only.lstm, GateLSTM) and type(only.head) is nn.Linear
    with pytest.raises(ConversionError, match=r"'bnn' cannot convert: lstm \(LSTM\)"):
        ec.convert(_Tagger(), "bnn", include=["lstm"])  # binary layers do not take LSTMs
