"""Uniform n-bit quantizers: exactly 2^b codes, the STE and LSQ gradients, calibration, bad
options."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from edgecompress import quantizers
from edgecompress.errors import ConversionError, EdgecompressError
from edgecompress.quantizers.uniform import (UniformActivationQuantizer, UniformWeightQuantizer,
                                             calibrate)


@pytest.mark.parametrize("bits", range(2, 9))
def test_weights_hit_exactly_two_to_the_bits_codes_per_channel(bits):
    # each channel a symmetric ramp of its own magnitude: every code appears
    ramp = torch.linspace(-1.0, 1.0, 1001)
    w = torch.stack([ramp * 3.0, ramp * 0.013, ramp * 7.7, -ramp * 0.5])
    quantizer = quantizers.get("uniform-weight", bits=bits)
    codes, step = quantizer.codes(w)
    for c in range(len(w)):
        assert sorted(codes[c].unique().tolist()) == list(range(-2 ** (bits - 1),
                                                                2 ** (bits - 1)))
        assert step[c] == w[c].abs().max() / 2 ** (bits - 1)
    q = quantizer(w)
    assert torch.equal(q, codes.float() * step.view(-1, 1))
    error, s = (q - w).abs(), step.view(-1, 1)
    top = w > (2 ** (bits - 1) - 0.5) * s  # clamped to the largest code
    assert (error <= s / 2 * (1 + 1e-5))[~top].all() and (error <= s * (1 + 1e-5)).all()
    assert torch.equal(quantizer(torch.zeros(2, 5)), torch.zeros(2, 5))  # a zero channel


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("signed", [False, True])
def test_activations_hit_exactly_two_to_the_bits_codes(bits, signed):
    quantizer = UniformActivationQuantizer(bits, signed=signed, range="calibrated")
    x = torch.linspace(-1.0 if signed else 0.0, 1.0, 2000)
    calibrate(nn.Sequential(quantizer), [x])
    codes = torch.round(quantizer(x) / quantizer.step)
    expected = range(-2 ** (bits - 1), 2 ** (bits - 1)) if signed else range(2 ** bits)
    assert sorted(codes.unique().tolist()) == list(expected)


def test_weight_gradient_is_straight_through():
    w = torch.randn(4, 6, requires_grad=True)
    g = torch.randn(4, 6)
    UniformWeightQuantizer(3)(w).backward(g)
    assert torch.equal(w.grad, g)


@pytest.mark.parametrize("signed", [True, False])
def test_lsq_gradients_match_their_formulas(signed):
    torch.manual_seed(0)
    bits, step = 3, 0.25
    quantizer = UniformActivationQuantizer(bits, signed=signed)
    quantizer.step.data.fill_(step)
    quantizer.initialized.fill_(True)
    x = (torch.randn(5, 7) * 0.8).requires_grad_()
    g = torch.randn(5, 7)
    y = quantizer(x)
    y.backward(g)
    q_min, q_max = (-4, 3) if signed else (0, 7)
    v = x.detach() / step
    inside = (v >= q_min) & (v <= q_max)
    assert torch.equal(y.detach(), torch.round(v).clamp(q_min, q_max) * step)
    assert torch.equal(x.grad, g * inside)
    d_step = torch.where(v < q_min, float(q_min),
                         torch.where(v > q_max, float(q_max), torch.round(v) - v))
    scale = 1.0 / math.sqrt(7 * q_max)  # 7 features per sample
    torch.testing.assert_close(quantizer.step.grad, (g * d_step).sum() * scale)
    # every case of dQ/ds is exercised: below, inside and above the range
    assert inside.any() and (v < q_min).any() and (v > q_max).any()


def test_lsq_step_starts_from_the_first_training_batch_only():
    quantizer = UniformActivationQuantizer(4)
    quantizer.eval()
    quantizer(torch.zeros(3, 4))  # e.g. a model summary: does not set the step
    assert not quantizer.initialized and quantizer.step.item() == 1.0
    x = torch.rand(8, 4) * 3
    quantizer.train()
    quantizer(x)
    assert quantizer.initialized
    assert quantizer.step.item() == pytest.approx(2 * x.abs().mean().item() / math.sqrt(15))


def test_calibration_minmax_and_percentile():
    batches = [torch.tensor([0.0, 1.0, 2.0]), torch.tensor([0.5, 4.0, -3.0])]
    minmax = UniformActivationQuantizer(8, signed=True, range="calibrated")
    calibrate(nn.Sequential(minmax), batches)
    assert (minmax.lo.item(), minmax.hi.item()) == (-3.0, 4.0)
    assert minmax.step.item() == 4.0 / 128
    unsigned = UniformActivationQuantizer(4, range="calibrated")
    calibrate(nn.Sequential(unsigned), batches)
    assert unsigned.step.item() == pytest.approx(4.0 / 15)
    torch.manual_seed(1)
    data = [torch.randn(10000) for _ in range(3)]
    data[0][0] = 1000.0  # an outlier the percentile observer ignores
    pct = UniformActivationQuantizer(8, signed=True, range="calibrated", observer="percentile",
                                     percentile=99.0)
    calibrate(nn.Sequential(pct), data)
    expected = sum(torch.quantile(d, 0.99) for d in data) / 3
    assert pct.hi.item() == pytest.approx(expected.item(), rel=1e-5)
    assert pct.hi.item() < 3.0
    # calibrating again starts from an empty range
    calibrate(nn.Sequential(minmax), [torch.tensor([-1.0, 1.0])])
    assert (minmax.lo.item(), minmax.hi.item()) == (-1.0, 1.0)
    x = torch.linspace(-2, 2, 9, requires_grad=True)
    minmax(x).sum().backward()  # straight-through inside [-128 s, 127 s], 0 outside
    s = minmax.step
    assert torch.equal(x.grad, ((x >= -128 * s) & (x <= 127 * s)).float())
    assert x.grad.tolist() == [0, 0, 1, 1, 1, 1, 0, 0, 0]


@pytest.mark.parametrize("bad", [1, 9, 0, 16, 4.0, True, "8", None])
def test_bad_bits_are_clear_errors(bad):
    with pytest.raises(ConversionError, match=rf"bits must be an int in 2\.\.8, got {bad!r}"):
        UniformWeightQuantizer(bad)
    with pytest.raises(EdgecompressError, match=r"activation_bits must be an int in 2\.\.8"):
        UniformActivationQuantizer(bad)


@pytest.mark.parametrize("options, message", [
    ({"range": "ema"}, r"activation_range must be one of \('learned', 'calibrated'\), got 'ema'"),
    ({"observer": "mse"}, r"observer must be one of \('minmax', 'percentile'\), got 'mse'"),
    ({"percentile": 101}, r"percentile must be a number in \(50, 100\], got 101"),
    ({"signed": "yes"}, r"activation_signed must be true or false, got 'yes'"),
])
def test_bad_activation_options_are_clear_errors(options, message):
    with pytest.raises(ConversionError, match=message):
        UniformActivationQuantizer(8, **options)


def test_calibrate_needs_a_calibrated_quantizer_and_batches():
    with pytest.raises(ConversionError, match="no calibrated activation quantizer"):
        calibrate(nn.Sequential(UniformActivationQuantizer(8)), [torch.ones(2)])
    with pytest.raises(ConversionError, match="no batches were given"):
        calibrate(nn.Sequential(UniformActivationQuantizer(8, range="calibrated")), [])


def test_uniform_quantizers_cannot_enter_a_pc_pair():
    with pytest.raises(ValueError, match="'uniform-weight' is not elementwise"):
        quantizers.pair("uniform-weight", "identity")
    with pytest.raises(ValueError, match="not elementwise"):
        quantizers.method_pair("bnn", prox="uniform-activation")
