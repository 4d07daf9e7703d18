"""Frozen LSTMs whose gate maps a layer method quantized: a plain nn.LSTM converted by shift /
uniform (a GateLSTM) and a TT-LSTM whose dense side a later method converted. Each trains, and
freezes with its quantized maps packed: the low-bit GEMM at <= 16 rows per call (the kernel sums
in another order: equal to float rounding), torch on the decoded weights above; the file keeps
them; the summary counts them at their width."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import edgecompress as ec
from edgecompress import deploy, kernels
from edgecompress.deploy import PackedGateLSTM, PackedShiftLinear, PackedTTLinear, PackedTTLSTM
from edgecompress.deploy import PackedUniformLinear
from edgecompress.errors import ConversionError
from edgecompress.layers import TTLSTM, GateLSTM

INPUT, HIDDEN, LAYERS, STEPS = 6, 8, 2, 5


class Tagger(nn.Module):
    """An LSTM and a per-step head (kept float by the first/last policy)."""

    def __init__(self, lstm: nn.Module) -> None:
        super().__init__()
        self.lstm, self.head = lstm, nn.Linear(HIDDEN, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.lstm(x)[0])


def shift_lstm() -> nn.Module:
    return ec.convert(Tagger(nn.LSTM(INPUT, HIDDEN, LAYERS)), "s3", bits=3)


def uniform_lstm() -> nn.Module:
    return ec.convert(Tagger(nn.LSTM(INPUT, HIDDEN, LAYERS)), "uniform", bits=4,
                      activation_bits=None)


def test_uniform_gives_an_lstms_gate_maps_signed_inputs_and_other_layers_the_option():
    torch.manual_seed(0)
    # first and last layers kept float by the policy: "mid" and the LSTM convert
    converted = ec.convert(nn.ModuleDict({"pre": nn.Linear(INPUT, INPUT), "mid": nn.Linear(
        INPUT, INPUT), "lstm": nn.LSTM(INPUT, HIDDEN, LAYERS), "post": nn.Linear(HIDDEN, 3)}),
        "uniform", bits=4)  # activation_signed=False, the default (inputs after a ReLU)
    gates = [*converted["lstm"].ih, *converted["lstm"].hh]
    assert len(gates) == 2 * LAYERS and all(m.input_quantizer.signed for m in gates)
    assert converted["mid"].input_quantizer.signed is False
    x = -0.5 - torch.rand(STEPS, 2, INPUT)  # all negative: unsigned would give zeros
    gates[0].train()
    assert gates[0].input_quantizer(x).lt(0).all()


def tt_shift_lstm() -> nn.Module:
    """TT input maps; the dense hidden maps made 3-bit shift by a later method."""
    tt = TTLSTM(INPUT, HIDDEN, LAYERS, ranks=2, which="input")
    return ec.convert(Tagger(tt), "s3", bits=3, include=["lstm.hh.*"])


CASES = {"shift": (shift_lstm, PackedGateLSTM, PackedShiftLinear, 3),
         "uniform": (uniform_lstm, PackedGateLSTM, PackedUniformLinear, 4),
         "tt-input+shift": (tt_shift_lstm, PackedTTLSTM, PackedShiftLinear, 3)}


def trained(make) -> nn.Module:
    """One training step: the quantized maps' latent weights get gradients and move."""
    torch.manual_seed(0)
    model = make()
    quantized = [m for m in (*model.lstm.ih, *model.lstm.hh) if hasattr(m, "weight_bits")]
    before = [[p.detach().clone() for p in m.parameters()] for m in quantized]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model(torch.randn(STEPS, 4, INPUT)).square().mean().backward()
    for m in quantized:
        latent = [p for n, p in m.named_parameters() if n != "bias"]
        assert latent and all(p.grad is not None and p.grad.abs().sum() > 0 for p in latent)
    optimizer.step()
    assert any(not torch.equal(p, q) for m, old in zip(quantized, before)
               for p, q in zip(m.parameters(), old))
    return model.eval()


@pytest.fixture
def gemm_calls(monkeypatch):
    """Counts the low-bit GEMM's calls."""
    calls = []
    real = kernels.lowbit_gemm

    def counting(*args, **kwargs):
        calls.append(args[0].shape[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(kernels, "lowbit_gemm", counting)
    return calls


@pytest.mark.skipif(not kernels.available(), reason="the C kernels are not built")
@pytest.mark.parametrize("case", CASES)
def test_frozen_quantized_lstm_equals_its_training_form(case, gemm_calls, tmp_path):
    make, lstm_type, map_type, bits = CASES[case]
    model = trained(make)
    frozen = deploy.freeze(model)
    assert type(frozen.lstm) is lstm_type
    assert all(type(m) is map_type for m in frozen.lstm.hh)
    assert frozen.lstm.fused_weights(STEPS, 3) is None  # quantized maps run their own forward
    if case.startswith("tt"):
        assert all(type(m) is PackedTTLinear for m in frozen.lstm.ih)
    deploy.save(frozen, tmp_path / "lstm.safetensors")
    loaded = deploy.load(tmp_path / "lstm.safetensors")
    for batch, kernel in ((1, True), (3, True), (20, False)):
        x = torch.randn(STEPS, batch, INPUT)
        gemm_calls.clear()
        with torch.no_grad():
            out, ref = frozen(x), model(x)
        # the hh maps run on the batch's rows at every step: the kernel at <= 16 rows
        assert (len(gemm_calls) >= LAYERS * STEPS) == kernel
        assert all(rows <= 16 for rows in gemm_calls)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        assert torch.equal(loaded(x), out)
    gates = sum(m.in_features * m.out_features for m in (*model.lstm.ih, *model.lstm.hh)
                if hasattr(m, "weight_bits"))
    profile = ec.summary(frozen, input=torch.zeros(STEPS, 2, INPUT), batch_size=2)
    assert profile.params_by_bits[bits] == gates
    assert profile.macs_by_precision[f"w{bits}a32"] == STEPS * gates  # one product per weight
    training = ec.summary(model, input=torch.zeros(STEPS, 2, INPUT), batch_size=2)
    assert training.params_by_bits[bits] == gates
    assert training.macs_by_precision[f"w{bits}a32"] == STEPS * gates


def test_a_gate_map_without_packed_form_is_refused():
    lstm = GateLSTM(INPUT, HIDDEN)
    lstm.hh[0] = nn.Sequential(nn.Linear(HIDDEN, 4 * HIDDEN))
    with pytest.raises(ConversionError, match="gate map hh.0 is a Sequential, which has no "
                                              "packed form"):
        deploy.freeze(Tagger(lstm))


def test_a_float_gate_lstm_freezes_to_the_fused_kernel():
    """All maps float: as a frozen nn.LSTM, torch's fused kernel for sequences."""
    torch.manual_seed(0)
    lstm = nn.LSTM(INPUT, HIDDEN, LAYERS).eval()
    frozen = deploy.freeze(Tagger(GateLSTM.from_lstm(lstm)))
    assert all(type(m) is nn.Linear for m in (*frozen.lstm.ih, *frozen.lstm.hh))
    assert frozen.lstm.fused_weights(STEPS, 3) is not None
    x = torch.randn(STEPS, 3, INPUT)
    torch.testing.assert_close(frozen.lstm(x)[0], lstm(x)[0], rtol=1e-6, atol=1e-6)
