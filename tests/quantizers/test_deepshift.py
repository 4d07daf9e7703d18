"""DeepShift-Q and DeepShift-PS against the authors' released code (github.com/mostafaelhoushi/
DeepShift), restated here from its behaviour: the in-place latent clamps, the conversion of float
weights, the per-layer-type initialisation, and exact rounding to a power of two."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from edgecompress.errors import ConversionError
from edgecompress.layers import ShiftConv2d, ShiftLinear
from edgecompress.quantizers.shift import PARAMETRIZATIONS, DeepShiftPS, DeepShiftQ, round_log2


def exact_round_log2(x: float) -> int:
    """The integer nearest to log2(x), x > 0, in exact rational arithmetic: floor(log2 x) = e,
    then up iff x > 2^(e + 1/2), i.e. x^2 > 2^(2e + 1)."""
    f = Fraction(x)
    e = math.frexp(x)[1] - 1  # x in [2^e, 2^(e+1))
    return e + 1 if f * f > Fraction(2) ** (2 * e + 1) else e


def around_boundaries(dtype: torch.dtype, ks, steps: int = 4) -> torch.Tensor:
    """For each k, the float of ``dtype`` nearest to 2^(k + 1/2) and ``steps`` neighbours on
    each side."""
    values = []
    for k in ks:
        centre = torch.tensor(2.0 ** k * math.sqrt(2.0), dtype=dtype)
        lo, hi = centre.clone(), centre.clone()
        values.append(centre)
        for _ in range(steps):
            lo = torch.nextafter(lo, torch.zeros_like(lo))
            hi = torch.nextafter(hi, torch.full_like(hi, math.inf))
            values += [lo, hi]
    return torch.stack(values)


# --- rounding to a power of two --------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_round_log2_is_exact_at_and_around_every_boundary(dtype):
    ks = range(-14, 10) if dtype == torch.float16 else range(-40, 20)
    x = around_boundaries(dtype, ks)
    expected = [exact_round_log2(v) for v in x.tolist()]
    got = round_log2(x)
    assert got.dtype == dtype
    assert got.tolist() == expected
    # the floats around each boundary 2^(k + 1/2) fall on both sides of it
    group = 1 + 2 * 4
    for i, k in enumerate(ks):
        assert set(expected[i * group:(i + 1) * group]) == {k, k + 1}


def test_round_log2_on_powers_of_two_subnormals_and_random_values():
    powers = torch.tensor([2.0 ** k for k in range(-149, 128)], dtype=torch.float32)
    assert round_log2(powers).tolist() == list(range(-149, 128))
    tiny = torch.tensor([1e-40, 3e-42, 1e-45], dtype=torch.float32)  # subnormal float32
    assert round_log2(tiny).tolist() == [exact_round_log2(v) for v in tiny.tolist()]
    torch.manual_seed(0)
    x = torch.rand(10_000, dtype=torch.float64) * 10.0 ** torch.randint(-8, 8, (10_000,))
    assert round_log2(x).tolist() == [exact_round_log2(v) for v in x.tolist()]


def test_deepshift_q_rounds_exactly_next_to_each_boundary_of_its_range():
    """float32 latents at and around 2^-0.5, 2^-1.5, 2^-2.5 (the 3-bit boundaries): each gets the
    power of two nearest to it, where round(log2(.)) in float32 errs on a few of them."""
    w = around_boundaries(torch.float32, (-1, -2, -3), steps=6)
    p = DeepShiftQ(w.shape, 3)
    with torch.no_grad():
        p.weight.copy_(torch.cat([w[: len(w) // 2], -w[len(w) // 2:]]))
    expected = [math.copysign(2.0 ** exact_round_log2(abs(v)), v) for v in p.weight.tolist()]
    assert p.hard().tolist() == expected


def test_deepshift_ps_rounds_its_shift_half_to_even_like_the_authors_torch_round():
    p = DeepShiftPS((6,), 4)
    with torch.no_grad():
        p.shift.copy_(torch.tensor([-0.5, -1.5, -2.5, -3.5, -0.49, -5.5]))
        p.sign.fill_(1.0)
    assert p.hard().tolist() == [1.0, 0.25, 0.25, 0.0625, 1.0, 2.0 ** -6]


# --- DeepShift-Q: the latent is clamped in place ----------------------------------------------

def authors_q_steps(w: np.ndarray, grads: list[np.ndarray], lr: float, p_min: int):
    """The authors' DeepShift-Q training step, restated: before each forward W is clamped in
    place (|W| into [2^p_min, 1], zeros untouched), the forward value is sign(W) 2^round(log2|W|),
    the gradient reaches W unchanged, then plain SGD. Returns the forward values per step and
    the final W."""
    values = []
    for g in grads:
        w = np.sign(w) * np.clip(np.abs(w), 2.0 ** p_min, 1.0)
        with np.errstate(divide="ignore"):  # log2(0) = -inf: the authors' value 0 for W = 0
            values.append(np.sign(w) * 2.0 ** np.round(np.log2(np.abs(w))))
        w = w - lr * g
    return values, w


def our_q_steps(clamp_latent: bool, w0: torch.Tensor, grads, lr: float):
    p = DeepShiftQ(w0.shape, 3, clamp_latent=clamp_latent).double()
    with torch.no_grad():
        p.weight.copy_(w0)
    optimizer = torch.optim.SGD(p.parameters(), lr=lr)
    values = []
    for g in grads:
        optimizer.zero_grad()
        w = p()
        values.append(w.detach().numpy().copy())
        w.backward(torch.from_numpy(g))
        optimizer.step()
    return values, p


def test_deepshift_q_latent_is_clamped_in_place_as_in_the_authors_code():
    """Eight SGD steps: four push |W| up past 1, four pull it down. The authors' W is held at 1
    and comes down to 0.6 (value 0.5); a free latent drifts to 1.3 and comes back only to 0.9
    (value still 1). Likewise a W of 0.2 pushed down is held at 2^-3 and ends at 0.525 (value
    0.5), where a free one crosses zero and comes back to 0.2 (value 0.25)."""
    w0 = np.array([0.9, -0.9, 0.2, -0.2, 0.0])
    c = np.array([-1.0, 1.0, 1.0, -1.0, 1.0])
    grads = [c if t < 4 else -c for t in range(8)]
    lr = 0.1
    ref_values, ref_w = authors_q_steps(w0, grads, lr, p_min=-3)
    values, p = our_q_steps(True, torch.from_numpy(w0), grads, lr)
    for ours, theirs in zip(values, ref_values):
        assert ours[:4].tolist() == theirs[:4].tolist()
    np.testing.assert_allclose(p.weight.detach().numpy(), ref_w, rtol=0, atol=1e-12)
    assert p.hard()[:4].tolist() == [0.5, -0.5, 0.5, -0.5]  # the reference's next values
    assert ref_w[:4] == pytest.approx([0.6, -0.6, 0.525, -0.525])

    old, q = our_q_steps(False, torch.from_numpy(w0), grads, lr)
    assert q.weight[:4].tolist() == pytest.approx([0.9, -0.9, 0.2, -0.2])
    assert q.hard()[:4].tolist() == [1.0, -1.0, 0.25, -0.25]
    assert any(a.tolist() != b.tolist() for a, b in zip(old, values))


def test_deepshift_q_projection_only_in_training_forwards_and_zero_stays_zero():
    p = DeepShiftQ((5,), 3)  # |W| in [2^-3, 1]
    start = torch.tensor([1.5, -2.0, 0.01, -0.05, 0.0])
    with torch.no_grad():
        p.weight.copy_(start)
    p.eval()
    assert p().tolist() == [1.0, -1.0, 0.125, -0.125, 0.125]  # Sgn(0) = +1 (not the authors' 0)
    assert p.weight.tolist() == start.tolist()
    p.train()
    with torch.no_grad():
        p()
    assert p.weight.tolist() == start.tolist()
    p().sum().backward()
    assert p.weight.tolist() == [1.0, -1.0, 0.125, -0.125, 0.0]
    assert p.weight.grad.tolist() == [1.0] * 5

    free = DeepShiftQ((5,), 3, clamp_latent=False)
    with torch.no_grad():
        free.weight.copy_(start)
    free().sum().backward()
    assert free.weight.tolist() == start.tolist()
    assert "clamp_latent=False" in repr(free)


# --- DeepShift-PS: conversion and initialisation ----------------------------------------------

@pytest.mark.parametrize("bits", [2, 3, 4])
def test_deepshift_ps_from_float_is_the_authors_conversion_on_every_weight(bits):
    """shift = round(log2|w|) and sign = sign(w), no normalisation; the shift clamped into the
    range as the first forward of the authors' layer does (0 gives -inf, clamped to the
    bottom, with sign 0)."""
    torch.manual_seed(bits)
    conv = torch.nn.Conv2d(32, 32, 3)
    with torch.no_grad():
        conv.weight.mul_(20.0)  # spread |w| across and beyond [2^-6, 1]
        conv.weight[0, 0] = 0.0
    w = conv.weight.detach().numpy().astype(np.float64)
    lo = -(2 ** (bits - 1) - 2)
    with np.errstate(divide="ignore"):
        shift = np.clip(np.round(np.log2(np.abs(w))), lo, 0)
    sign = np.sign(w)

    layer = ShiftConv2d.from_float(conv, method="deepshift-ps", bits=bits, init="from-float")
    p = layer.weight_param
    assert p.shift.detach().numpy().tolist() == shift.tolist()
    assert p.sign.detach().numpy().tolist() == sign.tolist()
    assert layer.discrete_weight().numpy().tolist() == (sign * 2.0 ** shift).tolist()
    assert (layer.discrete_weight()[0, 0] == 0).all()
    assert len(np.unique(shift)) == -lo + 1  # every shift of the range occurs


def test_deepshift_ps_from_float_rounds_float64_weights_in_their_own_precision():
    """float64 weights a few float64 steps either side of 2^-0.5 and 2^-1.5 (all one float32
    value) keep their side of the boundary."""
    w = around_boundaries(torch.float64, (-1, -2), steps=3).reshape(2, 7)
    linear = torch.nn.Linear(7, 2).double()
    with torch.no_grad():
        linear.weight.copy_(w)
    layer = ShiftLinear.from_float(linear, method="deepshift-ps", bits=3, init="from-float")
    expected = [[exact_round_log2(v) for v in row] for row in w.tolist()]
    assert layer.weight_param.shift.tolist() == expected
    assert {v for row in expected for v in row} == {-2, -1, 0}


def test_deepshift_ps_paper_init_per_layer_type():
    """Linear: P ~ U(p_lo, 0) over the whole range; conv: P ~ U(-10, -1) then clamped, so
    (-6 + 10) / 9 of a 4-bit conv's shifts sit at -6. S ~ U(-1, 1) for both."""
    torch.manual_seed(11)
    linear = ShiftLinear(256, 256, method="deepshift-ps", bits=4).weight_param.shift
    assert linear.min() >= -6 and linear.max() <= 0
    assert linear.mean().item() == pytest.approx(-3.0, abs=0.05)
    assert linear.std().item() == pytest.approx(6 / math.sqrt(12), rel=0.02)
    assert (linear == -6).float().mean().item() == 0.0
    for edge in range(-6, 0):  # each unit interval holds a sixth
        share = ((linear >= edge) & (linear < edge + 1)).float().mean().item()
        assert share == pytest.approx(1 / 6, abs=0.01)
    assert (ShiftLinear(64, 64, method="deepshift-ps", bits=2).weight_param.shift == 0).all()

    conv = ShiftConv2d(64, 64, 3, method="deepshift-ps", bits=4).weight_param
    assert conv.shift.max() <= -1 and conv.shift.min() >= -6
    assert (conv.shift == -6).float().mean().item() == pytest.approx(4 / 9, abs=0.01)
    for p in (conv, ShiftLinear(64, 64, method="deepshift-ps").weight_param):
        assert p.sign.abs().max() <= 1 and p.sign.mean().abs() < 0.02


# --- options ----------------------------------------------------------------------------------

def test_method_options_are_validated_with_clear_errors():
    with pytest.raises(ConversionError, match=r"^deepshift-q: clamp_latent must be True or "
                                              r"False, got 1$"):
        DeepShiftQ((4,), 3, clamp_latent=1)
    with pytest.raises(ConversionError, match=r"^deepshift-q: unknown option\(s\) clamp; it "
                                              r"takes clamp_latent$"):
        DeepShiftQ((4,), 3, clamp=False)
    for method in ("deepshift-ps", "s3", "denseshift"):
        with pytest.raises(ConversionError, match=rf"^{method}: unknown option\(s\) "
                                                  r"clamp_latent; it takes no method options$"):
            ShiftConv2d(4, 4, 3, method=method, clamp_latent=False)
    assert DeepShiftQ.check_options({}) == {"clamp_latent": True}
    assert ShiftLinear(4, 4, method="deepshift-q").weight_param.clamp_latent is True
    assert all(PARAMETRIZATIONS[m].check_options({}) == {} for m in ("s3", "denseshift"))
