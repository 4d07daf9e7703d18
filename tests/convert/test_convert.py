"""Binary layers, the sign quantizer pairs and edgecompress.convert."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgecompress import quantizers
from edgecompress.convert import available_methods, convert
from edgecompress.errors import ConversionError, UnknownNameError
from edgecompress.layers import BinaryConv2d, BinaryLinear


def small_net() -> nn.Sequential:
    """Hardtanh, not ReLU: W1A1 layers need signed inputs (see test_nonnegative.py)."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Hardtanh(),
        nn.Conv2d(4, 4, 3, padding=1), nn.Hardtanh(), nn.Flatten(),
        nn.Linear(4 * 6 * 6, 16), nn.Hardtanh(), nn.Linear(16, 3),
    )


def test_sign_maps_zero_to_plus_one():
    x = torch.tensor([-2.0, -0.0, 0.0, 1e-9, 3.0])
    assert quantizers.sign(x).tolist() == [-1.0, 1.0, 1.0, 1.0, 1.0]


@pytest.mark.parametrize("method, expected_grad", [
    ("bc", [1.0, 1.0, 1.0, 1.0, 1.0]),
    ("bnn", [0.0, 1.0, 1.0, 1.0, 0.0]),
])
def test_sign_pairs_forward_and_backward(method, expected_grad):
    q = quantizers.method_pair(method)
    x = torch.tensor([-1.5, -1.0, 0.0, 0.5, 2.0], requires_grad=True)
    y = q(x)
    assert y.tolist() == [-1.0, -1.0, 1.0, 1.0, 1.0]
    upstream = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    y.backward(upstream)
    assert torch.equal(x.grad, upstream * torch.tensor(expected_grad))


def test_unknown_quantizer_lists_valid_names():
    with pytest.raises(UnknownNameError, match="signswish"):
        quantizers.get("nope")


@pytest.mark.parametrize("scaling", ["none", "channel", "learnable"])
def test_binary_linear_matches_explicit_formula(scaling):
    torch.manual_seed(1)
    lin = nn.Linear(5, 3)
    layer = BinaryLinear.from_float(lin, weight_quantizer=quantizers.method_pair("bc"),
                                    scaling=scaling)
    x = torch.randn(4, 5)
    w = torch.where(lin.weight >= 0, 1.0, -1.0)
    if scaling != "none":
        w = w * lin.weight.abs().mean(dim=1, keepdim=True)
    torch.testing.assert_close(layer(x), x @ w.t() + lin.bias)
    torch.testing.assert_close(layer.hard_weight(), w)
    assert layer.weight_bits == 1 and layer.input_bits == 32


def test_binary_conv_w1a1_binarizes_inputs():
    torch.manual_seed(2)
    conv = nn.Conv2d(2, 3, 3, padding=1, bias=False)
    layer = BinaryConv2d.from_float(conv, weight_quantizer=quantizers.method_pair("bnn"),
                                    input_quantizer=quantizers.pair("sign", "clip"))
    x = torch.randn(2, 2, 5, 5)
    expected = nn.functional.conv2d(quantizers.sign(x), quantizers.sign(conv.weight), padding=1)
    torch.testing.assert_close(layer(x), expected)
    assert layer.input_bits == 1


def test_convert_keeps_first_and_last_layers_float_by_default():
    net = small_net()
    binary, report = convert(net, "bnn", return_report=True)
    assert type(binary[0]) is nn.Conv2d and type(binary[8]) is nn.Linear
    assert isinstance(binary[3], BinaryConv2d) and isinstance(binary[6], BinaryLinear)
    assert [n for n, _, _ in report.converted] == ["3", "6"]
    assert {n: r for n, _, r in report.kept} == {"0": "first layer", "8": "last layer"}
    assert type(net[3]) is nn.Conv2d, "convert must not modify its input unless inplace=True"


def test_convert_then_output_uses_sign_weights():
    net = small_net().eval()
    binary = convert(net, "bc", keep_first_last=False).eval()
    ref = small_net().eval()
    with torch.no_grad():
        for m in ref.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.copy_(quantizers.sign(m.weight))
    x = torch.randn(2, 1, 6, 6)
    torch.testing.assert_close(binary(x), ref(x))


def test_convert_include_exclude_rules():
    net = small_net()
    _, report = convert(net, "bnn", keep_first_last=False, exclude=[nn.Linear], return_report=True)
    assert [n for n, _, _ in report.converted] == ["0", "3"]
    _, report = convert(net, "bnn", keep_first_last=False, include=["6"], return_report=True)
    assert [n for n, _, _ in report.converted] == ["6"]


