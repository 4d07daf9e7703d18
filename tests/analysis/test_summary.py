"""Model summary: every count checked against a hand count written as arithmetic."""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from edgecompress import summary
from edgecompress.errors import EdgecompressError
from edgecompress.layers import CompressedLayer

SNAPSHOT = Path(__file__).parent / "snapshots" / "summary_small.txt"


def small_convnet() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=2), nn.Flatten(),
        nn.Linear(16 * 4 * 4, 10),
    )


def by_name(s, name):
    return next(layer for layer in s.layers if layer.name == name)


def test_small_convnet_hand_counts():
    s = summary(small_convnet(), (1, 8, 8))
    conv1, bn, conv2, fc = (by_name(s, n) for n in ("0", "1", "3", "5"))
    assert conv1.params == 8 * 1 * 3 * 3 + 8
    assert conv1.macs_by_precision == {"w32a32": (8 * 8 * 8) * (1 * 3 * 3)}
    assert bn.params == 2 * 8 and bn.macs_by_precision == {}
    assert conv2.params == 16 * (8 // 2) * 3 * 3 + 16
    assert conv2.macs_by_precision == {"w32a32": (16 * 4 * 4) * (8 // 2) * 3 * 3}
    assert fc.params == 256 * 10 + 10 and fc.macs_by_precision == {"w32a32": 256 * 10}
    assert s.total_params == sum(p.numel() for p in small_convnet().parameters())
    assert s.total_macs == 8 * 8 * 8 * 9 + 16 * 4 * 4 * 4 * 9 + 256 * 10
    assert s.bytes == s.float32_bytes == 4 * s.total_params and s.compression_ratio == 1.0
    assert conv2.output_shape == (1, 16, 4, 4)


def test_mlp_hand_counts_and_batch_independence():
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
    for batch in (1, 5):
        s = summary(mlp, (1, 28, 28), batch_size=batch)
        assert s.total_params == 784 * 256 + 256 + 256 * 10 + 10
        assert s.macs_by_precision == {"w32a32": 784 * 256 + 256 * 10}


def test_linear_on_token_sequences_counts_every_token():
    s = summary(nn.Linear(16, 32), (7, 16))
    assert s.total_macs == 7 * 16 * 32


def test_lstm_hand_counts():
    lstm = nn.LSTM(input_size=10, hidden_size=20, num_layers=2)
    s = summary(lstm, input=torch.zeros(5, 1, 10))  # (T, B, F), sequence first
    layer0 = 4 * 20 * 10 + 4 * 20 * 20 + 2 * 4 * 20
    layer1 = 4 * 20 * 20 + 4 * 20 * 20 + 2 * 4 * 20
    assert s.total_params == layer0 + layer1
    assert s.total_macs == 5 * (4 * 20 * (10 + 20) + 4 * 20 * (20 + 20))
    bi = nn.LSTM(10, 20, num_layers=1, bidirectional=True, batch_first=True)
    s = summary(bi, (5, 10))
    assert s.total_macs == 5 * 2 * 4 * 20 * (10 + 20)


def test_multihead_attention_hand_counts():
    mha = nn.MultiheadAttention(embed_dim=16, num_heads=4, batch_first=True)

    class SelfAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.mha = mha

        def forward(self, x):
            return self.mha(x, x, x)[0]

    s = summary(SelfAttention(), (6, 16))
    L = S = 6
    E = 16
    projections = L * E * E + S * E * E + S * E * E + L * E * E
    assert s.total_macs == projections + L * S * E + L * S * E
    assert s.total_params == 3 * E * E + 3 * E + E * E + E


class FakeBinaryLinear(nn.Linear, CompressedLayer):
    weight_bits = 1
    input_bits = 1


def test_compressed_layer_precision_bytes_and_ratio():
    model = nn.Sequential(FakeBinaryLinear(64, 32), nn.Linear(32, 10))
    s = summary(model, (64,))
    assert s.params_by_bits == {1: 64 * 32, 32: 32 + 32 * 10 + 10}
    packed = 64 * 32 / 8 + 4 * (32 + 32 * 10 + 10)
    assert s.bytes == packed
    assert s.compression_ratio == pytest.approx(4 * (64 * 32 + 32 + 330) / packed)
    assert s.macs_by_precision == {"w1a1": 64 * 32, "w32a32": 32 * 10}


class Custom(nn.Module):
    """Uses the extension protocol; its child must not be counted twice."""

    def __init__(self):
        super().__init__()
        self.inner = nn.Linear(4, 4)

    def forward(self, x):
        return self.inner(x)

    def edgecompress_macs(self, inputs, output):
        return {"w3a32": 123}

    def edgecompress_params(self):
        return {3: 20}


def test_extension_protocol():
    s = summary(nn.Sequential(Custom(), nn.Linear(4, 2)), (4,))
    assert s.macs_by_precision == {"w3a32": 123, "w32a32": 8}
    assert s.params_by_bits == {3: 20, 32: 10}


def test_to_dict_is_json_and_consistent_with_the_table():
    s = summary(small_convnet(), (1, 8, 8))
    d = json.loads(json.dumps(s.to_dict()))
    assert d["total_params"] == s.total_params and d["total_macs"] == s.total_macs
    assert [layer["name"] for layer in d["layers"]] == [layer.name for layer in s.layers]
    assert f"{s.total_params:,}" in str(s) and f"{s.total_macs:,}" in str(s)


def _four_layers() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 6), nn.Linear(6, 5), nn.Linear(5, 4), nn.Linear(4, 3))


@pytest.mark.parametrize("method, options, kind, precision", [
    ("bnn", {"mode": "w1a32"}, "add", "w1a32"),
    ("bnn", {"mode": "w1a1"}, "xnor-popcount", "w1a1"),
    ("deepshift-q", {"bits": 4}, "shift-add", "w4a32"),
    ("euclid", {}, "squared-diff", "w32a32"),
    ("euclid", {"theta": 0.5}, "mac", "w32a32"),  # the homotopy's blend still multiplies
    ("adder", {}, "abs-diff", "w32a32"),
])
def test_each_layer_family_counts_its_operation_kind(method, options, kind, precision):
    import edgecompress as ec

    model = ec.convert(_four_layers(), method, keep_first_last=False, **options)
    s = summary(model, (8,))
    macs = 8 * 6 + 6 * 5 + 5 * 4 + 4 * 3
    assert [layer.ops_by_kind for layer in s.layers] == [
        {kind: 8 * 6}, {kind: 6 * 5}, {kind: 5 * 4}, {kind: 4 * 3}]
    assert s.ops_by_kind == {kind: macs} and s.macs_by_precision == {precision: macs}
    assert "mac" not in s.ops_by_kind or kind == "mac"  # no general multiplications left
    d = json.loads(json.dumps(s.to_dict()))
    assert d["ops_by_kind"] == {kind: macs} and d["layers"][0]["ops_by_kind"] == {kind: 48}
    assert f"Operations:        {kind}: {macs:,}" in str(s)


@pytest.mark.parametrize("distance, kind", [("euclid", "squared-diff"), ("adder", "abs-diff")])
def test_quantized_distance_layers_count_their_operation_kind_at_their_bits(distance, kind):
    import edgecompress as ec

    model = ec.convert(ec.convert(_four_layers(), distance, keep_first_last=False), "uniform",
                       bits=4, activation_bits=6, keep_first_last=False)
    s = summary(model, (8,))
    macs = 8 * 6 + 6 * 5 + 5 * 4 + 4 * 3
    assert s.ops_by_kind == {kind: macs} and s.macs_by_precision == {"w4a6": macs}
    assert s.params_by_bits[4] == macs


def test_kept_layers_and_products_in_forward_are_macs_beside_the_distance_kinds():
    import edgecompress as ec

    model = ec.convert(_four_layers(), "adder")  # the first and last layers are kept
    s = summary(model, (8,))
    assert s.ops_by_kind == {"mac": 8 * 6 + 4 * 3, "abs-diff": 6 * 5 + 5 * 4}
    assert [line.split()[2] for line in str(s).splitlines()[4:8]] == [
        "mac", "abs-diff", "abs-diff", "mac"]


def test_an_unknown_operation_kind_is_an_error_naming_the_layer_and_the_kinds():
    class Odd(nn.Linear):
        op_kind = "fma"

    with pytest.raises(EdgecompressError, match=r"Odd.op_kind is 'fma'; accepted kinds: mac, "
                       r"add, xnor-popcount, shift-add, squared-diff, abs-diff"):
        summary(Odd(3, 2), (3,))


def test_table_snapshot():
    text = str(summary(nn.Sequential(FakeBinaryLinear(64, 32), nn.BatchNorm1d(32),
                                     nn.Linear(32, 10)), (64,)))
    if os.environ.get("UPDATE_SNAPSHOTS"):
        SNAPSHOT.write_text(text + "\n")
    assert text + "\n" == SNAPSHOT.read_text(), (
        "summary table changed; if intended, regenerate with UPDATE_SNAPSHOTS=1 pytest "
        "tests/test_summary.py and review the diff")


def test_training_flag_restored_and_no_hooks_left():
    model = small_convnet().train()
    summary(model, (1, 8, 8))
    assert model.training
    assert all(not m._forward_hooks for m in model.modules())
    model.eval()
    summary(model, (1, 8, 8))
    assert not model.training


def test_bad_input_shape_names_shape_and_model():
    model = small_convnet()
    with pytest.raises(EdgecompressError, match=r"Sequential cannot run on an input of shape "
                                                r"\(1, 3, 8, 8\)"):
        summary(model, (3, 8, 8))
    assert all(not m._forward_hooks for m in model.modules())


# --- matrix products written by hand in forward() --------------------------------------------
# Shapes of the audit's example: T = 6 tokens of d = 16 features.
#   q, k, v and output projections: 4 x (T x d x d) = 4 x 6 x 16 x 16 = 6,144 MACs
#   q @ k^T: T x T x d = 6 x 6 x 16 = 576;  softmax(.) @ v: T x T x d = 576   -> 1,152 MACs
#   total 6,144 + 1,152 = 7,296 MACs per sample, all w32a32.
T, D = 6, 16
PROJECTIONS = 4 * T * D * D
ATTENTION = T * T * D + T * T * D
assert (PROJECTIONS, ATTENTION) == (6_144, 1_152)


def _attend(q, k, v, how):
    scale = 1 / D ** 0.5
    if how == "operator":
        return torch.softmax(q @ k.transpose(-2, -1) * scale, dim=-1) @ v
    if how == "matmul":
        return torch.matmul(torch.softmax(torch.matmul(q, k.transpose(-2, -1)) * scale, -1), v)
    if how == "bmm":
        return torch.bmm(torch.softmax(torch.bmm(q, k.transpose(1, 2)) * scale, -1), v)
    if how == "einsum":
        scores = torch.einsum("btd,bsd->bts", q, k) * scale
        return torch.einsum("bts,bsd->btd", torch.softmax(scores, -1), v)
    if how == "einsum-ellipsis":
        scores = torch.einsum("...td,...sd->...ts", q, k) * scale
        return torch.einsum("...ts,...sd->...td", torch.softmax(scores, -1), v)
    if how == "sdpa":
        return torch.nn.functional.scaled_dot_product_attention(q, k, v)
    if how == "sdpa-heads":  # 4 heads of 4 features: 4 x (T x T x 4) x 2 = the same 1,152
        b = q.shape[0]
        q, k, v = (t.reshape(b, T, 4, D // 4).transpose(1, 2) for t in (q, k, v))
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return out.transpose(1, 2).reshape(b, T, D)
    raise AssertionError(how)


class HandAttention(nn.Module):
    """Self-attention with Linear projections and the attention written by hand."""

    def __init__(self, how="operator"):
        super().__init__()
        self.how = how
        self.q, self.k, self.v, self.out = (nn.Linear(D, D) for _ in range(4))

    def forward(self, x):
        return self.out(_attend(self.q(x), self.k(x), self.v(x), self.how))


@pytest.mark.parametrize("how", ["operator", "matmul", "bmm", "einsum", "einsum-ellipsis",
                                 "sdpa", "sdpa-heads"])
@pytest.mark.parametrize("batch", [1, 3])
def test_hand_written_attention_matmuls_are_counted(how, batch):
    s = summary(HandAttention(how), (T, D), batch_size=batch)
    assert s.macs_by_precision == {"w32a32": PROJECTIONS + ATTENTION}
    assert s.total_macs == 7_296
    own = by_name(s, "HandAttention (own ops)")  # charged to the module whose forward wrote them
    assert own.macs_by_precision == {"w32a32": ATTENTION} and own.params == 0
    assert own.output_shape == (batch, T, D)
    assert [by_name(s, n).macs_by_precision for n in "qkv"] == [{"w32a32": T * D * D}] * 3
    assert s.total_params == 4 * (D * D + D)


def test_matmul_is_charged_to_the_innermost_module():
    class Gram(nn.Module):  # a leaf without parameters: x x^T
        def forward(self, x):
            return x @ x.transpose(-2, -1)

    class Block(nn.Module):  # a container with its own parameter and a product of its own
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(D))
            self.attn = HandAttention()
            self.gram = Gram()

        def forward(self, x):
            y = self.attn(x) * self.scale
            return self.gram(torch.matmul(y, y.transpose(-2, -1)) @ y)

    s = summary(nn.Sequential(Block()), (T, D))
    assert by_name(s, "0 (own parameters and ops)").macs_by_precision == {
        "w32a32": T * T * D + T * T * D}  # y y^T, then (T x T) @ (T x D)
    assert by_name(s, "0 (own parameters and ops)").params == D
    assert by_name(s, "0.attn (own ops)").macs_by_precision == {"w32a32": ATTENTION}
    assert by_name(s, "0.gram").macs_by_precision == {"w32a32": T * T * D}
    assert s.total_macs == PROJECTIONS + ATTENTION + 2 * T * T * D + T * T * D


def test_functional_linear_with_own_weight_is_counted_once():
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(8, D))
            self.inner = nn.Linear(8, 4)

        def forward(self, x):
            return self.inner(torch.nn.functional.linear(x, self.weight))

    s = summary(Functional(), (T, D))
    assert by_name(s, "Functional (own parameters and ops)").macs_by_precision == {
        "w32a32": T * 8 * D}
    assert s.total_macs == T * 8 * D + T * 4 * 8  # nn.Linear's F.linear is not counted again


class MatmulBinaryLinear(nn.Linear, CompressedLayer):
    """A compressed layer whose forward writes its product with @: counted once, at w1a1."""

    weight_bits = 1
    input_bits = 1

    def forward(self, x):
        return x @ self.weight.t() + self.bias


def test_products_inside_self_counting_layers_are_not_counted_again():
    s = summary(nn.Sequential(MatmulBinaryLinear(D, 4), Custom()), (D,))
    assert s.macs_by_precision == {"w1a1": D * 4, "w3a32": 123}


@pytest.mark.parametrize("need_weights", [True, False])
@pytest.mark.parametrize("cross", [False, True])
def test_multihead_attention_internal_matmuls_not_double_counted(need_weights, cross):
    """nn.MultiheadAttention is counted by its own rule; its bmm / baddbmm /
    scaled_dot_product_attention calls (slow path, taken during the summary) are inside
    it and must not be added again."""
    source = 9

    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            self.mha = nn.MultiheadAttention(D, 4, batch_first=True)
            self.memory = nn.Parameter(torch.randn(1, source, D))

        def forward(self, x):
            kv = self.memory.expand(x.shape[0], -1, -1) if cross else x
            return self.mha(x, kv, kv, need_weights=need_weights)[0]

    s = summary(Attn(), (T, D), batch_size=2)
    S = source if cross else T
    hand = T * D * D + S * D * D + S * D * D + T * D * D + T * S * D + T * S * D
    assert s.macs_by_precision == {"w32a32": hand}


def test_transformer_encoder_layer_hand_count():
    """eval + no_grad would normally take torch's fused fast path, which never calls the
    submodules; the summary sees every layer."""
    layer = nn.TransformerEncoderLayer(d_model=D, nhead=4, dim_feedforward=32, batch_first=True)
    layer.eval()
    s = summary(layer, (T, D))
    attention = 4 * T * D * D + 2 * T * T * D  # = 7,296 as above
    feedforward = T * D * 32 + T * 32 * D
    assert s.macs_by_precision == {"w32a32": attention + feedforward}
    assert s.total_macs == 7_296 + 6_144


def test_einsum_counting_rules():
    _einsum_macs = importlib.import_module("edgecompress.analysis.summary")._einsum_macs

    a, b, c = torch.zeros(2, 3), torch.zeros(3, 4), torch.zeros(4, 5)
    out = torch.zeros(())
    assert _einsum_macs(("ij,jk->ik", a, b), {}, out) == 2 * 3 * 4
    assert _einsum_macs(("ij,jk", [a, b]), {}, out) == 2 * 3 * 4  # implicit output, list form
    # left to right: (ij,jk -> ik) then (ik,kl -> il)
    assert _einsum_macs(("ij,jk,kl->il", a, b, c), {}, out) == 2 * 3 * 4 + 2 * 4 * 5
    assert _einsum_macs(("ij->ji", a), {}, out) == 0  # no product
    assert _einsum_macs(("ij,ij->ij", a, a), {}, out) == 0  # element-wise, like a * b
    x, y = torch.zeros(7, 2, 3), torch.zeros(3, 4)
    assert _einsum_macs(("...ij,jk->...ik", x, y), {}, out) == 7 * 2 * 3 * 4
    assert _einsum_macs((a, [0, 1], b, [1, 2]), {}, out) is None  # sublist form: not understood


def test_einsum_sublist_form_is_counted():
    class Sublist(nn.Module):  # torch turns the sublists into the equation "ABC,ADC->ABD"
        def forward(self, x):
            return torch.einsum(x, [0, 1, 2], x, [0, 3, 2], [0, 1, 3])

    assert summary(Sublist(), (T, D), batch_size=2).macs_by_precision == {"w32a32": T * T * D}


def test_einsum_call_not_understood_warns_instead_of_miscounting(monkeypatch):
    summary_module = importlib.import_module("edgecompress.analysis.summary")

    monkeypatch.setitem(summary_module._MATMUL_RULES, torch.einsum, lambda a, k, r: None)
    with pytest.warns(UserWarning, match="einsum call not understood"):
        s = summary(HandAttention("einsum"), (T, D))
    assert s.total_macs == PROJECTIONS


def test_matmul_counting_ends_with_the_summary():
    model = HandAttention()
    summary(model, (T, D))
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())
    assert torch._C._len_torch_function_stack() == 0
    with pytest.raises(EdgecompressError):
        summary(model, (T, D + 1))
    assert torch._C._len_torch_function_stack() == 0
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())


def test_tied_weights_are_counted_once():
    from edgecompress import models

    tied = models.create("lstm-lm", num_classes=50, embed_dim=16, hidden=16, layers=1,
                            tie_weights=True)
    untied = models.create("lstm-lm", num_classes=50, embed_dim=16, hidden=16, layers=1)
    real = sum(p.numel() for p in tied.parameters())  # parameters() yields a shared one once
    shape, dtype = (4,), torch.int64
    assert summary(tied, shape, dtype=dtype).total_params == real
    assert summary(untied, shape, dtype=dtype).total_params == real + 50 * 16
