"""EuclidLinear / EuclidConv2d: the GEMM form against the naive form (values and gradients),
the homotopy's end points, the scheduled theta and bad options."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from edgecompress.errors import ConversionError, EdgecompressError
from edgecompress.layers import CompressedLayer, EuclidConv2d, EuclidLinear
from edgecompress.layers.euclid import (euclid_conv2d, euclid_conv2d_reference, euclid_linear,
                                        euclid_linear_reference)
from edgecompress.quantizers.schedule import Schedule

from .distance_checks import (PADDING_OPTIONS, assert_same_values_and_grads,
                              check_padding_option, conv_cases)

F64 = torch.float64
THETAS = st.sampled_from([0.0, 0.37, 1.0])


# --- GEMM form == naive form ---------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(lead=st.lists(st.integers(1, 3), min_size=0, max_size=2), n_in=st.integers(1, 7),
       n_out=st.integers(1, 6), bias=st.booleans(), theta=THETAS, seed=st.integers(0, 2**16))
def test_linear_gemm_form_equals_the_naive_form_values_and_gradients(lead, n_in, n_out, bias,
                                                                      theta, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(*lead, n_in, dtype=F64, generator=gen)
    w = torch.randn(n_out, n_in, dtype=F64, generator=gen)
    b = torch.randn(n_out, dtype=F64, generator=gen)
    if bias:
        assert_same_values_and_grads(lambda x, w, b: euclid_linear(x, w, b, theta),
                                      lambda x, w, b: euclid_linear_reference(x, w, b, theta),
                                      x, w, b)
    else:
        assert_same_values_and_grads(lambda x, w: euclid_linear(x, w, None, theta),
                                      lambda x, w: euclid_linear_reference(x, w, None, theta),
                                      x, w)


def _conv_operands(case, gen):
    """x, w, b (float64) of a generated conv case."""
    groups = case["options"]["groups"]
    x = torch.randn(case["n"], case["cin"], *case["hw"], dtype=F64, generator=gen)
    w = torch.randn(case["cout"], case["cin"] // groups, *case["kernel"], dtype=F64,
                    generator=gen)
    return x, w, torch.randn(case["cout"], dtype=F64, generator=gen)


@settings(max_examples=80, deadline=None)
@given(case=conv_cases(theta=THETAS))
def test_conv_gemm_form_equals_the_naive_form_values_and_gradients(case):
    gen = torch.Generator().manual_seed(case["seed"])
    opts, theta = case["options"], case["theta"]
    x, w, b = _conv_operands(case, gen)
    tensors = (x, w, b) if case["bias"] else (x, w)

    def fast(x, w, b=None):
        return euclid_conv2d(x, w, b, theta=theta, **opts)

    def naive(x, w, b=None):
        return euclid_conv2d_reference(x, w, b, theta=theta, **opts)

    assert_same_values_and_grads(fast, naive, *tensors)


@settings(max_examples=60, deadline=None)
@given(case=conv_cases(theta=THETAS), channels_last=st.booleans())
def test_conv_float32_c_path_matches_the_naive_form(case, channels_last):
    """Eager float32 CPU runs take the C kernels for the per-patch term where it is a sum pool
    (and torch's operations elsewhere): values and gradients match the float64 naive form to
    float32 rounding, for contiguous and channels-last inputs."""
    gen = torch.Generator().manual_seed(case["seed"])
    opts, theta = case["options"], case["theta"]
    x, w, b = _conv_operands(case, gen)
    # torch 2.13's oneDNN convolution (nn.Conv2d's too) segfaults on some channels-last inputs
    # whose padding reaches a whole dilated kernel extent (windows of padding only), e.g. x (1, 3,
    # 9, 1), w (6, 1, 3, 1), stride 2, padding (0, 1), dilation 2, groups 3 on an AVX2 AMD EPYC:
    # those geometries run contiguous here
    extent = [d * (k - 1) + 1 for k, d in zip(case["kernel"], opts["dilation"])]
    channels_last = channels_last and all(p < e for p, e in zip(opts["padding"], extent))
    layout = torch.channels_last if channels_last else torch.contiguous_format
    x32 = x.float().contiguous(memory_format=layout).requires_grad_()
    w32, b32 = w.float().requires_grad_(), b.float().requires_grad_()
    y32 = euclid_conv2d(x32, w32, b32, theta=theta, **opts)
    leaves = [t.clone().requires_grad_() for t in (x, w, b)]
    y64 = euclid_conv2d_reference(*leaves, theta=theta, **opts)
    torch.testing.assert_close(y32.double(), y64, rtol=1e-4, atol=1e-4)
    g = torch.randn(y64.shape, dtype=F64, generator=gen)
    grads32 = torch.autograd.grad((y32 * g.float()).sum(), [x32, w32, b32])
    grads64 = torch.autograd.grad((y64 * g).sum(), leaves)
    for a, ref in zip(grads32, grads64):
        torch.testing.assert_close(a.double(), ref, rtol=1e-4, atol=1e-3)


def test_conv_c_path_agrees_with_torch_operations_and_keeps_theta_zero_exact(monkeypatch):
    """The C term (eager) and torch's operations (what torch.compile and export run) agree to
    float rounding; at theta = 0 the C path still gives nn.Conv2d's values exactly."""
    from edgecompress import kernels
    torch.manual_seed(4)
    conv = nn.Conv2d(16, 8, 3, stride=2, padding=1, groups=2)
    x = torch.randn(3, 16, 9, 9, requires_grad=True)
    euclid = EuclidConv2d.from_float(conv, theta=1.0)
    runs = []
    for recording in (False, True):
        monkeypatch.setattr(kernels, "recording", lambda r=recording: r)
        x.grad = None
        y = euclid(x)
        y.square().sum().backward()
        runs.append((y.detach(), x.grad.clone()))
    torch.testing.assert_close(runs[0][0], runs[1][0])
    torch.testing.assert_close(runs[0][1], runs[1][1])
    monkeypatch.undo()
    assert torch.equal(EuclidConv2d.from_float(conv, theta=0.0)(x), conv(x))


def test_conv_c_path_gradients_of_bias_weight_and_a_given_shift():
    """The C path is one autograd node: the bias gets the output gradient summed over batch
    and pixels, the weight its convolution gradient plus -theta s_j w_j; with a given shift
    (a frozen layer's), the shift gets the sums and the weight only the convolution's."""
    torch.manual_seed(5)
    x = torch.randn(2, 6, 7, 7, requires_grad=True)
    w = torch.randn(4, 6, 3, 3, requires_grad=True)
    b = torch.randn(4, requires_grad=True)
    grad = torch.randn(2, 4, 7, 7)
    theta = 0.7
    y = euclid_conv2d(x, w, b, 1, 1, theta=theta)
    gx, gw, gb = torch.autograd.grad(y, (x, w, b), grad)
    sums = grad.sum((0, 2, 3))
    conv_gw = torch.autograd.grad(torch.nn.functional.conv2d(x, w, None, 1, 1), w, grad)[0]
    torch.testing.assert_close(gb, sums)
    torch.testing.assert_close(gw, conv_gw - theta * sums.view(-1, 1, 1, 1) * w)
    leaves = [t.detach().double().requires_grad_() for t in (x, w, b)]
    expected = torch.autograd.grad(euclid_conv2d_reference(*leaves, 1, 1, theta=theta),
                                   leaves[0], grad.double())[0]
    torch.testing.assert_close(gx.double(), expected, rtol=1e-4, atol=1e-4)
    shift = (b - theta / 2 * w.square().flatten(1).sum(1)).detach().requires_grad_()
    y2 = euclid_conv2d(x, w, None, 1, 1, theta=theta, shift=shift)
    torch.testing.assert_close(y2, y)
    gx2, gw2, gshift = torch.autograd.grad(y2, (x, w, shift), grad)
    torch.testing.assert_close(gshift, sums)
    torch.testing.assert_close(gw2, conv_gw)
    torch.testing.assert_close(gx2, gx)


@pytest.mark.parametrize("padding, padding_mode", PADDING_OPTIONS)
def test_conv_layer_padding_options_match_the_naive_form(padding, padding_mode):
    check_padding_option(EuclidConv2d, padding, padding_mode)


def test_unbatched_inputs_work_like_a_batch_of_one():
    torch.manual_seed(2)
    conv = EuclidConv2d(2, 3, 3, padding=1).double()
    x = torch.randn(2, 5, 5, dtype=F64)
    torch.testing.assert_close(conv(x), conv(x[None])[0])
    torch.testing.assert_close(conv.reference_forward(x), conv(x))


# --- the operation and its gradients --------------------------------------------------------------

def test_theta_one_is_minus_half_the_squared_distance_with_the_papers_gradients():
    x = torch.tensor([[1.0, 2.0, -1.0]], dtype=F64)
    layer = EuclidLinear(3, 2, bias=False).double()
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.0, 2.0, 1.0], [1.0, -1.0, 0.5]]))
    y = layer(x)
    torch.testing.assert_close(y, torch.tensor([[-2.5, -5.625]], dtype=F64))
    y[0, 0].backward()
    # dy_0/dw_0i = x_i - w_0i, other rows untouched
    torch.testing.assert_close(layer.weight.grad, torch.tensor([[1.0, 0.0, -2.0], [0, 0, 0]],
                                                               dtype=F64))
    x.requires_grad_(True)
    (gx,) = torch.autograd.grad(layer(x)[0, 1], x)
    torch.testing.assert_close(gx, -(x - layer.weight[1]).detach())  # -(x_i - w_1i)


