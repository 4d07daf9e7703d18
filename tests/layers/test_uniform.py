"""Uniform n-bit layers: convert (Linear, Conv2d, Euclid, adder), freeze exactly, save / load
with b bits per weight, the summary's precision, a recipe naming the method; the quantized
AdderNet's forward and gradients (AdderNet's rules on Q(w) and A(x), straight-through to w and
x)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import edgecompress as ec
from edgecompress import deploy, kernels
from edgecompress.errors import ConversionError, RecipeError
from edgecompress.layers import (AdderConv2d, AdderLinear, BinaryLinear, UniformAdderConv2d,
                                 UniformAdderLinear, UniformConv2d, UniformEuclidConv2d,
                                 UniformEuclidLinear, UniformLinear)
from edgecompress.layers.adder import DEFAULT_ETA
from edgecompress.quantizers.uniform import UniformActivationQuantizer, UniformWeightQuantizer
from edgecompress.recipe import Recipe

CHANNELS_LAST = torch.channels_last


@pytest.fixture
def float_linear_path(monkeypatch):
    """Frozen uniform linears on their decoded float path, which equals the training form bit for
    bit (the low-bit kernel equals it to float rounding: tests/deploy/test_lowbit_linear.py)."""
    monkeypatch.setattr(deploy.PackedUniformLinear, "LOWBIT_KERNEL_MAX_ROWS", 0)


@pytest.fixture
def float_conv_path(monkeypatch):
    """Frozen uniform convolutions on their float path, which equals the training form bit for
    bit (the integer kernel equals it to float rounding: tests/deploy/test_int8_conv.py)."""
    monkeypatch.setattr(deploy.PackedUniformConv2d, "integer_kernel", False)


def _convnet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return ec.models.create("convnet", width=0.25, input_shape=(3, 12, 12))


def _trained_once(model: nn.Module, shape: tuple[int, ...]) -> nn.Module:
    """One training-mode forward (sets LSQ steps and BatchNorm statistics), then eval."""
    model.train()
    with torch.no_grad():
        model(torch.randn(8, *shape))
    return model.eval()


SPECS = {
    "conv w8a8": {"name": "uniform"},
    "conv w4a4 calibrated signed": {"name": "uniform", "bits": 4, "activation_bits": 4,
                                    "activation_range": "calibrated",
                                    "activation_signed": True},
    "euclid w4a8": ["euclid", {"name": "uniform", "bits": 4}],
    "euclid w2 float inputs": ["euclid", {"name": "uniform", "bits": 2,
                                          "activation_bits": None}],
}


@pytest.mark.parametrize("spec", SPECS)
def test_convert_freeze_save_load_is_exact(spec, tmp_path, float_conv_path):
    """Without BatchNorm folding the frozen model computes exactly (torch.equal) what the
    eval-mode training form computes: codes * step are the same floats as the training form's
    Q(w), the input is quantized by the same expression, and the same torch kernels run on them
    (inputs channels-last, as the frozen model holds its activations). Folding reorders float
    rounding: close. The loaded model is exactly the saved one."""
    model = _trained_once(ec.convert(_convnet(), SPECS[spec]), (3, 12, 12))
    layers = [model.features[4], model.features[8]]
    euclid = isinstance(SPECS[spec], list)
    assert all(isinstance(m, UniformEuclidConv2d if euclid else UniformConv2d) for m in layers)
    x = torch.randn(4, 3, 12, 12).contiguous(memory_format=CHANNELS_LAST)
    exact = deploy.freeze(model, fold_batchnorm=False)
    frozen = deploy.freeze(model)
    path = tmp_path / "m.safetensors"
    deploy.save(frozen, path)
    loaded = deploy.load(path)
    with torch.no_grad():
        expected = model(x)
        assert torch.equal(exact(x), expected)
        torch.testing.assert_close(frozen(x), expected, rtol=1e-4, atol=1e-5)
        assert torch.equal(loaded(x), frozen(x))
    packed = loaded.get_submodule("features.8")  # by name: freeze removes fused ReLUs
    assert type(packed).__name__ == ("PackedUniformEuclidConv2d" if euclid
                                     else "PackedUniformConv2d")
    assert torch.equal(packed.discrete_weight(), model.features[8].discrete_weight())


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_linear_and_euclid_linear_layers_freeze_exactly_and_store_bits_per_weight(
        bits, tmp_path, float_linear_path):
    torch.manual_seed(bits)
    mlp = ec.models.create("mlp", hidden=(64, 64))
    for spec, kind in (({"name": "uniform", "bits": bits}, UniformLinear),
                       (["euclid", {"name": "uniform", "bits": bits}], UniformEuclidLinear)):
        model = _trained_once(ec.convert(mlp, spec), (1, 28, 28))
        inner = [m for m in model.modules() if isinstance(m, kind)]
        assert len(inner) == 1 and inner[0].weight_bits == bits
        frozen = deploy.freeze(model, fold_batchnorm=False)
        path = tmp_path / f"{kind.__name__}.safetensors"
        deploy.save(frozen, path)
        loaded = deploy.load(path)
        x = torch.rand(3, 1, 28, 28)
        with torch.no_grad():
            assert torch.equal(loaded(x), model(x))
        codes = loaded.get_submodule(next(n for n, m in model.named_modules() if m is inner[0]))
        assert codes.codes.dtype == torch.int8
        assert -2 ** (bits - 1) <= int(codes.codes.min()) and int(codes.codes.max()) < 2 ** (bits - 1)
        # the file holds the 64 x 64 codes at `bits` bits each
        from safetensors import safe_open
        with safe_open(str(path), "pt") as f:
            stored = {k: f.get_tensor(k) for k in f.keys() if k.endswith(".codes")}
        (stream,) = stored.values()
        assert stream.dtype == torch.uint8 and stream.numel() == 64 * 64 * bits // 8


def test_summary_counts_weights_and_macs_at_their_precision():
    model = _trained_once(ec.convert(_convnet(), ["euclid", {"name": "uniform", "bits": 4}]),
                          (3, 12, 12))
    for m in (model, deploy.freeze(model)):
        s = ec.summary(m, (3, 12, 12))
        assert s.params_by_bits[4] == 16 * 8 * 9 + 32 * 16 * 9
        assert set(s.macs_by_precision) == {"w32a32", "w4a8"}
        assert s.macs_by_precision["w4a8"] == 16 * 6 * 6 * 8 * 9 + 32 * 3 * 3 * 16 * 9


def test_what_is_converted_and_bad_options():
    model = _convnet()
    _, report = ec.convert(model, "uniform", return_report=True)
    assert [t for _, _, t in report.converted] == ["UniformConv2d", "UniformConv2d"]
    binary = ec.convert(model, "bnn", keep_first_last=False)
    again, report = ec.convert(binary, "uniform", return_report=True)
    assert not report.converted  # binary layers are nn.Linear / nn.Conv2d too: not taken
    mlp = ec.convert(ec.models.create("mlp", hidden=(16, 16)), "bnn")
    assert any(isinstance(m, BinaryLinear) for m in ec.convert(mlp, "uniform").modules())
    for options, message in [({"bits": 9}, r"bits must be an int in 2\.\.8, got 9"),
                             ({"bits": 1}, r"bits must be an int in 2\.\.8, got 1"),
                             ({"activation_bits": 16}, r"activation_bits must be an int in "
                                                       r"2\.\.8, got 16"),
                             ({"activation_range": "ema"}, r"activation_range must be one of"),
                             ({"bit": 4}, r"no option\(s\) \['bit'\]")]:
        with pytest.raises(ConversionError, match=message):
            ec.convert(model, "uniform", **options)


def test_freezing_an_uncalibrated_layer_is_an_error():
    model = ec.convert(_convnet(), "uniform", activation_range="calibrated").eval()
    with pytest.raises(ValueError, match="input quantizer's step was never set"):
        deploy.freeze(model)
    ec.quantizers.calibrate(model, [torch.randn(4, 3, 12, 12)])
    assert isinstance(deploy.freeze(model).get_submodule("features.4"), deploy.PackedUniformConv2d)


def test_a_recipe_names_the_method_trains_and_freezes(tmp_path):
    from edgecompress.experiment import load_trained, run

    steps = ["euclid", {"name": "uniform", "bits": 4, "activation_bits": 8}]
    recipe = Recipe.from_dict({
        "model": {"name": "mlp", "hidden": [32, 32]},
        "data": {"name": "mnist-bundled", "limit": 100},
        "method": steps, "optimizer": {"name": "adam", "lr": 0.01}, "epochs": 1,
        "batch_size": 50})
    with pytest.raises(RecipeError, match=r"'method\[0\].bit'.*'uniform': name, activation_bits"):
        Recipe.from_dict({**recipe.to_dict(), "method": [{"name": "uniform", "bit": 4}]})
    run(recipe, out_dir=tmp_path, progress=False)
    model, _ = load_trained(tmp_path / "checkpoint.pt")
    layer = model.layers[4]
    assert isinstance(layer, UniformEuclidLinear) and layer.input_quantizer.initialized
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(deploy.freeze(model.eval())(x), model(x))


# --- the quantized AdderNet ----------------------------------------------------------------------

F64 = torch.float64


def _quantized_adder(layer: nn.Module, bits: int, step: float) -> nn.Module:
    """``layer`` with b-bit weights and b-bit unsigned inputs of a learned step ``step`` (as if
    set by a first training batch)."""
    inputs = UniformActivationQuantizer(bits)
    quantized = UniformAdderLinear if isinstance(layer, AdderLinear) else UniformAdderConv2d
    new = quantized.from_layer(layer, weight_quantizer=UniformWeightQuantizer(bits),
                               input_quantizer=inputs)
    with torch.no_grad():
        new.input_quantizer.step.fill_(step)
        new.input_quantizer.initialized.fill_(True)
    return new


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_adder_layers_use_exactly_2_to_the_bits_weight_and_input_levels(bits):
    """Weights spread over each channel's range take all 2^b codes of [-2^(b-1), 2^(b-1) - 1]
    (and only those); inputs spread over [0, (2^b - 1) s] all 2^b levels k s, k in 0..2^b - 1."""
    layer = AdderLinear(1000, 3)
    with torch.no_grad():
        layer.weight.copy_(torch.linspace(-1, 1, 1000) * torch.tensor([[1.0], [0.5], [3.0]]))
    quantized = _quantized_adder(layer, bits, step=0.25)
    codes = quantized.discrete_weight()
    for channel in codes:
        assert sorted(channel.unique().tolist()) == list(range(-2 ** (bits - 1), 2 ** (bits - 1)))
    x = torch.linspace(-1, 0.25 * 2 ** bits + 1, 5000)
    levels = quantized.quantized_input(x).unique() / 0.25
    assert levels.tolist() == list(range(2 ** bits))


@pytest.mark.parametrize("layer", [
    AdderLinear(6, 4), AdderLinear(5, 3, bias=False, eta=None),
    AdderConv2d(3, 4, 3, padding=1), AdderConv2d(4, 6, 3, stride=2, groups=2, eta=None)])
def test_forward_is_the_adder_layer_on_the_quantized_weight_and_input(layer):
    """y = the float adder layer with weight Q(w) applied to A(x), in training and eval mode
    (the same forward path: the C kernels for a float32 3x3 convolution, cdist elsewhere)."""
    torch.manual_seed(0)
    quantized = _quantized_adder(layer, 4, step=0.2)
    assert quantized.op_kind == "abs-diff" and quantized.eta == layer.eta
    assert (quantized.weight_bits, quantized.input_bits) == (4, 4)
    linear = isinstance(layer, AdderLinear)
    x = 4 * (torch.rand(2, layer.in_features) if linear else torch.rand(2, layer.in_channels, 5, 5))
    with torch.no_grad():
        layer.weight.copy_(quantized.hard_weight())
        expected = layer(quantized.quantized_input(x))
        for training in (True, False):
            assert torch.equal(quantized.train(training)(x), expected)


@pytest.mark.parametrize("eta", [None, DEFAULT_ETA])
def test_gradients_are_addernets_rules_on_the_quantized_values_passed_straight_through(eta):
    """A tiny case by hand, 3-bit weights and inputs. Q(w): step max|w_j| / 4, codes in -4..3;
    A(x): step 0.5, codes in 0..7. dL/dw = AdderNet's full-precision sum_r g_rj (A(x)_r - Q(w)_j)
    (scaled by eta sqrt(k) / ||G||), straight through to w; dL/dx = sum_j g_rj
    HardTanh(Q(w)_j - A(x)_r) where x is inside A's range, 0 outside (below 0, above 3.5)."""
    layer = AdderLinear(3, 2, bias=False, eta=eta).double()
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.0, 2.5, 1.0], [1.0, -1.0, 0.25]]))
    quantized = _quantized_adder(layer, 3, step=0.5)
    qw = torch.tensor([[0.0, 1.875, 1.25],  # step 0.625, codes 0, 4 -> 3 (clamped), 1.6 -> 2
                       [0.75, -1.0, 0.25]], dtype=F64)  # step 0.25, codes 4 -> 3, -4, 1
    x = torch.tensor([[1.0, 2.2, -0.3], [0.5, 0.0, 4.0]], dtype=F64, requires_grad=True)
    a = torch.tensor([[1.0, 2.0, 0.0], [0.5, 0.0, 3.5]], dtype=F64)  # -0.3 -> 0, 4.0 -> 3.5
    inside = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]], dtype=F64)
    torch.testing.assert_close(quantized.hard_weight(), qw)
    y = quantized(x)
    torch.testing.assert_close(y, torch.stack([torch.stack([-(a[r] - qw[j]).abs().sum()
                                                            for j in range(2)])
                                               for r in range(2)]))
    g = torch.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=F64)
    (y * g).sum().backward()
    grad_w = torch.stack([sum(g[r, j] * (a[r] - qw[j]) for r in range(2)) for j in range(2)])
    if eta is not None:
        grad_w = eta * math.sqrt(grad_w.numel()) / grad_w.norm() * grad_w
    grad_x = torch.stack([sum(g[r, j] * (qw[j] - a[r]).clamp(-1, 1) for j in range(2))
                          for r in range(2)]) * inside
    torch.testing.assert_close(quantized.weight.grad, grad_w)
    torch.testing.assert_close(x.grad, grad_x)
    assert quantized.input_quantizer.step.grad is not None  # LSQ trains the input step


