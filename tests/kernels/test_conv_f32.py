"""Float direct convolution: every path bit-exact against its reference, close to torch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from edgecompress import kernels as K

PATHS = K.supported_paths()

CASES = [  # n, c, oc, h, w, kernel, stride, padding
    (1, 3, 16, 32, 32, 3, 1, 1),
    (1, 16, 9, 32, 32, 3, 2, 1),
    (2, 9, 11, 7, 7, 3, 1, 1),
    (3, 11, 7, 7, 7, 3, 2, 1),
    (1, 36, 18, 8, 8, 3, 1, 1),
    (2, 5, 13, 8, 8, 3, 1, 0),
    (1, 17, 5, 9, 13, 1, 2, 0),
    (3, 18, 36, 8, 8, 1, 1, 0),
    (1, 2, 3, 1, 1, 3, 1, 1),
    (2, 4, 6, 5, 6, 3, 2, 0),
]


def _operands(n, c, oc, h, w, kernel, stride, padding, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g)
    weight = torch.randn(oc, c, kernel, kernel, generator=g)
    oh, ow = (h + 2 * padding - kernel) // stride + 1, (w + 2 * padding - kernel) // stride + 1
    return x, weight, torch.randn(oc, generator=g), torch.randn(n, oc, oh, ow, generator=g)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("fused", ["plain", "bias", "bias_relu", "residual_relu", "clamp"])
def test_conv2d_direct_paths_bit_exact(path, case, fused):
    n, c, oc, h, w, kernel, stride, padding = case
    x, weight, bias, residual = _operands(*case, seed=sum(case))
    kwargs = {"plain": {}, "bias": {}, "bias_relu": {"clamp": (0.0, float("inf"))},
              "residual_relu": {"residual": residual, "clamp": (0.0, float("inf"))},
              "clamp": {"residual": residual, "clamp": (-0.5, 0.25)}}[fused]
    b = None if fused == "plain" else bias
    geometry = ((stride, stride), (padding, padding))
    got = K.conv2d_direct(x, weight, b, *geometry, path=path, **kwargs)
    expected = K.conv2d_direct_reference(x, weight, b, *geometry, **kwargs)
    assert got.is_contiguous() and torch.equal(got, expected)
    torch_result = F.conv2d(x, weight, b, stride, padding)
    if "residual" in kwargs:
        torch_result = torch_result + residual
    if "clamp" in kwargs:
        torch_result = torch_result.clamp(*kwargs["clamp"])
    torch.testing.assert_close(got, torch_result, rtol=1e-5, atol=1e-4)


def test_conv2d_direct_reads_any_layout_and_threads_agree():
    x, weight, bias, _ = _operands(2, 16, 9, 8, 8, 3, 1, 1, seed=1)
    expected = K.conv2d_direct_reference(x, weight, bias, (1, 1), (1, 1))
    last = x.to(memory_format=torch.channels_last)
    for threads in (1, 2):
        assert torch.equal(K.conv2d_direct(last, weight, bias, (1, 1), (1, 1), threads=threads),
                           expected)


def test_a_plan_is_the_kernel_for_one_shape_and_rejects_others():
    x, weight, bias, residual = _operands(2, 9, 11, 7, 7, 3, 2, 1, seed=4)
    plan = K.DirectConvPlan(tuple(x.shape), weight, bias, (2, 2), (1, 1), clamp=(0.0, 1.0))
    for _ in range(2):  # reusable
        assert torch.equal(plan(x, residual), K.conv2d_direct_reference(
            x, weight, bias, (2, 2), (1, 1), residual, (0.0, 1.0)))
    with pytest.raises(ValueError, match=r"plan takes inputs \(2, 9, 7, 7\), got \(1, 9, 7, 7\)"):
        plan(x[:1])
    with pytest.raises(ValueError, match="residual must have shape"):
        plan(x, residual[:, :3])


def test_conv2d_direct_supports_the_resnet_shapes_only():
    assert K.conv2d_direct_supports((16, 16, 3, 3), (1, 1), (1, 1))
    assert K.conv2d_direct_supports((32, 16, 1, 1), (2, 2), (0, 0))
    assert not K.conv2d_direct_supports((16, 16, 5, 5), (1, 1), (2, 2))
    assert not K.conv2d_direct_supports((16, 16, 3, 3), (1, 1), (1, 1), groups=2)
    assert not K.conv2d_direct_supports((16, 16, 3, 3), (1, 1), (1, 1), dilation=(2, 2))
    assert not K.conv2d_direct_supports((16, 16, 3, 3), (3, 3), (1, 1))


def test_conv2d_direct_rejects_bad_arguments_clearly():
    x, weight = torch.randn(1, 4, 8, 8), torch.randn(6, 4, 3, 3)
    with pytest.raises(ValueError, match=r"weight \(oc, c, kh, kw\)"):
        K.conv2d_direct(x, torch.randn(6, 5, 3, 3))
    with pytest.raises(ValueError, match="1x1 / 3x3 kernels"):
        K.conv2d_direct(x, torch.randn(6, 4, 5, 5))
    with pytest.raises(ValueError, match="bias must be a vector of 6"):
        K.conv2d_direct(x, weight, torch.randn(5))
    with pytest.raises(ValueError, match=r"residual must have shape \(1, 6, 6, 6\)"):
        K.conv2d_direct(x, weight, residual=torch.randn(1, 6, 8, 8))
    with pytest.raises(ValueError, match="smaller than the kernel"):
        K.conv2d_direct(torch.randn(1, 4, 2, 2), weight)


# --- AdderNet's L1 form: -sum |x - w| -------------------------------------------------------------

L1_CASES = CASES + [  # ragged channels (not multiples of 8 / 16), batch 1-3
    (3, 7, 19, 6, 5, 3, 2, 1),
    (2, 13, 17, 9, 9, 1, 1, 0),
    (1, 1, 1, 4, 4, 3, 1, 1),
    (2, 3, 5, 4, 5, 1, 2, 1),
]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", L1_CASES)
@pytest.mark.parametrize("with_bias", [False, True])
def test_l1_conv_paths_bit_exact(path, case, with_bias):
    """op="l1" on every path equals the reference summing |x - w| in the same order, and the
    training layer's naive distance (zero padding counted) to float rounding."""
    from edgecompress.layers.adder import adder_conv2d_reference
    n, c, oc, h, w, kernel, stride, padding = case
    x, weight, bias, _ = _operands(*case, seed=sum(case) + 1)
    b = bias if with_bias else None
    geometry = ((stride, stride), (padding, padding))
    got = K.conv2d_direct(x, weight, b, *geometry, op="l1", path=path)
    assert got.is_contiguous()
    assert torch.equal(got, K.conv2d_direct_reference(x, weight, b, *geometry, op="l1"))
    torch.testing.assert_close(got, adder_conv2d_reference(x, weight, b, stride, padding),
                               rtol=1e-5, atol=1e-4)


