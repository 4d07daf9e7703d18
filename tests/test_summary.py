"""Model summary: every count checked against a hand count written as arithmetic."""

from __future__ import annotations

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
