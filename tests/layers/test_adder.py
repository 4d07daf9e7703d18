"""AdderLinear / AdderConv2d: the fast path against the naive form (values and AdderNet's
gradients), the gradient rules by hand, the adaptive learning-rate scaling and bad options."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from edgecompress import kernels
from edgecompress.errors import ConversionError
from edgecompress.layers import AdderConv2d, AdderLinear, CompressedLayer
from edgecompress.layers import adder
from edgecompress.layers.adder import (adder_conv2d, adder_conv2d_reference, adder_linear,
                                       adder_linear_reference)

from .distance_checks import (PADDING_OPTIONS, assert_same_values_and_grads,
                              check_padding_option, conv_cases)

F64 = torch.float64


# --- fast path == naive form ---------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(lead=st.lists(st.integers(1, 3), min_size=0, max_size=2), n_in=st.integers(1, 7),
       n_out=st.integers(1, 6), bias=st.booleans(), seed=st.integers(0, 2**16))
def test_linear_fast_path_equals_the_naive_form_values_and_gradients(lead, n_in, n_out, bias,
                                                                      seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(*lead, n_in, dtype=F64, generator=gen)
    w = torch.randn(n_out, n_in, dtype=F64, generator=gen)
    b = torch.randn(n_out, dtype=F64, generator=gen)
    tensors = (x, w, b) if bias else (x, w)
    assert_same_values_and_grads(adder_linear, adder_linear_reference, *tensors)


@settings(max_examples=60, deadline=None)
@given(case=conv_cases(), chunk=st.sampled_from([1, 7, 2 ** 19]))
def test_conv_fast_path_equals_the_naive_form_values_and_gradients(case, chunk):
    """All conv options, ragged sizes, and input-gradient chunks from one difference per chunk
    (many ragged chunks) to the default."""
    gen = torch.Generator().manual_seed(case["seed"])
    opts, groups = case["options"], case["options"]["groups"]
    x = torch.randn(case["n"], case["cin"], *case["hw"], dtype=F64, generator=gen)
    w = torch.randn(case["cout"], case["cin"] // groups, *case["kernel"], dtype=F64,
                    generator=gen)
    b = torch.randn(case["cout"], dtype=F64, generator=gen)
    tensors = (x, w, b) if case["bias"] else (x, w)
    previous, adder._CHUNK_ELEMENTS = adder._CHUNK_ELEMENTS, chunk
    try:
        assert_same_values_and_grads(lambda x, w, b=None: adder_conv2d(x, w, b, **opts),
                                     lambda x, w, b=None: adder_conv2d_reference(x, w, b, **opts),
                                     *tensors)
    finally:
        adder._CHUNK_ELEMENTS = previous


@pytest.mark.parametrize("padding, padding_mode", PADDING_OPTIONS)
def test_conv_layer_padding_options_match_the_naive_form(padding, padding_mode):
    check_padding_option(AdderConv2d, padding, padding_mode)


def test_float32_fast_path_agrees_with_the_naive_form_and_unbatched_inputs_work():
    torch.manual_seed(2)
    conv = AdderConv2d(3, 5, 3, padding=1, eta=None)
    x = torch.randn(2, 3, 9, 8)
    torch.testing.assert_close(conv(x), conv.reference_forward(x), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(conv(x[0]), conv(x[:1])[0])
    torch.testing.assert_close(conv.reference_forward(x[0]), conv(x[0]), rtol=1e-5, atol=1e-4)


# --- the C kernels' path (float32 CPU, ResNet geometry) -----------------------------------------

KERNEL_CASES = [  # n, cin, cout, h, w, kernel, stride, padding: ragged channels, odd sizes
    (1, 3, 16, 9, 9, 3, 1, 1),
    (2, 9, 11, 7, 7, 3, 2, 1),
    (3, 7, 19, 6, 5, 3, 2, 0),
    (2, 13, 17, 9, 9, 1, 1, 0),
    (1, 17, 5, 9, 13, 1, 2, 0),
    (2, 5, 6, 5, 6, 3, 1, 0),
]


@pytest.mark.skipif(not kernels.available(), reason="the C kernels are not built")
@pytest.mark.parametrize("case", KERNEL_CASES)
@pytest.mark.parametrize("eta", [None, adder.DEFAULT_ETA])
def test_c_kernel_path_equals_the_naive_form_values_and_published_gradients(case, eta,
                                                                           monkeypatch):
    """AdderConv2d in float32 runs the C kernels (forward and input gradient) and gives the
    naive form's values and gradients of x, weight and bias to float rounding."""
    n, cin, cout, h, w, kernel, stride, padding = case
    torch.manual_seed(sum(case))
    layer = AdderConv2d(cin, cout, kernel, stride, padding, eta=eta)
    x = (torch.randn(n, cin, h, w) * 0.5).requires_grad_()
    calls = _count_kernel_calls(monkeypatch)
    y = layer(x)
    g = torch.randn(y.shape)
    fast = torch.autograd.grad((y * g).sum(), [x, layer.weight, layer.bias])
    assert calls == ["conv2d_direct", "adder_input_grad"]
    y_ref = layer.reference_forward(x)
    naive = torch.autograd.grad((y_ref * g).sum(), [x, layer.weight, layer.bias])
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-4)
    for a, b in zip(fast, naive):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def _count_kernel_calls(monkeypatch) -> list[str]:
    """The names of the adder C kernel functions called from now on (they still run)."""
    calls: list[str] = []
    for name in ("conv2d_direct", "adder_input_grad"):
        real = getattr(kernels, name)
        monkeypatch.setattr(kernels, name, lambda *a, _real=real, _name=name, **k: (
            calls.append(_name), _real(*a, **k))[1])
    return calls


