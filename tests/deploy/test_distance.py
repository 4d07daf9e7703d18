"""Packed distance layers (EuclidNet, AdderNet): freeze converts them, BatchNorm stays, save /
load round-trips exactly, the summary counts their operation kinds, the frozen adder layers run
the direct L1 kernel and equal the training form."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import edgecompress as ec
from edgecompress import deploy, kernels
from edgecompress.layers import AdderConv2d, AdderLinear, EuclidConv2d, EuclidLinear

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