@pytest.mark.skipif(not kernels.available(), reason="the C kernels are not built")
def test_conv_gradients_are_the_adder_convs_on_the_quantized_values_on_the_kernel_path():
    """The quantized 3x3 convolution (float32: the C kernels) has the float adder convolution's
    gradients at w = Q(w), x = A(x), passed straight through (x's only inside A's range)."""
    torch.manual_seed(1)
    layer = AdderConv2d(3, 4, 3, stride=2, padding=1)
    quantized = _quantized_adder(layer, 4, step=0.1)
    x = (torch.rand(2, 3, 7, 7) * 2 - 0.2).requires_grad_()  # some below 0 and above 1.5
    a = quantized.quantized_input(x).detach().requires_grad_()
    inside = (x >= 0) & (x <= 15 * 0.1)
    assert 0 < int(inside.sum()) < x.numel()
    with torch.no_grad():
        layer.weight.copy_(quantized.hard_weight())
    g = torch.randn(2, 4, 4, 4)
    (quantized(x) * g).sum().backward()
    (layer(a) * g).sum().backward()
    torch.testing.assert_close(quantized.weight.grad, layer.weight.grad)
    torch.testing.assert_close(x.grad, a.grad * inside)
    torch.testing.assert_close(quantized.bias.grad, layer.bias.grad)


def test_bad_quantizers_and_bits_are_errors():
    with pytest.raises(ConversionError, match=r"bits must be an int in 2\.\.8, got 9"):
        ec.convert(_convnet(), ["adder", {"name": "uniform", "bits": 9}])
    with pytest.raises(ConversionError, match=r"activation_bits must be an int in 2\.\.8, got 1"):
        ec.convert(_convnet(), ["adder", {"name": "uniform", "activation_bits": 1}])
    with pytest.raises(ConversionError, match="weight_quantizer must be a UniformWeightQuantizer"):
        UniformAdderLinear.from_layer(AdderLinear(3, 2), weight_quantizer=nn.Identity())
