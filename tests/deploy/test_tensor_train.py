"""Packed tensor-train layers: a frozen TT-LSTM language model equals its training form (exactly
with float cores, within the stated tolerance with 8-bit cores), saves and loads through
deploy.save / load, and the summary counts the stored cores at their width."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from torch import nn

import edgecompress as ec
from edgecompress import deploy
from edgecompress.deploy import PackedTTLinear, PackedTTLSTM
from edgecompress.deploy.tensor_train import core_error, dequantize_core, quantize_core
from edgecompress.errors import ConversionError
from edgecompress.layers import TTLSTM, TTLinear

TOKENS = torch.tensor([[3, 1, 4, 1, 5, 9, 2], [6, 5, 3, 5, 8, 9, 7]])


def tt_language_model(mode: str, which: str = "both") -> nn.Module:
    torch.manual_seed(0)
    model = ec.models.create("lstm-lm", num_classes=12, embed_dim=8, hidden=8, layers=2)
    model = ec.convert(model, "tt", ranks=3, mode=mode, which=which).eval()
    # as frozen models hold them: torch runs a dense Linear on a transposed 3-D input through
    # another kernel (last-bit differences) when its weight requires gradients
    return model.requires_grad_(False)


@pytest.mark.parametrize("mode", ["mps", "mpo"])
@pytest.mark.parametrize("which", ["both", "hidden"])
def test_frozen_tt_language_model_equals_training_form_and_round_trips(mode, which, tmp_path):
    model = tt_language_model(mode, which)
    frozen = deploy.freeze(model)
    assert isinstance(frozen.lstm, PackedTTLSTM)
    assert isinstance(frozen.lstm.hh[1], PackedTTLinear)
    assert isinstance(frozen.lstm.ih[0], PackedTTLinear if which == "both" else nn.Linear)
    path = tmp_path / "tt.safetensors"
    deploy.save(frozen, path)
    loaded = deploy.load(path)
    with torch.no_grad():
        expected, (h, c) = model(TOKENS)
        for candidate in (frozen, loaded):
            logits, (h2, c2) = candidate(TOKENS)
            assert torch.equal(logits, expected)
            assert torch.equal(h2, h) and torch.equal(c2, c)


@pytest.mark.parametrize("mode", ["mps", "mpo"])
def test_8bit_cores_stay_within_tolerance_and_shrink_the_file(mode, tmp_path):
    model = tt_language_model(mode)
    floats, eight = deploy.freeze(model), deploy.freeze(model, core_bits=8)
    assert eight.lstm.hh[0].core0.dtype == torch.int8
    deploy.save(floats, tmp_path / "f.safetensors")
    deploy.save(eight, tmp_path / "q.safetensors")
    loaded = deploy.load(tmp_path / "q.safetensors")
    with torch.no_grad():
        expected = model(TOKENS)[0]
        logits = eight(TOKENS)[0]
        assert torch.equal(loaded(TOKENS)[0], logits)
    # each core entry is off by at most half a step of its slice's scale (1/254 of its
    # largest value): the logits move by well under 1 % of their range
    assert not torch.equal(logits, expected)
    assert (logits - expected).abs().max() <= 0.01 * expected.abs().max()
    for trained, packed in zip(model.lstm.hh, eight.lstm.hh):
        assert 0 < core_error(trained, packed) < 0.02
    maps = (*model.lstm.ih, *model.lstm.hh)
    cores = sum(m.layout.params for m in maps)
    slices = sum(c.numel() // (c.shape[0] * c.shape[-1]) for m in maps for c in m.cores)
    biases = sum(m.bias.numel() for m in maps)
    assert stored_bytes(tmp_path / "f.safetensors", "lstm.") == 4 * (cores + biases)
    assert stored_bytes(tmp_path / "q.safetensors", "lstm.") == cores + 4 * (slices + biases)


def stored_bytes(path, prefix: str) -> int:
    """Bytes of the tensors under ``prefix`` in a safetensors file."""
    with safe_open(str(path), framework="pt") as f:
        return sum(f.get_tensor(k).nbytes for k in f.keys() if k.startswith(prefix))


def test_quantized_core_round_trip_is_within_half_a_step():
    torch.manual_seed(1)
    core = torch.randn(3, 5, 4)
    core[:, 2] = 0  # an all-zero slice keeps scale 1 and codes 0
    codes, scale = quantize_core(core)
    assert codes.dtype == torch.int8 and scale.shape == (5,) and scale[2] == 1
    assert codes.abs().max() == 127
    error = (dequantize_core(codes, scale) - core).abs()
    assert torch.all(error <= scale[None, :, None] / 2 + 1e-7)


def test_summary_counts_8bit_cores_and_float_scales():
    layer = TTLinear(16, 24, ((4, 4), (4, 6)), ranks=3, mode="mps")
    for bits, expected in ((None, {32: layer.layout.params + 24}),
                           (8, {8: layer.layout.params, 32: 24 + (4 + 4 + 4 + 6)})):
        packed = PackedTTLinear.from_trained(layer, core_bits=bits)
        assert packed.edgecompress_params() == expected
        profile = ec.summary(nn.Sequential(packed), (16,))
        assert profile.bytes == sum(b * n for b, n in expected.items()) / 8
        assert profile.total_macs == layer.macs(1)


def test_standalone_tt_linear_freezes_exactly_and_moves_devices_dtype_unchanged():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), TTLinear(12, 20, ranks=2), nn.ReLU(),
                          nn.Linear(20, 3)).eval()
    frozen = deploy.freeze(model)
    x = torch.randn(5, 6)
    with torch.no_grad():
        assert torch.equal(frozen(x), model(x))
        assert torch.equal(frozen.to("cpu")(x), model(x))


def test_bad_freeze_options_are_named():
    model = tt_language_model("mps")
    with pytest.raises(ConversionError, match="core_bits=4 .*accepted: None .* or 8"):
        deploy.freeze(model, core_bits=4)
    with pytest.raises(ConversionError, match=r"unknown option\(s\) \['bits'\].*core_bits"):
        deploy.freeze(model, bits=8)


def test_packed_lstm_keeps_the_training_form_interface():
    torch.manual_seed(3)
    lstm = TTLSTM(6, 8, num_layers=2, ranks=2, mode="mps").eval()
    packed = PackedTTLSTM.from_trained(lstm)
    x = torch.randn(4, 3, 6)
    state = (torch.randn(2, 3, 8), torch.randn(2, 3, 8))
    with torch.no_grad():
        for args in ((x,), (x, state), (x[:, 0],)):
            out, (h, c) = lstm(*args)
            out2, (h2, c2) = packed(*args)
            assert torch.equal(out, out2) and torch.equal(h, h2) and torch.equal(c, c2)


def test_dense_lstm_language_model_saves_and_loads(tmp_path):
    """The dense baseline's nn.LSTM is written by its constructor arguments (RNNBase's)."""
    torch.manual_seed(4)
    model = ec.models.create("lstm-lm", num_classes=12, embed_dim=8, hidden=8, layers=2)
    frozen = deploy.freeze(model.eval())
    deploy.save(frozen, tmp_path / "dense.safetensors")
    loaded = deploy.load(tmp_path / "dense.safetensors")
    assert isinstance(loaded.lstm, nn.LSTM) and loaded.lstm.num_layers == 2
    with torch.no_grad():
        assert torch.equal(loaded(TOKENS)[0], frozen(TOKENS)[0])
