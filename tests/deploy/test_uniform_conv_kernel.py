"""Frozen uniform convolutions with quantized inputs on the integer kernel (kernels.int8_conv)
against their float path.

The kernel sums the integer codes exactly and scales once per channel: acc * (weight step x
input step) + bias; the float path convolves the decoded weights (code x step) with the
fake-quantized input (code x input step) in torch's blocked float order. Both are the exact
product up to float rounding: with u = 2^-24, each differs from it by at most about
(K + 3) u (|q_x| |q_w| s_w s_x + |bias|) (K roundings of the float sums, the scaled weights and
inputs, the bias), so the tests hold the two paths to 2 (K + 3) u times that magnitude, and the
kernel path bit for bit to the kernel's reference.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import edgecompress as ec
from edgecompress import deploy, kernels
from edgecompress.deploy import PackedUniformConv2d
from edgecompress.quantizers import calibrate

needs_library = pytest.mark.skipif(not kernels.available(), reason="the C kernels are not built")


def _frozen(bits: int, signed: bool, seed: int, *, stride=1, padding=1, dilation=1,
            groups=1, batchnorm=True, input_bits: int | None = 8) -> tuple[nn.Module, nn.Module]:
    """A conv (+ BatchNorm) converted to ``bits``-bit weights and inputs, calibrated, and its
    frozen form (the BatchNorm folded into the layer's scale and bias)."""
    torch.manual_seed(seed)
    layers = [nn.Conv2d(6, 20, 3, stride, padding, dilation, groups)]
    if batchnorm:
        layers.append(nn.BatchNorm2d(20))
    model = ec.convert(nn.Sequential(*layers), "uniform", bits=bits, activation_bits=input_bits,
                       activation_signed=signed, activation_range="calibrated",
                       keep_first_last=False)
    if batchnorm:
        with torch.no_grad():
            model[1].running_mean.uniform_(-1, 1)
            model[1].running_var.uniform_(0.5, 2)
            model[1].weight.uniform_(0.5, 2)
    if input_bits is not None:
        calibrate(model, [_input(4, signed)])
    model.eval()
    return model, deploy.freeze(model)


def _input(n: int, signed: bool) -> torch.Tensor:
    """Inputs of the quantizer's sign: an unsigned one expects non-negative inputs."""
    return torch.randn(n, 6, 11, 11) if signed else torch.rand(n, 6, 11, 11)


def _bound(layer: PackedUniformConv2d, x: torch.Tensor) -> torch.Tensor:
    """2 (K + 3) u (|q_x| * |q_w| s_w s_x + |bias|): twice the rounding bound of either path."""
    codes = layer.codes.view(layer._weight_shape()).double().abs()
    qx = torch.round(x / layer.input_step).abs().double()
    magnitude = torch.nn.functional.conv2d(qx, codes, None, layer.stride, layer.padding,
                                           layer.dilation)
    magnitude = magnitude * (layer.scale * layer.input_step).abs().double().view(1, -1, 1, 1)
    if layer.bias is not None:
        magnitude = magnitude + layer.bias.abs().double().view(1, -1, 1, 1)
    return 2 * (layer.k + 3) * 2.0 ** -24 * magnitude


def _reference(layer: PackedUniformConv2d, x: torch.Tensor) -> torch.Tensor:
    from edgecompress.quantizers.uniform import code_range
    return kernels.int8_conv_reference(
        x, layer.codes.view(layer._weight_shape()), layer.stride, layer.padding, layer.dilation,
        layer.input_step, code_range(layer.activation_bits, layer.activation_signed),
        (layer.scale * layer.input_step).float(), layer.bias)


@needs_library
@pytest.mark.parametrize("bits, signed", [(8, True), (8, False), (4, True), (2, False)])
@pytest.mark.parametrize("geometry", [dict(), dict(stride=2, padding=0),
                                      dict(padding=2, dilation=2)])
def test_the_integer_path_equals_its_reference_and_the_float_path_to_rounding(
        bits, signed, geometry, monkeypatch):
    model, frozen = _frozen(bits, signed, seed=bits, **geometry)
    layer = frozen[0]
    assert isinstance(layer, PackedUniformConv2d) and layer.int8_panels is not None
    x = _input(3, signed)
    monkeypatch.setattr(PackedUniformConv2d, "integer_kernel", True)
    with torch.no_grad():
        integer = frozen(x)
        assert torch.equal(integer, _reference(layer, x))
        layer.integer_kernel = False
        floating = frozen(x)
        assert not torch.equal(integer, floating)  # the two paths are different computations
        assert ((integer - floating).abs().double() <= _bound(layer, x)).all()
        torch.testing.assert_close(floating, model(x), rtol=1e-4, atol=1e-5)  # folded BN


@needs_library
def test_auto_runs_the_kernel_where_it_multiplies_with_vnni(monkeypatch):
    _, frozen = _frozen(8, True, seed=0)
    layer, x = frozen[0], torch.randn(2, 6, 11, 11)
    calls = []
    real = kernels.int8_conv
    monkeypatch.setattr(kernels, "int8_conv", lambda *a, **k: calls.append(1) or real(*a, **k))
    with torch.no_grad():
        frozen(x)
    assert len(calls) == int(kernels.int8_conv_vnni())
    for mode, runs in (("auto", kernels.int8_conv_vnni()), (True, True), (False, False)):
        layer.integer_kernel = mode
        assert layer._runs_integer(x) == runs
    layer.integer_kernel = "yes"
    with pytest.raises(ValueError, match="integer_kernel must be"):
        frozen(x)


@needs_library
def test_when_the_float_path_runs_instead():
    """Float inputs (no input quantizer) and grouped convolutions have no integer form; an input
    that needs gradients, or another dtype, takes the float path."""
    assert _frozen(8, True, seed=1, input_bits=None)[1][0].int8_panels is None
    _, grouped = _frozen(8, True, seed=1, groups=2)
    assert grouped[0].int8_panels is None
    _, frozen = _frozen(8, True, seed=1)
    layer = frozen[0]
    layer.integer_kernel = True
    x = torch.randn(2, 6, 11, 11)
    assert layer._runs_integer(x)
    assert not layer._runs_integer(x.double())
    assert not layer._runs_integer(x.requires_grad_())
    layer.integer_kernel = False
    expected = frozen(x.detach())
    layer.integer_kernel = True
    assert torch.equal(frozen(x), expected)  # needs gradients: the float path


@needs_library
def test_save_load_compile_and_the_summary(tmp_path):
    _, frozen = _frozen(8, False, seed=2)
    frozen[0].integer_kernel = True
    x = _input(2, False)
    path = tmp_path / "m.safetensors"
    deploy.save(frozen, path)
    loaded = deploy.load(path)
    loaded.get_submodule("0").integer_kernel = True
    torch._dynamo.reset()
    with torch.no_grad():
        expected = frozen(x)
        assert torch.equal(loaded(x), expected)
        assert torch.equal(torch.compile(frozen, fullgraph=True)(x), expected)
    # the kernel's panels are derived state: not in the file, not counted as parameters
    assert not any(k.startswith("0.int8") for k in loaded.state_dict())
    assert frozen[0].edgecompress_params() == {8: 20 * 6 * 9, 32: 20 + 20 + 1}
