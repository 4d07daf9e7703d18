"""Packed distance layers (EuclidNet, AdderNet, and their uniform n-bit forms): freeze converts
them, BatchNorm stays, save / load round-trips exactly, the summary counts their operation kinds,
the frozen adder layers run the direct L1 kernel and equal the training form."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import edgecompress as ec
from edgecompress import deploy, kernels
from edgecompress.layers import (AdderConv2d, AdderLinear, EuclidConv2d, EuclidLinear,
                                 UniformAdderConv2d, UniformAdderLinear)

PACKED = {"euclid": (deploy.PackedEuclidConv2d, deploy.PackedEuclidLinear),
          "adder": (deploy.PackedAdderConv2d, deploy.PackedAdderLinear)}
KIND = {"euclid": "squared-diff", "adder": "abs-diff"}


def _converted(method: str, seed: int = 0) -> nn.Module:
    """A tiny convnet with every conv and linear a distance layer, BatchNorm statistics that a
    wrong fold would change, in eval mode."""
    torch.manual_seed(seed)
    model = ec.convert(ec.models.create("convnet", width=0.25), method, keep_first_last=False)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-1, 1), module.running_var.uniform_(0.5, 2)
    return model.eval()


@pytest.mark.parametrize("method", ["euclid", "adder"])
def test_freeze_packs_distance_layers_keeps_batchnorm_and_save_load_is_exact(method, tmp_path):
    model = _converted(method)
    frozen = deploy.freeze(model)
    conv_class, linear_class = PACKED[method]
    packed = [m for m in frozen.modules() if isinstance(m, (conv_class, linear_class))]
    assert len(packed) == 4 and isinstance(frozen.get_submodule("classifier"), linear_class)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in frozen.modules()) == \
        sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) > 0  # none folded
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        expected = model(x)
        if method == "euclid":  # the same expressions, ||w||^2 computed once
            assert torch.equal(deploy.freeze(model, fuse=False)(x), expected)
        torch.testing.assert_close(frozen(x), expected, rtol=1e-5, atol=1e-4)
        deploy.save(frozen, tmp_path / "m.safetensors")
        loaded = deploy.load(tmp_path / "m.safetensors")
        assert torch.equal(loaded(x), frozen(x))
    assert type(loaded.get_submodule("features.4")) is conv_class


@pytest.mark.parametrize("method", ["euclid", "adder"])
def test_summary_counts_frozen_distance_layers_by_their_operation_kind(method):
    model = _converted(method)
    trained, frozen = ec.summary(model, (1, 28, 28)), ec.summary(deploy.freeze(model),
                                                                 (1, 28, 28))
    assert frozen.ops_by_kind == trained.ops_by_kind
    assert set(frozen.ops_by_kind) == {KIND[method]}
    assert frozen.params_by_bits == trained.params_by_bits


def test_euclid_below_theta_one_is_counted_as_products_and_frozen_exactly():
    torch.manual_seed(0)
    layer = EuclidConv2d(3, 5, 3, padding="same", groups=1, theta=0.5).eval()
    frozen = deploy.freeze(nn.Sequential(layer))
    x = torch.randn(2, 3, 6, 6)
    assert torch.equal(frozen(x), layer(x))
    assert frozen[0].op_kind == "mac" and frozen[0].padding == (1, 1)


@pytest.mark.parametrize("stride, padding", [(1, 1), (2, 1), (1, 0), (2, 0)])
@pytest.mark.parametrize("n", [1, 3])
def test_frozen_adder_conv_runs_the_kernel_and_equals_the_training_layer(stride, padding, n):
    torch.manual_seed(n + stride)
    layer = AdderConv2d(7, 19, 3, stride=stride, padding=padding).eval()
    packed = deploy.PackedAdderConv2d.from_trained(layer)
    x = torch.randn(n, 7, 9, 8)
    with torch.no_grad():
        torch.testing.assert_close(packed(x), layer(x), rtol=1e-5, atol=1e-4)
        if kernels.available():  # the kernel's value, bit for bit
            assert torch.equal(packed(x), kernels.conv2d_direct(
                x, layer.weight, layer.bias, (stride, stride), (padding, padding), op="l1"))


def test_frozen_adder_conv_of_another_geometry_runs_the_torch_path():
    torch.manual_seed(1)
    layer = AdderConv2d(4, 6, (3, 2), dilation=(1, 2), groups=2, padding=1).eval()
    packed = deploy.freeze(nn.Sequential(layer))[0]
    x = torch.randn(2, 4, 7, 7)
    with torch.no_grad():
        assert torch.equal(packed(x), layer(x))


def test_frozen_adder_linear_equals_the_training_layer_for_any_leading_shape():
    torch.manual_seed(2)
    layer = AdderLinear(37, 13).eval()
    packed = deploy.PackedAdderLinear.from_trained(layer)
    for x in (torch.randn(37), torch.randn(5, 37), torch.randn(2, 3, 37)):
        with torch.no_grad():
            torch.testing.assert_close(packed(x), layer(x), rtol=1e-5, atol=1e-4)
    assert packed.op_kind == "abs-diff"


def test_padding_freeze_cannot_express_is_a_clear_error():
    for layer in (EuclidConv2d(2, 3, 3, padding=1, padding_mode="reflect"),
                  AdderConv2d(2, 3, 2, padding="same")):
        with pytest.raises(ValueError, match="cannot be frozen"):
            deploy.freeze(nn.Sequential(layer))
    assert isinstance(deploy.freeze(nn.Sequential(EuclidLinear(3, 2)))[0],
                      deploy.PackedEuclidLinear)


def test_frozen_quantized_euclid_keeps_batchnorm_and_counts_squared_differences():
    model = ec.convert(_converted("euclid"), ["euclid", {"name": "uniform", "bits": 4}])
    model.train()
    with torch.no_grad():
        model(torch.randn(8, 1, 28, 28))  # sets the LSQ steps
    model.eval()
    frozen = deploy.freeze(model)
    assert isinstance(frozen.get_submodule("features.4"), deploy.PackedUniformEuclidConv2d)
    count = lambda m: sum(isinstance(q, nn.BatchNorm2d) for q in m.modules())  # noqa: E731
    assert count(frozen) == count(model) > 0
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(frozen(x), model(x))
    assert set(ec.summary(frozen, (1, 28, 28)).ops_by_kind) == {"squared-diff"}


@pytest.mark.parametrize("bits", [4, 8])
def test_frozen_quantized_adder_stores_codes_keeps_batchnorm_and_equals_the_training_form(
        bits, tmp_path):
    """["adder", uniform b-bit] on every layer, frozen: the file holds each layer's integer
    codes as b bits per weight (no float weights), BatchNorm stays, the frozen model gives the
    eval-mode training form's output to float rounding (a bias-free convolution exactly: the
    same C kernel on the same decoded weights and quantized input) and the loaded model exactly
    the frozen one; the summary counts absolute differences at w<b>a8."""
    model = ec.convert(_converted("adder"), {"name": "uniform", "bits": bits,
                                             "keep_first_last": False})
    model.train()
    with torch.no_grad():
        model(torch.randn(8, 1, 28, 28))  # sets the LSQ steps
    model.eval()
    frozen = deploy.freeze(model)
    quantized = {n: m for n, m in model.named_modules()
                 if isinstance(m, (UniformAdderConv2d, UniformAdderLinear))}
    assert len(quantized) == 4
    packed_types = {n: type(frozen.get_submodule(n)) for n in quantized}
    assert packed_types == {"features.0": deploy.PackedUniformAdderConv2d,
                            "features.4": deploy.PackedUniformAdderConv2d,
                            "features.8": deploy.PackedUniformAdderConv2d,
                            "classifier": deploy.PackedUniformAdderLinear}
    count = lambda m: sum(isinstance(q, nn.BatchNorm2d) for q in m.modules())  # noqa: E731
    assert count(frozen) == count(model) > 0
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(frozen(x), model(x), rtol=1e-5, atol=1e-4)
        conv = model.features[4]
        assert conv.bias is None
        h = torch.rand(3, conv.in_channels, 14, 14) * 2
        assert torch.equal(frozen.get_submodule("features.4")(h), conv(h))
    path = tmp_path / "m.safetensors"
    deploy.save(frozen, path)
    loaded = deploy.load(path)
    with torch.no_grad():
        assert torch.equal(loaded(x), frozen(x))
    from safetensors import safe_open
    with safe_open(str(path), "pt") as f:
        stored = {k: f.get_tensor(k) for k in f.keys()}
    for name, layer in quantized.items():
        stream = next(v for k, v in stored.items() if k.endswith(f"{name}.codes"))
        assert stream.dtype == torch.uint8 and stream.numel() == layer.weight.numel() * bits // 8
        assert not any(k.endswith(f"{name}.weight") for k in stored)
        assert torch.equal(loaded.get_submodule(name).discrete_weight(), layer.discrete_weight())
    trained, summary = ec.summary(model, (1, 28, 28)), ec.summary(loaded, (1, 28, 28))
    assert summary.ops_by_kind == trained.ops_by_kind and set(summary.ops_by_kind) == {"abs-diff"}
    assert set(summary.macs_by_precision) == set(trained.macs_by_precision) == {f"w{bits}a8"}
    weights = sum(m.weight.numel() for m in quantized.values())
    assert summary.params_by_bits[bits] == trained.params_by_bits[bits] == weights


def test_frozen_quantized_adder_layers_with_bias_equal_the_training_layers_to_rounding():
    """A convolution with a bias (the kernel adds it inside) and a linear layer (the C kernel
    against the training form's cdist): equal to float rounding, for any leading shape."""
    torch.manual_seed(5)
    inner = [ec.convert(nn.Sequential(layer), {"name": "uniform", "bits": 8,
                                              "keep_first_last": False})[0]
             for layer in (AdderConv2d(4, 6, 3, padding=1), AdderLinear(37, 13))]
    for layer, x in zip(inner, (torch.rand(2, 4, 7, 7), torch.rand(5, 37))):
        layer.train()(x)  # sets the input step
        layer.eval()
    conv, linear = inner
    packed_conv = deploy.PackedUniformAdderConv2d.from_trained(conv)
    packed_linear = deploy.PackedUniformAdderLinear.from_trained(linear)
    with torch.no_grad():
        x = torch.rand(2, 4, 7, 7) * 3
        torch.testing.assert_close(packed_conv(x), conv(x), rtol=1e-5, atol=1e-4)
        for x in (torch.rand(37), torch.rand(5, 37), torch.rand(2, 3, 37)):
            torch.testing.assert_close(packed_linear(x), linear(x), rtol=1e-5, atol=1e-4)
    assert packed_linear.op_kind == packed_conv.op_kind == "abs-diff"
    assert not packed_conv.folds_affine and not packed_conv.onnx_exportable


@pytest.mark.parametrize("quantized", [False, True])
def test_frozen_euclid_conv_plans_give_the_training_layers_floats_on_every_call(quantized):
    """The frozen Euclid convolutions run a plan per input shape (made at the first call): every
    later call, in either layout, after a change of shape, thread count or layout, with a
    gradient asked for, after a deepcopy, and at theta = 0 equals the training layer's output
    bit for bit, and the plans are made (not silently skipped)."""
    torch.manual_seed(0)
    layer = nn.Sequential(EuclidConv2d(6, 5, 3, padding=1, stride=2, bias=True))
    if quantized:
        layer = ec.convert(layer, {"name": "uniform", "bits": 8, "keep_first_last": False})
        layer.train()
        with torch.no_grad():
            layer(torch.randn(4, 6, 9, 9))  # sets the LSQ steps
    layer.eval()
    frozen = deploy.freeze(layer)
    packed = [m for m in frozen.modules() if isinstance(m, (deploy.PackedEuclidConv2d,
                                                            deploy.PackedUniformEuclidConv2d))]
    assert len(packed) == 1
    plans = packed[0]._plans
    threads = torch.get_num_threads()
    inputs = [torch.randn(3, 6, 9, 9), torch.randn(3, 6, 9, 9),
              torch.randn(3, 6, 9, 9).contiguous(memory_format=torch.channels_last),
              torch.randn(1, 6, 8, 7), torch.randn(3, 6, 9, 9)]
    try:
        for i, x in enumerate(inputs):
            torch.set_num_threads(1 if i == 4 else threads)
            with torch.no_grad():
                assert torch.equal(frozen(x), layer(x)), i
            if kernels.available():
                assert x.shape in plans
        x = inputs[0].clone().requires_grad_()
        y = frozen(x)
        y.sum().backward()  # a gradient to x: euclid_conv2d's autograd node
        with torch.no_grad():
            assert torch.equal(y, layer(x)) and x.grad is not None
        copy = __import__("copy").deepcopy(frozen)
        assert [m._plans for m in copy.modules() if hasattr(m, "_plans")] == [{}]
        with torch.no_grad():
            assert torch.equal(copy(inputs[1]), layer(inputs[1]))
    finally:
        torch.set_num_threads(threads)
    if not quantized:
        zero = EuclidConv2d(6, 5, 3, padding=1, theta=0.0).eval()
        frozen_zero = deploy.freeze(nn.Sequential(zero))
        with torch.no_grad():
            assert torch.equal(frozen_zero(inputs[0]), zero(inputs[0]))
