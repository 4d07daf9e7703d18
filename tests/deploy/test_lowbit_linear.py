"""Frozen shift linear layers on the low-bit kernel (batch <= 16) against their decoded float path.

The kernel sums over k in order and multiplies by a folded scale after the sum; torch's float
linear sums in its own blocked order on the scaled weights. Both are the exact product up to
float rounding, bounded by the classic recursive-summation bound: with u = 2^-24,
|y - y_exact| <= (K + 3) u (|x| |W|^T |scale| + |bias|) for either path (the products by
powers of two are exact; K - 1 additions, one scale product, one bias addition and the
rounding of the scaled weights on the float path). The tests hold both paths to that bound and
the kernel path bit for bit to the kernel's reference.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgecompress import deploy, kernels
from edgecompress.deploy import PackedShiftLinear
from edgecompress.layers import ShiftLinear
from edgecompress.quantizers.shift import PARAMETRIZATIONS

needs_library = pytest.mark.skipif(not kernels.available(), reason="the C kernels are not built")


def _frozen(method: str, bits: int, k: int, n: int, scaled: bool, seed: int) -> PackedShiftLinear:
    torch.manual_seed(seed)
    layer = deploy.freeze(nn.Sequential(ShiftLinear(k, n, method=method, bits=bits)))[0]
    if scaled:  # as freeze leaves a linear with a folded BatchNorm
        packed = PackedShiftLinear(k, n, method=method, bits=bits, has_scale=True)
        packed.load_state_dict({**layer.state_dict(), "scale": torch.rand(n) + 0.5})
        layer = packed
    return layer


def _bound(layer: PackedShiftLinear, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
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