@pytest.mark.parametrize("options, dtype", [
    (dict(kernel_size=5, padding=2), torch.float32),
    (dict(kernel_size=3, padding=2, dilation=2), torch.float32),
    (dict(kernel_size=3, padding=1, groups=2), torch.float32),
    (dict(kernel_size=3, stride=3), torch.float32),
    (dict(kernel_size=3, padding="same"), torch.float32),
    (dict(kernel_size=3, padding=1), torch.float64),
])
def test_the_pytorch_path_runs_where_the_c_kernels_do_not_apply(options, dtype, monkeypatch):
    torch.manual_seed(5)
    layer = AdderConv2d(4, 6, **options).to(dtype)
    x = torch.randn(2, 4, 9, 9, dtype=dtype, requires_grad=True)
    calls = _count_kernel_calls(monkeypatch)
    layer(x).sum().backward()
    assert calls == []
    torch.testing.assert_close(layer(x), layer.reference_forward(x))


def test_the_pytorch_path_runs_without_the_library_and_under_tracing(monkeypatch):
    torch.manual_seed(6)
    layer = AdderConv2d(4, 6, 3, padding=1)
    x = torch.randn(2, 4, 8, 8)
    calls = _count_kernel_calls(monkeypatch)
    traced = torch.jit.trace(layer, x, check_trace=False)  # (a check reruns it untraced)
    assert calls == []
    torch.testing.assert_close(traced(x), layer.reference_forward(x), rtol=1e-5, atol=1e-4)
    monkeypatch.setattr(kernels, "conv2d_direct_usable", lambda x: False)
    layer(x)
    assert calls == []


# --- the operation and AdderNet's gradients by hand ----------------------------------------------

def test_forward_is_minus_the_l1_distance_and_gradients_are_the_published_rules():
    x = torch.tensor([[1.0, 2.0, -1.0], [0.5, 0.0, 3.0]], dtype=F64, requires_grad=True)
    layer = AdderLinear(3, 2, bias=False, eta=None).double()
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.0, 2.5, 1.0], [1.0, -1.0, 0.25]]))
    y = layer(x)
    torch.testing.assert_close(y, torch.tensor([[-3.5, -4.25], [-5.0, -4.25]], dtype=F64))
    g = torch.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=F64)
    (y * g).sum().backward()
    w, xd = layer.weight.detach(), x.detach()
    # dL/dw_ji = sum_r g_rj (x_ri - w_ji): the full-precision difference, not its sign
    expected_w = torch.stack([sum(g[r, j] * (xd[r] - w[j]) for r in range(2)) for j in range(2)])
    # dL/dx_ri = sum_j g_rj HardTanh(w_ji - x_ri)
    expected_x = torch.stack([sum(g[r, j] * (w[j] - xd[r]).clamp(-1, 1) for j in range(2))
                              for r in range(2)])
    torch.testing.assert_close(layer.weight.grad, expected_w)
    torch.testing.assert_close(x.grad, expected_x)


