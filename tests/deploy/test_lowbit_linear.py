"""Frozen shift and uniform linear layers on the low-bit kernel (batch <= 16) against their
decoded float path.

The kernel sums over k in order and multiplies by the per-channel scale (a folded BatchNorm's, or
the uniform step) after the sum; torch's float linear sums in its own blocked order on the
scaled weights. Both are the exact product up to float rounding, bounded by the classic
recursive-summation bound: with u = 2^-24, |y - y_exact| <= (K + 3) u (|x| |W|^T |scale| +
|bias|) for either path, W the table values (powers of two, or the integer codes): at most
K + 2 roundings reach a term (its product, K - 1 additions, one bias addition, and the scale
product on the kernel path or the rounding of the scaled weights on the float path). The tests
hold both paths to that bound and the kernel path bit for bit to the kernel's reference.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgecompress import deploy, kernels
from edgecompress.deploy import PackedShiftLinear, PackedUniformLinear
from edgecompress.layers import ShiftLinear, UniformLinear
from edgecompress.quantizers.shift import PARAMETRIZATIONS
from edgecompress.quantizers.uniform import UniformActivationQuantizer, UniformWeightQuantizer

needs_library = pytest.mark.skipif(not kernels.available(), reason="the C kernels are not built")


def _frozen(method: str, bits: int, k: int, n: int, scaled: bool, seed: int) -> PackedShiftLinear:
    torch.manual_seed(seed)
    layer = deploy.freeze(nn.Sequential(ShiftLinear(k, n, method=method, bits=bits)))[0]
    if scaled:  # as freeze leaves a linear with a folded BatchNorm
        packed = PackedShiftLinear(k, n, method=method, bits=bits, has_scale=True)
        packed.load_state_dict({**layer.state_dict(), "scale": torch.rand(n) + 0.5})
        layer = packed
    return layer


def _frozen_uniform(bits: int, k: int, n: int, activation_bits: int | None, scaled: bool,
                    seed: int) -> PackedUniformLinear:
    """A frozen uniform linear (its input step set by one training-mode forward); ``scaled``:
    steps of any value, as freeze leaves a linear with a folded BatchNorm."""
    torch.manual_seed(seed)
    inputs = UniformActivationQuantizer(activation_bits) if activation_bits else None
    model = nn.Sequential(UniformLinear(k, n, weight_quantizer=UniformWeightQuantizer(bits),
                                        input_quantizer=inputs))
    with torch.no_grad():
        model.train()(torch.rand(8, k))
    layer = deploy.freeze(model.eval())[0]
    if scaled:
        layer.scale = torch.randn(n)
        layer.prepare()
    return layer


def _uniform_kernel_reference(layer: PackedUniformLinear, x: torch.Tensor) -> torch.Tensor:
    """The kernel's reference on the layer's quantized input: codes offset to be non-negative
    into the table of the integer code values, times the step."""
    half = 2 ** (layer.weight_bits - 1)
    table = torch.arange(-half, half, dtype=torch.float32)
    return kernels.lowbit_gemm_reference(layer._input(x), layer.codes.long() + half, table,
                                         layer.scale, layer.bias)


def _bound(layer: PackedShiftLinear | PackedUniformLinear,
           x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact output (float64) and the rounding bound of either path."""
    w = layer.discrete_weight().double()
    scale = layer.scale.double() if layer.scale is not None else torch.ones(w.shape[0]).double()
    bias = layer.bias.double() if layer.bias is not None else torch.zeros(w.shape[0]).double()
    exact = x.double() @ (w * scale[:, None]).T + bias
    gamma = (x.shape[1] + 3) * 2.0 ** -24
    return exact, gamma * ((x.double().abs() @ w.abs().T) * scale.abs() + bias.abs())


@needs_library
@pytest.mark.parametrize("method", list(PARAMETRIZATIONS))
@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("scaled", [False, True])
def test_kernel_path_equals_the_float_path_to_rounding(method, bits, scaled, monkeypatch):
    layer = _frozen(method, bits, 70, 37, scaled, bits)
    assert layer.panels is not None
    for rows in (1, 5, 16):
        x = torch.randn(rows, 70)
        with torch.no_grad():
            y = layer(x)
            monkeypatch.setattr(PackedShiftLinear, "LOWBIT_KERNEL_MAX_ROWS", 0)
            y_float = layer(x)
            monkeypatch.undo()
        # the kernel ran: its reference's order of operations, bit for bit
        expected = kernels.lowbit_gemm_reference(x, layer.codes, layer.table, layer.scale,
                                                 layer.bias)
        assert torch.equal(y, expected)
        assert torch.equal(y_float, nn.functional.linear(x, layer.weight, layer.bias))
        exact, bound = _bound(layer, x)
        assert ((y.double() - exact).abs() <= bound).all()
        assert ((y_float.double() - exact).abs() <= bound).all()