def test_theta_zero_reproduces_the_ordinary_layers_exactly():
    torch.manual_seed(3)
    cases = [(nn.Linear(5, 4).double(), torch.randn(3, 5, dtype=F64)),
             (nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2).double(),
              torch.randn(2, 4, 7, 7, dtype=F64)),
             (nn.Conv2d(3, 2, 2, padding=1, padding_mode="reflect", bias=False).double(),
              torch.randn(2, 3, 5, 5, dtype=F64))]
    for plain, x in cases:
        cls = EuclidConv2d if isinstance(plain, nn.Conv2d) else EuclidLinear
        euclid = cls.from_float(plain, theta=0.0)
        assert torch.equal(euclid(x), plain(x))
        euclid(x).square().sum().backward()
        plain(x).square().sum().backward()
        torch.testing.assert_close(euclid.weight.grad, plain.weight.grad, rtol=1e-12, atol=0)


def test_the_homotopy_is_the_convex_blend_of_product_and_distance():
    torch.manual_seed(4)
    conv = nn.Conv2d(3, 4, 3, padding=1).double()
    x = torch.randn(2, 3, 5, 5, dtype=F64)
    product = EuclidConv2d.from_float(conv, theta=0.0)(x)
    distance = EuclidConv2d.from_float(conv, theta=1.0)(x)
    blend = EuclidConv2d.from_float(conv, theta=0.25)(x)
    torch.testing.assert_close(blend, 0.75 * product + 0.25 * distance)