@pytest.mark.parametrize("layer", [AdderLinear(6, 4), AdderConv2d(4, 6, 3, groups=2)])
def test_adaptive_scaling_rescales_the_weight_gradient_to_eta_sqrt_k(layer):
    """weight.grad = eta sqrt(k) / ||G|| G, G the unscaled gradient; the bias is unscaled."""
    torch.manual_seed(3)
    layer = layer.double()
    x = torch.randn(2, 6, dtype=F64) if isinstance(layer, AdderLinear) else torch.randn(
        2, 4, 5, 5, dtype=F64)
    plain = copy.deepcopy(layer)
    plain.eta = None
    assert layer.eta == adder.DEFAULT_ETA
    for module in (layer, plain):
        module(x).square().sum().backward()
    raw = plain.weight.grad
    k = raw.numel()
    torch.testing.assert_close(layer.weight.grad, adder.DEFAULT_ETA * math.sqrt(k) * raw
                               / raw.norm())
    torch.testing.assert_close(layer.weight.grad.norm(),
                               torch.tensor(adder.DEFAULT_ETA * math.sqrt(k), dtype=F64))
    torch.testing.assert_close(layer.bias.grad, plain.bias.grad)
    # the naive form scales the same way
    layer.zero_grad()
    layer.reference_forward(x).square().sum().backward()
    torch.testing.assert_close(layer.weight.grad, adder.DEFAULT_ETA * math.sqrt(k) * raw
                               / raw.norm())


def test_a_zero_gradient_stays_zero_under_adaptive_scaling():
    layer = AdderLinear(3, 2)
    (layer(torch.randn(4, 3)) * 0).sum().backward()
    assert torch.equal(layer.weight.grad, torch.zeros(2, 3))


def test_from_float_copies_weights_and_layers_are_compressed_layers_not_products():
    torch.manual_seed(4)
    conv, linear = nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2), nn.Linear(5, 3)
    a, b = AdderConv2d.from_float(conv, eta=0.1), AdderLinear.from_float(linear)
    assert torch.equal(a.weight, conv.weight) and torch.equal(b.bias, linear.bias)
    assert (a.stride, a.padding, a.groups, a.eta) == ((2, 2), (1, 1), 2, 0.1)
    for layer in (a, b):
        assert isinstance(layer, CompressedLayer) and layer.op_kind == "abs-diff"
        assert not isinstance(layer, (nn.Linear, nn.Conv2d))
    assert "eta=0.1" in repr(a) and "eta=0.2" in repr(b)


# --- bad options ---------------------------------------------------------------------------------

@pytest.mark.parametrize("cin, cout, groups, what", [(4, 6, 3, "in_channels=4"),
                                                      (6, 4, 3, "out_channels=4"),
                                                      (4, 4, 0, "in_channels=4"),
                                                      (4, 4, 1.5, "in_channels=4")])
def test_groups_not_dividing_the_channels_is_an_error_naming_them(cin, cout, groups, what):
    with pytest.raises(ConversionError,
                       match=f"AdderConv2d: groups={groups} must be >= 1 and divide {what}"):
        AdderConv2d(cin, cout, 3, groups=groups)


@pytest.mark.parametrize("options, message", [
    (dict(padding_mode="mirror"), r"AdderConv2d: padding_mode must be one of"),
    (dict(padding="full"), r"AdderConv2d: Invalid padding string 'full'"),
    (dict(padding="same", stride=2), r"AdderConv2d: padding='same' is not supported for "
                                     r"strided convolutions"),
])
def test_bad_conv_options_are_errors_naming_the_layer(options, message):
    with pytest.raises(ConversionError, match=message):
        AdderConv2d(4, 4, 3, **options)


@pytest.mark.parametrize("eta", [0, -0.1, float("nan"), float("inf"), "0.2", True])
def test_bad_eta_is_an_error_naming_it(eta):
    with pytest.raises(ConversionError, match=r"eta .* must be a positive number or None.*got "
                       + repr(eta).replace(".", r"\.")):
        AdderLinear(3, 2, eta=eta)