def _l1_rows_reference(x, weight, bias):
    """-sum_k |x[r, k] - w[o, k]| + b[o], k ascending, one float32 addition at a time."""
    acc = torch.zeros(x.shape[0], weight.shape[0])
    for k in range(x.shape[1]):
        acc = acc + (x[:, k: k + 1] - weight[:, k]).abs()
    acc = -acc
    return acc if bias is None else acc + bias


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("rows, k, out", [(1, 64, 10), (3, 37, 13), (17, 5, 1), (2, 1, 3)])
def test_l1_linear_paths_bit_exact(path, rows, k, out):
    g = torch.Generator().manual_seed(rows * k + out)
    x, weight, bias = torch.randn(rows, k, generator=g), torch.randn(out, k, generator=g), \
        torch.randn(out, generator=g)
    for b in (None, bias):
        got = K.l1_linear(x, weight, b, path=path)
        assert torch.equal(got, _l1_rows_reference(x, weight, b))


def test_l1_forms_reject_bad_arguments_clearly():
    with pytest.raises(ValueError, match=r"op must be one of \('mul', 'l1'\), got 'l2'"):
        K.conv2d_direct(torch.randn(1, 2, 4, 4), torch.randn(3, 2, 3, 3), op="l2")
    with pytest.raises(ValueError, match=r"l1_linear needs x \(rows, k\) and weight \(out, k\)"):
        K.l1_linear(torch.randn(2, 5), torch.randn(3, 4))


# --- AdderNet's input gradient: sum g * clamp(w - x, -1, 1) ----------------------------------------

@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", L1_CASES)
def test_adder_input_grad_paths_bit_exact_and_the_published_rule(path, case):
    """Every path equals the reference summing g * clamp(w - x) in the same order, and the
    published rule (autograd through the naive form, in float64) to float rounding."""
    from edgecompress.layers.adder import adder_conv2d_reference
    n, c, oc, h, w, kernel, stride, padding = case
    x, weight, _, grad = _operands(*case, seed=sum(case) + 2)
    x = x * 0.5  # differences on both sides of the clamp's +-1
    geometry = ((stride, stride), (padding, padding))
    got = K.adder_input_grad(x, weight, grad, *geometry, path=path)
    assert got.is_contiguous() and got.shape == x.shape
    assert torch.equal(got, K.adder_input_grad_reference(x, weight, grad, *geometry))
    x64 = x.double().requires_grad_()
    adder_conv2d_reference(x64, weight.double(), None, stride, padding).backward(grad.double())
    torch.testing.assert_close(got.double(), x64.grad, rtol=1e-5, atol=1e-4)


def test_adder_input_grad_reads_any_layout_and_threads_agree():
    x, weight, _, grad = _operands(2, 16, 9, 8, 8, 3, 2, 1, seed=5)
    expected = K.adder_input_grad_reference(x, weight, grad, (2, 2), (1, 1))
    last = x.to(memory_format=torch.channels_last)
    for threads in (1, 2):
        assert torch.equal(K.adder_input_grad(last, weight, grad.transpose(2, 3).contiguous()
                                              .transpose(2, 3), (2, 2), (1, 1),
                                              threads=threads), expected)


def test_adder_input_grad_rejects_bad_arguments_clearly():
    x, weight = torch.randn(1, 4, 8, 8), torch.randn(6, 4, 3, 3)
    with pytest.raises(ValueError, match=r"weight \(oc, c, kh, kw\)"):
        K.adder_input_grad(x, torch.randn(6, 5, 3, 3), torch.randn(1, 6, 6, 6))
    with pytest.raises(ValueError, match="1x1 / 3x3 kernels"):
        K.adder_input_grad(x, torch.randn(6, 4, 5, 5), torch.randn(1, 6, 4, 4))
    with pytest.raises(ValueError, match=r"grad must have the output's shape \(1, 6, 6, 6\)"):
        K.adder_input_grad(x, weight, torch.randn(1, 6, 8, 8))