def test_layers_are_compressed_layers_but_not_products():
    """Code that treats every nn.Conv2d / nn.Linear as a product (BatchNorm folding, converting
    again) must not take a Euclid layer for one."""
    for layer in (EuclidLinear(3, 2), EuclidConv2d(2, 2, 1)):
        assert isinstance(layer, CompressedLayer)
        assert not isinstance(layer, (nn.Linear, nn.Conv2d))


# --- theta: schedule, state, errors --------------------------------------------------------------

def test_theta_is_a_buffer_in_the_state_dict_and_a_schedule_drives_it():
    layer = EuclidLinear(3, 2, theta={"kind": "linear", "start": 0.0, "end": 1.0})
    assert layer.theta.item() == 0.0
    assert layer.schedules == {"theta": Schedule("linear", 0.0, 1.0)}
    layer.set_param("theta", 0.5)
    other = EuclidLinear(3, 2)
    assert other.schedules == {} and other.theta.item() == 1.0
    other.load_state_dict(layer.state_dict())
    assert other.theta.item() == 0.5
    assert "theta=0.5" in repr(other)


@pytest.mark.parametrize("theta", [1.5, -0.1, float("nan"), "0.5", True, None])
def test_theta_outside_the_unit_interval_is_an_error_naming_it(theta):
    with pytest.raises(ConversionError, match=r"theta must be a number in \[0, 1\].*" +
                       repr(theta).replace(".", r"\.")):
        EuclidLinear(3, 2, theta=theta)


@pytest.mark.parametrize("schedule, message", [
    ({"kind": "linear", "start": 0.0, "end": 2.0}, r"stay in \[0, 1\]"),
    ({"kind": "exponential", "start": 0.5, "rate": 1.5}, r"rate <= 1"),
    ({"kind": "linear", "start": 0.0}, r"needs an end value"),
    ({"kind": "cosine", "start": 0.0}, r"kind must be one of"),
])
def test_bad_theta_schedules_are_errors(schedule, message):
    with pytest.raises(ConversionError, match=message):
        EuclidConv2d(2, 2, 3, theta=schedule)


def test_set_param_checks_the_name_and_the_value():
    layer = EuclidLinear(3, 2)
    with pytest.raises(ConversionError, match="no scheduled parameter 'mu'"):
        layer.set_param("mu", 0.5)
    with pytest.raises(ConversionError, match=r"got 1\.5"):
        layer.set_param("theta", 1.5)
    layer.set_param("theta", 1 + 1e-12)  # a schedule's end point up to rounding
    assert layer.theta.item() == 1.0


@pytest.mark.parametrize("cin, cout, groups, what", [(4, 6, 3, "in_channels=4"),
                                                      (6, 4, 3, "out_channels=4"),
                                                      (4, 4, 0, "in_channels=4")])
def test_groups_not_dividing_the_channels_is_an_error_naming_them(cin, cout, groups, what):
    with pytest.raises(EdgecompressError, match=f"groups={groups} must be >= 1 and divide {what}"):
        EuclidConv2d(cin, cout, 3, groups=groups)