@needs_library
@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("activation_bits", [None, 8, 3])
@pytest.mark.parametrize("scaled", [False, True])
def test_uniform_kernel_path_equals_the_float_path_to_rounding(bits, activation_bits, scaled,
                                                               monkeypatch):
    layer = _frozen_uniform(bits, 70, 37, activation_bits, scaled, bits)
    assert layer.panels is not None
    for rows in (1, 5, 16):
        x = torch.rand(rows, 70) * 2 - 0.5  # some inputs clamped by an unsigned quantizer
        with torch.no_grad():
            y = layer(x)
            monkeypatch.setattr(PackedUniformLinear, "LOWBIT_KERNEL_MAX_ROWS", 0)
            y_float = layer(x)
            monkeypatch.undo()
        assert torch.equal(y, _uniform_kernel_reference(layer, x))
        quantized = layer._input(x)  # the kernel runs on the input the float path quantizes
        assert torch.equal(y_float, nn.functional.linear(quantized, layer.weight, layer.bias))
        exact, bound = _bound(layer, quantized)
        assert ((y.double() - exact).abs() <= bound).all()
        assert ((y_float.double() - exact).abs() <= bound).all()


@needs_library
def test_uniform_batch_17_reload_and_the_widths_the_kernel_does_not_take(tmp_path):
    model = deploy.freeze(nn.Sequential(
        UniformLinear(33, 20, weight_quantizer=UniformWeightQuantizer(4)), nn.ReLU(),
        UniformLinear(20, 3, weight_quantizer=UniformWeightQuantizer(8))))
    first, last = model[0], model[-1]
    assert first.panels is not None and last.panels is None  # 8-bit codes: the float path
    with torch.no_grad():
        big = torch.randn(17, 33)  # above the kernel's batch: the float path, exactly
        assert torch.equal(first(big), nn.functional.linear(big, first.weight, first.bias))
        x = torch.randn(2, 3, 33)  # leading dimensions: 6 rows on the kernel
        assert torch.equal(first(x), _uniform_kernel_reference(
            first, x.reshape(6, 33)).reshape(2, 3, 20))
        deploy.save(model, tmp_path / "m.safetensors")
        loaded = deploy.load(tmp_path / "m.safetensors")
        assert torch.equal(loaded(x), model(x))
    reloaded = loaded.get_submodule("0")
    assert reloaded.panels is not None and torch.equal(reloaded.panels, first.panels)
    assert not any("panels" in key or "lowbit" in key for key in loaded.state_dict())
    # the kernel's buffers are not counted as the layer's parameters
    assert first.edgecompress_params() == {4: 33 * 20, 32: 20 + 20}  # steps and biases


@needs_library
def test_batches_above_16_leading_dims_gradients_and_reload():
    layer = _frozen("s3", 3, 40, 9, False, 0)
    with torch.no_grad():
        big = torch.randn(17, 40)  # above the kernel's batch: the float path, exactly
        assert torch.equal(layer(big), nn.functional.linear(big, layer.weight, layer.bias))
        x = torch.randn(2, 3, 40)  # leading dimensions: 6 rows on the kernel
        expected = kernels.lowbit_gemm_reference(x.reshape(6, 40), layer.codes, layer.table,
                                                 None, layer.bias).reshape(2, 3, 9)
        assert torch.equal(layer(x), expected)
    wanting = torch.randn(2, 40, requires_grad=True)  # an input that needs its gradient
    layer(wanting).sum().backward()
    torch.testing.assert_close(wanting.grad, layer.weight.sum(0).expand(2, 40))


@needs_library
def test_loaded_model_runs_the_kernel(tmp_path):
    model = deploy.freeze(nn.Sequential(ShiftLinear(33, 20, method="denseshift", bits=4),
                                        nn.ReLU(), ShiftLinear(20, 3, method="s3", bits=2)))
    deploy.save(model, tmp_path / "m.safetensors")
    loaded = deploy.load(tmp_path / "m.safetensors")
    x = torch.randn(4, 33)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    layers = [m for m in loaded.modules() if isinstance(m, PackedShiftLinear)]
    assert len(layers) == 2 and all(m.panels is not None for m in layers)
    assert not any("panels" in key for key in loaded.state_dict())


def test_without_the_library_the_float_path_runs(monkeypatch):
    monkeypatch.setattr(kernels, "available", lambda: False)
    layer = _frozen("deepshift-ps", 3, 30, 7, False, 1)
    assert layer.panels is None
    x = torch.randn(3, 30)
    with torch.no_grad():
        assert torch.equal(layer(x), nn.functional.linear(x, layer.weight, layer.bias))


def test_wrong_input_width_raises_torchs_shape_error():
    layer = _frozen("s3", 3, 30, 7, False, 2)
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        layer(torch.randn(2, 60))  # 60 values per row would reshape into 4 rows of 30
