"""Packed tensor-train layers: a frozen TTLinear / TT-LSTM language model equals its training
form (up to float rounding with float cores: the precontracted form sums in another order;
within the stated tolerance with 8-bit cores), for MPS and MPO at several ranks and
factorizations, before and after deploy.save / load, and the summary counts the stored cores at
their width and the multiply-adds the frozen form runs."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from torch import nn

import edgecompress as ec
from edgecompress import deploy
from edgecompress.deploy import PackedTTLinear, PackedTTLSTM
from edgecompress.deploy.lstm import FUSED_MIN_STEPS
from edgecompress.deploy.tensor_train import core_error, dequantize_core, quantize_core
from edgecompress.errors import ConversionError
from edgecompress.layers import TTLSTM, TTLinear

TOKENS = torch.tensor([[3, 1, 4, 1, 5, 9, 2], [6, 5, 3, 5, 8, 9, 7]])
#: frozen vs training outputs of whole models, relative to their largest value: float32
#: rounding of sums taken in another order (measured: at most 2e-7 on these models; one
#: TT product is bounded elementwise by :func:`rounding_bound`)
MODEL_RTOL = 1e-5


def assert_same_up_to_rounding(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=0,
                               atol=MODEL_RTOL * float(expected.abs().max()))


def rounding_bound(layer: TTLinear, x: torch.Tensor) -> torch.Tensor:
    """Elementwise bound on |frozen - training| for one TT product: each computes every
    output as sums of products of an x entry and one entry of each core, so each is off the
    exact value by at most gamma_K (|W|_abs |x| + |b|), gamma_K = K eps / (1 - K eps), with
    |W|_abs the TT of the absolute cores and K the longest chain of roundings, at most
    N + the core parameters + 1 (Higham, Accuracy and Stability of Numerical Algorithms, 3.5)."""
    eps = torch.finfo(torch.float32).eps
    k = layer.in_features + layer.layout.params + 1
    gamma = k * eps / (1 - k * eps)
    w_abs = layer.layout.dense([c.detach().abs() for c in layer.cores])
    return 2 * gamma * (x.abs() @ w_abs.T + layer.bias.detach().abs())


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
        logits, (h2, c2) = frozen(TOKENS)
        assert_same_up_to_rounding(logits, expected)
        assert_same_up_to_rounding(h2, h)
        assert_same_up_to_rounding(c2, c)
        logits3, (h3, c3) = loaded(TOKENS)  # the same stored cores give the same form
        assert torch.equal(logits3, logits) and torch.equal(h3, h2) and torch.equal(c3, c2)


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
        # the precontracted form: at batch 1 W itself (one product beats two on a layer this
        # small), from a few hundred rows x (16) @ L (16 x 3) @ R (3 x 24)
        assert profile.total_macs == packed.macs(1) == 16 * 24
        assert packed.macs(1000) == 1000 * (16 * 3 + 3 * 24)


def test_standalone_tt_linear_freezes_and_moves_devices_dtype_unchanged():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), TTLinear(12, 20, ranks=2), nn.ReLU(),
                          nn.Linear(20, 3)).eval()
    frozen = deploy.freeze(model)
    x = torch.randn(5, 6)
    with torch.no_grad():
        assert_same_up_to_rounding(frozen(x), model(x))
        assert torch.equal(frozen.to("cpu")(x), frozen(x))


# (in, out, factorization, ranks): balanced, ragged, prime sides, the PTB gate shape (automatic)
FROZEN_CASES = [(24, 30, ((4, 2, 3), (5, 6)), 3), (24, 30, ((2, 3, 4), (5, 1, 6)), [3, 5]),
                (30, 8, ((2, 3, 5), (2, 2, 2)), 2), (7, 11, ((7,), (11,)), 4),
                (200, 800, None, 4), (200, 800, None, 16)]


@pytest.mark.parametrize("mode", ["mps", "mpo"])
@pytest.mark.parametrize("case", FROZEN_CASES, ids=lambda c: f"{c[0]}x{c[1]}-{c[2]}-{c[3]}")
def test_frozen_tt_linear_equals_training_form_before_and_after_load(mode, case, tmp_path):
    n, m, fact, ranks = case
    if mode == "mps" and isinstance(ranks, list):
        ranks = 3  # the list is MPO's (two bonds)
    if mode == "mpo" and fact is not None and len(fact[0]) != len(fact[1]):
        fact = None
    torch.manual_seed(5)
    layer = TTLinear(n, m, fact, ranks=ranks, mode=mode).requires_grad_(False)
    model = deploy.freeze(nn.Sequential(layer).eval())
    frozen = model[0]
    assert isinstance(frozen, PackedTTLinear)
    deploy.save(model, tmp_path / "tt.safetensors")
    loaded = deploy.load(tmp_path / "tt.safetensors")  # the Sequential: this one layer
    # each plan held (one per range of batch sizes) at most W; below it at the PTB shape
    assert all(p.numel <= n * m for p in frozen.fast.plans)
    assert frozen.fast.numel < n * m or n * m < 1000 or (mode, ranks) == ("mpo", 16)
    with torch.no_grad():
        for batch in (1, 32):
            x = torch.randn(batch, n)
            expected = layer(x)
            y = frozen(x)
            assert torch.all((y - expected).abs() <= rounding_bound(layer, x))
            assert torch.equal(loaded(x), y)
        x = torch.randn(3, 4, n)  # leading dimensions
        assert torch.equal(frozen(x), frozen(x.reshape(-1, n)).reshape(3, 4, m))


def test_bad_freeze_options_are_named():
    model = tt_language_model("mps")
    with pytest.raises(ConversionError, match="core_bits=4 .*accepted: None .* or 8"):
        deploy.freeze(model, core_bits=4)
    with pytest.raises(ConversionError, match=r"unknown option\(s\) \['bits'\].*core_bits"):
        deploy.freeze(model, bits=8)


@pytest.mark.parametrize("mode, ranks, which, hidden, fused", [
    ("mps", 2, "both", 200, False), ("mps", 2, "both", 8, True), ("mpo", 4, "both", 200, True),
    ("mps", 10**6, "both", 8, True), ("mpo", 10**6, "hidden", 8, True)])
@pytest.mark.parametrize("batch_first", [False, True])
def test_packed_lstm_keeps_the_training_form_interface(mode, ranks, which, hidden, fused,
                                                        batch_first):
    """Step by step, or in torch's fused LSTM kernel on the dense matrices (sequences where
    that costs less: full rank, small layers, MPO at rank 4 where its plans save little; not
    MPS 200 at rank 2, 10x cheaper than W), the frozen LSTM computes what the training one
    does: batched or not, with or without a state; fused, it is nn.LSTM with those weights."""
    torch.manual_seed(3)
    lstm = TTLSTM(6, hidden, num_layers=2, batch_first=batch_first, ranks=ranks, mode=mode,
                  which=which).eval()
    packed = PackedTTLSTM.from_trained(lstm)
    assert (packed.fused_weights(FUSED_MIN_STEPS, 4) is not None) == fused
    assert packed.fused_weights(FUSED_MIN_STEPS - 1, 1) is None  # one token at a time
    x = torch.randn(4, FUSED_MIN_STEPS, 6)  # 4 rows, FUSED_MIN_STEPS steps either way
    state = (torch.randn(2, 4, hidden), torch.randn(2, 4, hidden))
    dense = nn.LSTM(6, hidden, 2, batch_first=batch_first).eval()
    with torch.no_grad():
        if fused:
            for name, w in zip(dense._flat_weights_names,
                               packed.fused_weights(FUSED_MIN_STEPS, 4)):
                getattr(dense, name).copy_(w)
        for args in ((x,), (x, state), (x[:, 0],), (x[:, 0], tuple(s[:, 0] for s in state))):
            out, (h, c) = lstm(*args)
            out2, (h2, c2) = packed(*args)
            for a, b in ((out2, out), (h2, h), (c2, c)):
                assert_same_up_to_rounding(a, b)
            if packed.fused_weights(FUSED_MIN_STEPS, 4 if args[0].dim() == 3 else 1):
                out3, (h3, c3) = dense(*args)
                for a, b in ((out2, out3), (h2, h3), (c2, c3)):
                    assert torch.equal(a, b)


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


def test_a_frozen_tt_lstm_config_of_the_older_form_still_builds():
    """Files written before the gate maps named their class hold a bare PackedTTLinear config
    per TT map (None for a dense one)."""
    torch.manual_seed(0)
    frozen = deploy.freeze(nn.Sequential(TTLSTM(6, 8, 1, ranks=2, which="input")))[0]
    config = frozen.config()
    old = {**config, "gates": [None if g is None else g["config"] for g in config["gates"]]}
    assert old["gates"][0] is not None and old["gates"][1] is None  # a TT map, a dense one
    rebuilt = PackedTTLSTM.from_config(old)
    rebuilt.load_state_dict(frozen.state_dict())
    x = torch.randn(5, 2, 6)
    with torch.no_grad():
        assert torch.equal(rebuilt(x)[0], frozen(x)[0])
