"""BinaryViT's building blocks: values and gradients against their documented formulas."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from edgecompress.layers import (AttentionCore, BinaryLinearBlock, CenteredBinaryLinear,
                                 LearnableThresholdSign, RPReLU, ZeroOrAlpha)
from edgecompress.quantizers import method_pair


def test_learnable_threshold_sign_values_and_approxsign_gradients():
    torch.manual_seed(0)
    layer = LearnableThresholdSign(6)
    with torch.no_grad():
        layer.bias.copy_(torch.linspace(-0.5, 0.5, 6))
    x = (torch.randn(4, 3, 6) * 1.2).requires_grad_()
    y = layer(x)
    assert set(y.unique().tolist()) == {-1.0, 1.0}
    u = (x + layer.bias).detach()
    assert torch.equal(y, torch.where(u >= 0, 1.0, -1.0))
    grad = torch.randn_like(y)
    y.backward(grad)
    # ApproxSign: 2 + 2u on [-1, 0), 2 - 2u on [0, 1], 0 elsewhere
    d = torch.where((u >= -1) & (u < 0), 2 + 2 * u,
                    torch.where((u >= 0) & (u <= 1), 2 - 2 * u, torch.zeros_like(u)))
    torch.testing.assert_close(x.grad, grad * d)
    torch.testing.assert_close(layer.bias.grad, (grad * d).sum(dim=(0, 1)))


def test_learnable_threshold_sign_on_images_uses_the_channel_dim():
    layer = LearnableThresholdSign(3, channel_dim=1)
    with torch.no_grad():
        layer.bias.copy_(torch.tensor([10.0, -10.0, 0.0]))
    y = layer(torch.zeros(2, 3, 4, 4))
    assert (y[:, 0] == 1).all() and (y[:, 1] == -1).all() and (y[:, 2] == 1).all()


def test_centered_binary_linear_weights_are_plus_minus_row_alpha():
    torch.manual_seed(1)
    layer = CenteredBinaryLinear(16, 5, input_quantizer=LearnableThresholdSign(16))
    with torch.no_grad():
        layer.weight.add_(0.3)  # a row mean that the centring must remove
    centered = layer.weight - layer.weight.mean(dim=1, keepdim=True)
    alpha = centered.abs().mean(dim=1, keepdim=True)
    w = layer.quantized_weight().detach()
    assert torch.equal(w.abs(), alpha.expand_as(w).detach())
    assert torch.equal(torch.sign(w), torch.where(centered >= 0, 1.0, -1.0))
    assert torch.equal(layer.discrete_weight(), torch.sign(w))
    x = torch.randn(3, 16)
    torch.testing.assert_close(layer(x), F.linear(torch.where(x >= 0, 1.0, -1.0), w))
    assert layer.bias is None and layer.weight_bits == 1 and layer.input_bits == 1


def test_centered_binary_linear_gradient_is_clipped_straight_through_the_centring():
    torch.manual_seed(2)
    layer = CenteredBinaryLinear(8, 3)
    with torch.no_grad():
        layer.weight.mul_(4)  # some centred weights beyond +-1: no gradient there
    x = torch.randn(5, 8)
    grad_out = torch.randn(5, 3)
    layer(x).backward(grad_out)
    centered = (layer.weight - layer.weight.mean(dim=1, keepdim=True)).detach()
    alpha = centered.abs().mean(dim=1, keepdim=True)
    grad_c = (grad_out.t() @ x) * alpha * (centered.abs() <= 1)
    expected = grad_c - grad_c.mean(dim=1, keepdim=True)
    torch.testing.assert_close(layer.weight.grad, expected)


def test_the_weight_quantizer_is_replaceable_by_any_method():
    torch.manual_seed(3)
    layer = CenteredBinaryLinear(8, 3, weight_quantizer=method_pair("bnn+"))
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[-1.5, 1.5, -0.2, 0.2, -0.4, 0.4, -0.6, 0.6]] * 3))
    layer(torch.ones(2, 8)).sum().backward()
    # before the centring's projection, SignSwish's backward (bnn+) reaches the weights at
    # |c| = 1.5 (the clip of bnn would give them exactly the row mean's correction)
    grad = layer.weight.grad
    assert grad[0, 0] != -grad.mean(dim=1)[0]
    block = BinaryLinearBlock(8, 8, weight_method="bnn++")
    assert block.linear.weight_quantizer.name == "bnn++"


def test_rprelu_values_and_gradients():
    torch.manual_seed(4)
    act = RPReLU(5)
    with torch.no_grad():
        act.shift_in.copy_(torch.randn(5) * 0.3)
        act.shift_out.copy_(torch.randn(5) * 0.3)
        act.slope.copy_(torch.rand(5))
    x = torch.randn(7, 5, requires_grad=True)
    y = act(x)
    u = (x - act.shift_in).detach()
    slope = act.slope.detach()
    torch.testing.assert_close(y, torch.where(u >= 0, u, slope * u) + act.shift_out.detach())
    grad = torch.randn_like(y)
    y.backward(grad)
    dx = torch.where(u >= 0, torch.ones_like(u), slope.expand_as(u))
    torch.testing.assert_close(x.grad, grad * dx)
    torch.testing.assert_close(act.shift_in.grad, -(grad * dx).sum(0))
    torch.testing.assert_close(act.shift_out.grad, grad.sum(0))
    torch.testing.assert_close(act.slope.grad, (grad * torch.where(u < 0, u, 0.0)).sum(0))


def test_zero_or_alpha_values_and_gradients():
    q = ZeroOrAlpha(0.01)
    p = torch.tensor([0.0, 0.004, 0.006, 0.01, 0.2, 0.0049], requires_grad=True)
    y = q(p)
    a = q.alpha.detach()
    assert torch.equal(y.detach(), torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0, 0.0]) * a)
    grad = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    y.backward(grad)
    r = (p / a).detach()
    inside = (r >= 0) & (r <= 1)
    torch.testing.assert_close(p.grad, grad * inside)
    da = torch.where(inside, torch.round(r) - r, (r > 1).float())
    torch.testing.assert_close(q.alpha.grad, (grad * da).sum())


def test_binary_attention_core_against_a_hand_computation():
    torch.manual_seed(5)
    core = AttentionCore(8, 2, binary=True)
    q, k, v = torch.randn(2, 5, 8), torch.randn(2, 3, 8), torch.randn(2, 3, 8)
    out = core(q, k, v)
    sq, sk, sv = (torch.where(t >= 0, 1.0, -1.0) for t in (q, k, v))
    a = core.probs_quantizer.alpha.detach()
    expected = []
    for h in range(2):
        cols = slice(4 * h, 4 * h + 4)
        probs = torch.softmax(sq[..., cols] @ sk[..., cols].transpose(1, 2) / 2.0, dim=-1)
        quantized = torch.where(probs >= a / 2, a, 0.0)
        expected.append(quantized @ sv[..., cols])
    torch.testing.assert_close(out, torch.cat(expected, dim=-1))
    assert core.edgecompress_macs((q, k, v), out) == {"w1a1": 5 * 3 * 8, "u1a1": 5 * 3 * 8}
    float_core = AttentionCore(8, 2)
    assert float_core.edgecompress_macs((q, k, v), out) == {"w32a32": 2 * 5 * 3 * 8}


def test_binary_linear_block_shortcuts():
    torch.manual_seed(6)
    x = torch.randn(2, 3, 4)
    wide, narrow, same = BinaryLinearBlock(4, 8), BinaryLinearBlock(8, 4), BinaryLinearBlock(4, 4)
    assert torch.equal(wide.shortcut(x), torch.cat([x, x], dim=-1))
    assert torch.equal(narrow.shortcut(torch.cat([x, 3 * x], dim=-1)), 2 * x)
    assert torch.equal(same.shortcut(x), x)
    assert wide(x).shape == (2, 3, 8)


@pytest.mark.parametrize("contiguous", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rprelu_equals_its_masked_autograd_form_bit_for_bit(dtype, contiguous):
    """Values and every gradient as ``torch.where(u >= 0, u, slope * u) + shift_out`` under
    autograd, with some inputs exactly at the threshold; for a non-contiguous incoming
    gradient the input's gradient still bit for bit, the parameters' (sums over tokens, in an
    order that follows the layout) to float rounding."""
    torch.manual_seed(0)
    act = RPReLU(16).to(dtype)
    with torch.no_grad():
        act.shift_in.normal_(), act.slope.uniform_(-0.5, 0.5), act.shift_out.normal_()
    x = torch.randn(3, 7, 16, dtype=dtype)
    x[0, :2] = act.shift_in.detach()  # u exactly 0
    g = torch.randn(3, 7, 16, dtype=dtype) if contiguous else \
        torch.randn(16, 7, 3, dtype=dtype).permute(2, 1, 0)
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    y1 = act(x1)
    y1.backward(g)
    grads1 = [x1.grad] + [p.grad.clone() for p in (act.shift_in, act.slope, act.shift_out)]
    act.zero_grad()
    u = x2 - act.shift_in
    y2 = torch.where(u >= 0, u, act.slope * u) + act.shift_out
    y2.backward(g)
    grads2 = [x2.grad] + [p.grad for p in (act.shift_in, act.slope, act.shift_out)]
    assert torch.equal(y1, y2)
    assert torch.equal(grads1[0], grads2[0])
    for a, b in zip(grads1[1:], grads2[1:]):
        if contiguous:
            assert torch.equal(a, b)
        else:
            torch.testing.assert_close(a, b)