def test_convert_errors_name_the_problem():
    net = small_net()
    with pytest.raises(ConversionError, match=r"rule '1' matches only layers that method 'bnn' "
                       r"cannot convert: 1 \(BatchNorm2d\); it supports: Linear, Conv2d"):
        convert(net, "bnn", include=["1"])
    with pytest.raises(ConversionError, match=r"matches only layers .* 1 \(BatchNorm2d\)"):
        convert(net, "bnn", include=[nn.BatchNorm2d])
    with pytest.raises(ConversionError, match="matches no layer"):
        convert(net, "bnn", include=["encoder.*"])
    with pytest.raises(ConversionError, match="mode"):
        convert(net, "bnn", mode="w2a2")
    with pytest.raises(ConversionError, match="scaling"):
        convert(net, "bnn", scaling="max")
    with pytest.raises(ConversionError, match=r"bad option for method 'bnn': no option\(s\) "
                       r"\['colour'\]; valid: activation, backward, mode, prox, scaling$"):
        convert(net, "bnn", colour="red")
    with pytest.raises(ConversionError, match="activation must be one of"):
        convert(net, "bnn", mode="w1a1", activation="relu")
    with pytest.raises(UnknownNameError, match="bnn"):
        convert(net, "binarize-please")
    assert {"bc", "bnn", "bnn+", "binaryrelax", "proxquant", "pc", "bnn++"} <= set(
        available_methods())


def test_converted_model_state_dict_round_trip_and_training_step():
    net = convert(small_net(), "bnn", mode="w1a1", scaling="learnable")
    x, y = torch.randn(8, 1, 6, 6), torch.randint(0, 3, (8,))
    loss = nn.functional.cross_entropy(net(x), y)
    loss.backward()
    assert all(p.grad is not None for p in net.parameters())
    other = convert(small_net(), "bnn", mode="w1a1", scaling="learnable")
    other.load_state_dict(net.state_dict())
    net.eval(), other.eval()
    torch.testing.assert_close(net(x), other(x))


@pytest.mark.slow
def test_converted_model_under_torch_compile():
    net = convert(small_net(), "bnn", mode="w1a1").eval()
    x = torch.randn(3, 1, 6, 6)
    compiled = torch.compile(net)
    torch.testing.assert_close(compiled(x), net(x))


def test_unsupported_weighted_layers_are_reported_and_cannot_be_included():
    net = nn.Sequential(nn.Conv1d(2, 4, 3), nn.Flatten(), nn.Linear(16, 8), nn.Linear(8, 8),
                        nn.Linear(8, 3))
    out, report = convert(net, "bnn", return_report=True)
    kept = {name: reason for name, _, reason in report.kept}
    assert kept["0"] == "unsupported type: 'bnn' converts Linear, Conv2d"
    assert [name for name, _, _ in report.converted] == ["3"]
    assert isinstance(out[0], nn.Conv1d)
    with pytest.raises(ConversionError, match=r"matches only layers .* 0 \(Conv1d\)"):
        convert(net, "s3", include=[nn.Conv1d])
    assert "unsupported type" in str(report)


def test_multihead_attention_projection_stays_float_with_the_reason():
    """nn.MultiheadAttention reads out_proj.weight itself: a swapped layer would never run."""

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inp = nn.Linear(4, 8)
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
            self.mid = nn.Linear(8, 8)
            self.out = nn.Linear(8, 2)

        def forward(self, x):
            h = self.inp(x)
            return self.out(self.mid(self.attn(h, h, h)[0]))

    net, report = convert(Block(), "bnn", return_report=True)
    kept = {name: reason for name, _, reason in report.kept}
    assert kept["attn.out_proj"] == "weights used directly by its parent nn.MultiheadAttention"
    assert [name for name, _, _ in report.converted] == ["mid"]
    assert type(net.attn.out_proj) is nn.modules.linear.NonDynamicallyQuantizableLinear
    net(torch.randn(2, 5, 4))


def test_converted_latents_keep_the_float_models_dtype():
    net = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 2)).double()
    out = convert(net, "bnn++", mode="w1a1")
    assert out[1].weight.dtype == torch.float64
    torch.testing.assert_close(out[1].weight, net[1].weight)
    assert out(torch.randn(3, 4, dtype=torch.float64)).dtype == torch.float64


def test_methods_registered_by_other_packages_are_found_from_a_fresh_import():
    """l1-prune is registered by edgecompress.pruning, which imports convert: a program that
    imports only edgecompress.convert still finds it (the registry loads its providers)."""
    import subprocess
    import sys

    code = ("from edgecompress.convert import available_methods, convert\n"
            "from edgecompress import models\n"
            "assert 'l1-prune' in available_methods()\n"
            "convert(models.create('convnet', width=0.25), 'l1-prune', ratio=0.5)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
