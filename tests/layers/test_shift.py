"""Power-of-two (shift) methods against their papers' formulas (see edgecompress.quantizers.shift)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from torch import nn

import edgecompress as ec
from edgecompress.analysis import WeightFlipMonitor
from edgecompress.errors import ConversionError
from edgecompress.layers import ShiftConv2d, ShiftLinear
from edgecompress.quantizers.shift import PARAMETRIZATIONS, S3, DeepShiftPS, DeepShiftQ, DenseShift
from edgecompress.train import LayerRegularizers, TrainConfig, Trainer

METHODS = list(PARAMETRIZATIONS)


@pytest.fixture
def float_linear_path(monkeypatch):
    """Frozen shift linears on their decoded float path, which equals the training form bit for
    bit (the low-bit kernel equals it to float rounding: tests/deploy/test_lowbit_linear.py)."""
    from edgecompress.deploy import PackedShiftLinear
    monkeypatch.setattr(PackedShiftLinear, "LOWBIT_KERNEL_MAX_ROWS", 0)
LN2 = math.log(2.0)


def b01(x):
    return (x > 0).double()


def sgn(x):
    return torch.where(x >= 0, 1.0, -1.0).double()


# --- value sets ----------------------------------------------------------------------------------

@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6])
def test_hard_weights_lie_in_the_documented_value_set(method, bits):
    torch.manual_seed(bits)
    layer = ShiftConv2d(8, 16, 3, method=method, bits=bits, init="paper")
    values = set(torch.unique(layer.discrete_weight()).tolist())
    allowed = set(PARAMETRIZATIONS[method].value_set(bits))
    with torch.no_grad():  # the training forward uses exactly these values
        assert torch.equal(layer.quantized_weight(), layer.discrete_weight())
    assert values <= allowed, values - allowed
    assert layer.weight_bits == bits
    assert len(allowed) <= 2 ** bits  # fits the storage


def test_value_sets_of_the_papers_3_bit_encodings():
    assert S3.value_set(3) == [-4, -2, -1, 0, 1, 2, 4]
    assert DenseShift.value_set(3) == [-8, -4, -2, -1, 1, 2, 4, 8]
    assert DenseShift.value_set(2) == [-2, -1, 1, 2]
    assert S3.value_set(2) == [-1, 0, 1]
    assert DeepShiftQ.value_set(3) == [-1, -0.5, -0.25, -0.125, 0.125, 0.25, 0.5, 1]
    assert DeepShiftPS.value_set(3) == [-1, -0.5, -0.25, 0, 0.25, 0.5, 1]


def test_value_sets_at_5_and_6_bits_as_documented():
    """The table of quantizers/shift.py, written out: powers of two from 1 down to 2^-15 /
    2^-31 (DeepShift-Q), 2^-14 / 2^-30 with 0 (DeepShift-PS), up to 2^14 / 2^30 with 0 (S3) and
    up to 2^15 / 2^31 without 0 (DenseShift)."""
    def both(magnitudes, zero):
        return sorted([-m for m in magnitudes] + ([0.0] if zero else []) + list(magnitudes))

    for bits, q_lo, ps_lo, s3_hi, dense_hi in ((5, 15, 14, 14, 15), (6, 31, 30, 30, 31)):
        q = DeepShiftQ.value_set(bits)
        assert q == both([2.0 ** -p for p in range(q_lo + 1)], zero=False) and len(q) == 2 ** bits
        ps = DeepShiftPS.value_set(bits)
        assert ps == both([2.0 ** -p for p in range(ps_lo + 1)], zero=True)
        assert len(ps) == 2 ** bits - 1
        s3 = S3.value_set(bits)
        assert s3 == both([2.0 ** k for k in range(s3_hi + 1)], zero=True)
        assert len(s3) == 2 ** bits - 1
        dense = DenseShift.value_set(bits)
        assert dense == both([2.0 ** k for k in range(dense_hi + 1)], zero=False)
        assert len(dense) == 2 ** bits
    assert S3.value_set(5)[-1] == 16384 and DenseShift.value_set(6)[0] == -2147483648
    assert DeepShiftQ.value_set(6)[len(DeepShiftQ.value_set(6)) // 2] == 2.0 ** -31


@pytest.mark.parametrize("bits", [4, 5, 6])
def test_every_shift_level_of_s3_and_denseshift_is_reached_by_its_latent_pattern(
        bits, float_linear_path):
    """S3's shift is the number of leading shift latents > 0, DenseShift's level the number of
    trailing level latents > 0: one weight per level reaches every value of the set (random
    latents cannot reach the top levels at 5 and 6 bits), and a 6-bit layer freezes into codes
    that round-trip exactly."""
    from edgecompress import deploy
    k = 2 ** (bits - 1) - 2
    s3 = S3((k + 1,), bits)
    shifts = torch.where(torch.arange(k).unsqueeze(0) < torch.arange(k + 1).unsqueeze(1), 1.0, -1.0)
    _latents(s3, [torch.ones(k + 1), torch.ones(k + 1), *shifts.t()])
    assert s3.hard().tolist() == [2.0 ** i for i in range(k + 1)]
    levels = k + 1
    dense = DenseShift((levels + 1,), bits)
    on = torch.arange(levels).unsqueeze(0) >= levels - torch.arange(levels + 1).unsqueeze(1)
    _latents(dense, [-torch.ones(levels + 1), *torch.where(on, 1.0, -1.0).t()])
    assert dense.hard().tolist() == [-(2.0 ** i) for i in range(levels + 1)]

    layer = ShiftLinear(40, 3, method="denseshift", bits=bits)
    with torch.no_grad():
        layer.weight_param.w_sign.normal_()
        for i, name in enumerate(layer.weight_param.latent_names[1:]):
            getattr(layer.weight_param, name).fill_(1.0 if i >= levels // 2 else -1.0)
    frozen = deploy.freeze(nn.Sequential(layer))
    assert int(frozen[0].codes.max()) < 2 ** bits
    x = torch.randn(4, 40)
    with torch.no_grad():
        assert torch.equal(frozen(x), layer(x))
        assert torch.equal(frozen[0].discrete_weight(), layer.discrete_weight())


def test_every_s3_and_denseshift_code_is_reachable():
    torch.manual_seed(0)
    for cls, bits in ((S3, 3), (DenseShift, 3), (S3, 4), (DenseShift, 4)):
        p = cls((4000,), bits, init="paper")
        with torch.no_grad():
            for name in p.latent_names:
                getattr(p, name).normal_()  # wide latents: every code appears
        assert sorted(torch.unique(p.hard()).tolist()) == cls.value_set(bits)


def test_denseshift_never_produces_zero():
    torch.manual_seed(1)
    p = DenseShift((5000,), 3, init="low-variance")
    assert (p.hard() != 0).all()


# --- forward values and gradients against the formulas -----------------------------------------

def _latents(p, values):
    with torch.no_grad():
        for name, v in zip(p.latent_names, values):
            getattr(p, name).copy_(v)


def test_s3_forward_and_gradients_match_the_products_and_ste():
    torch.manual_seed(2)
    p = S3((50,), 3, init="paper").double()
    ws, wz, w1, w2 = (torch.randn(50, dtype=torch.float64) for _ in range(4))
    _latents(p, (ws, wz, w1, w2))
    shift = b01(w1) * (b01(w2) + 1)
    expected = sgn(ws) * b01(wz) * 2 ** shift
    w = p()
    assert torch.equal(w.detach(), expected)
    g = torch.randn(50, dtype=torch.float64)
    w.backward(g)
    common = g * sgn(ws) * b01(wz) * LN2 * 2 ** shift
    torch.testing.assert_close(p.w_sign.grad, g * b01(wz) * 2 ** shift)
    torch.testing.assert_close(p.w_sparse.grad, g * sgn(ws) * 2 ** shift)
    torch.testing.assert_close(p.w_shift1.grad, common * (b01(w2) + 1))
    torch.testing.assert_close(p.w_shift2.grad, common * b01(w1))


def test_denseshift_forward_and_sqrt_surrogate_gradient():
    torch.manual_seed(3)
    p = DenseShift((60,), 3, init="paper").double()
    ws, t1, t2, t3 = (torch.randn(60, dtype=torch.float64) for _ in range(4))
    _latents(p, (ws, t1, t2, t3))
    s1 = b01(t1)
    s2 = (s1 + 1) * b01(t2)
    s3 = (s2 + 1) * b01(t3)
    w = p()
    assert torch.equal(w.detach(), sgn(ws) * 2 ** s3)
    g = torch.randn(60, dtype=torch.float64)
    w.backward(g)
    d_level = g * sgn(ws) * 0.5 / torch.sqrt(s3 + 1)  # d(s sqrt(S + 1)) / dS
    torch.testing.assert_close(p.w_sign.grad, g * torch.sqrt(s3 + 1))
    torch.testing.assert_close(p.w_t3.grad, d_level * (s2 + 1))
    torch.testing.assert_close(p.w_t2.grad, d_level * b01(t3) * (s1 + 1))
    torch.testing.assert_close(p.w_t1.grad, d_level * b01(t3) * b01(t2))


def test_deepshift_ps_unsymmetric_gradients():
    p = DeepShiftPS((6,), 4, init="paper").double()
    shift = torch.tensor([-0.4, -1.6, -2.5, 0.3, -7.0, -3.2], dtype=torch.float64)
    sign = torch.tensor([0.7, -0.2, -1.4, 1.6, 0.4, -0.6], dtype=torch.float64)
    _latents(p, (shift, sign))
    rounded = torch.round(shift.clamp(-6, 0))
    s = torch.sign(torch.round(sign))
    w = p()
    assert torch.equal(w.detach(), s * 2 ** rounded)
    assert set(w.detach().tolist()) <= set(DeepShiftPS.value_set(4))
    g = torch.randn(6, dtype=torch.float64)
    w.backward(g)
    torch.testing.assert_close(p.sign.grad, g)  # g, not g 2^p
    torch.testing.assert_close(p.shift.grad, LN2 * 2 ** rounded * s * g)


def test_deepshift_q_rounds_log2_and_passes_the_gradient_straight_through():
    p = DeepShiftQ((5,), 3, init="paper").double()
    weight = torch.tensor([0.3, -0.7, 5.0, -0.01, 0.09], dtype=torch.float64)
    _latents(p, (weight,))
    w = p()
    assert w.detach().tolist() == [0.25, -0.5, 1.0, -0.125, 0.125]
    w.backward(torch.arange(1.0, 6.0, dtype=torch.float64))
    assert p.weight.grad.tolist() == [1, 2, 3, 4, 5]


def test_s3_and_denseshift_gradients_on_hand_computed_latents():
    # S3 3-bit, g = 1; latents (W_sign, W_sparse, W_s1, W_s2) per weight
    p = S3((4,), 3).double()
    _latents(p, [torch.tensor(v, dtype=torch.float64) for v in (
        [0.3, -0.1, 0.5, 0.0], [0.2, 0.4, -0.6, 0.1], [0.5, 0.2, 0.9, -0.2], [0.7, -0.3, 0.9, 0.8])])
    w = p()
    w.sum().backward()
    assert w.tolist() == [4, -2, 0, 1]  # shifts 2, 1, 2 (sparse off), 0; Sgn(0) = +1
    assert p.w_sign.grad.tolist() == [4, 2, 0, 1]  # B01(W_sparse) 2^shift
    assert p.w_sparse.grad.tolist() == [4, -2, 4, 1]  # Sgn(W_sign) 2^shift
    ln2 = torch.tensor([LN2] * 4, dtype=torch.float64)
    torch.testing.assert_close(p.w_shift1.grad, ln2 * torch.tensor([8.0, -2, 0, 2]).double())
    torch.testing.assert_close(p.w_shift2.grad, ln2 * torch.tensor([4.0, -2, 0, 0]).double())

    # DenseShift 3-bit, g = 1; latents (W_sign, T1, T2, T3); levels S3 = 3, 2, 0, 1
    d = DenseShift((4,), 3).double()
    _latents(d, [torch.tensor(v, dtype=torch.float64) for v in (
        [0.2, -0.3, 0.4, -0.2], [0.1, -0.1, 0.5, 0.3], [0.1, 0.2, 0.5, -0.4],
        [0.1, 0.3, -0.5, 0.6])])
    w = d()
    w.sum().backward()
    assert w.tolist() == [8, -4, 1, -2]
    r2, r3 = math.sqrt(2), math.sqrt(3)
    expected = {  # sqrt(S + 1) surrogate: dW_sign = sqrt(S + 1), dS = s / (2 sqrt(S + 1))
        "w_sign": [2, r3, 1, r2],
        "w_t3": [0.25 * 3, -0.5 / r3 * 2, 0.5 * 3, -0.5 / r2],  # dS (S2 + 1)
        "w_t2": [0.25 * 2, -0.5 / r3, 0, -0.5 / r2 * 2],  # dS B01(T3) (S1 + 1)
        "w_t1": [0.25, -0.5 / r3, 0, 0],  # dS B01(T3) B01(T2)
    }
    for name, values in expected.items():
        torch.testing.assert_close(getattr(d, name).grad,
                                   torch.tensor(values, dtype=torch.float64), msg=name)


def test_deepshift_q_latent_zero_takes_sign_plus_one_and_the_model_still_freezes(
        float_linear_path):
    from edgecompress import deploy
    p = DeepShiftQ((3,), 3)
    _latents(p, (torch.tensor([0.0, -0.0, 1e-9]),))
    assert p.hard().tolist() == [0.125, 0.125, 0.125]  # Sgn(0) = +1, |W| clamped to 2^-3
    net = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 2))
    with torch.no_grad():
        net[1].weight[:2] = 0.0  # a pruned float model
    model = ec.convert(net, "deepshift-q", bits=3, init="from-float")
    assert set(model[1].discrete_weight().unique().tolist()) <= set(DeepShiftQ.value_set(3))
    x = torch.randn(5, 4)
    with torch.no_grad():
        assert torch.equal(deploy.freeze(model)(x), model(x))


def test_deepshift_ps_from_float_keeps_the_nonzero_weights_and_zero_stays_zero():
    torch.manual_seed(12)
    w = torch.randn(32, 16, 3, 3)
    w[0, 0] = 0.0
    p = DeepShiftPS(w.shape, 3, init="from-float", float_weight=w)
    hard = p.hard()
    assert (hard[0, 0] == 0).all()
    assert torch.equal(torch.sign(hard), torch.sign(w))  # s = sign(w) everywhere
    assert (hard.abs() == 1).any() and (hard.abs() == 0.25).any()


def test_deepshift_ps_latent_shift_is_projected_into_range_while_training():
    p = DeepShiftPS((4,), 3)  # P in [-2, 0]
    _latents(p, (torch.tensor([1.5, -0.25, -3.0, -9.0]), torch.ones(4)))
    p.eval()
    w = p()
    assert w.tolist() == [1.0, 1.0, 0.25, 0.25]  # the forward value is clamped in any mode
    assert p.shift.tolist() == [1.5, -0.25, -3.0, -9.0]  # eval does not touch the latents
    p.train()
    with torch.no_grad():
        p()
    assert p.shift.tolist() == [1.5, -0.25, -3.0, -9.0]  # nor does a no-grad forward
    p().sum().backward()
    assert p.shift.tolist() == [0.0, -0.25, -2.0, -2.0]  # a training forward projects P
    torch.testing.assert_close(p.shift.grad, LN2 * torch.tensor([1.0, 1.0, 0.25, 0.25]))


def test_float64_models_convert_to_float64_latents():
    net = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 2)).double()
    for method in METHODS:
        model = ec.convert(net, method, activation_bits=4)
        assert {p.dtype for p in model.parameters()} == {torch.float64}, method
        assert model(torch.randn(3, 4, dtype=torch.float64)).dtype == torch.float64


def test_float_weights_of_the_wrong_shape_are_rejected():
    with pytest.raises(ConversionError, match=r"float weights of shape \(3, 4\) do not match "
                                              r"the latent shape \(4, 3\)"):
        S3((4, 3), 3, init="from-float", float_weight=torch.zeros(3, 4))


# --- regularizer, init, layers -------------------------------------------------------------------

def test_s3_regularizer_value_and_the_trainer_adds_it():
    p = S3((4,), 3, init="paper")
    with torch.no_grad():
        p.w_sparse.copy_(torch.tensor([-2.0, 0.5, -0.25, 3.0]))
    assert p.penalty().item() == pytest.approx(1e-5 * 2.25)
    for other in (DenseShift((4,), 3), DeepShiftQ((4,), 3), DeepShiftPS((4,), 3)):
        assert other.penalty().item() == 0.0

    torch.manual_seed(4)
    model = ec.convert(ec.models.create("mlp", hidden=(16, 16)), "s3", bits=3)
    data = torch.utils.data.TensorDataset(torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,)))
    trainer = Trainer(model, data, None, TrainConfig(epochs=1, batch_size=8, progress=False))
    assert any(isinstance(cb, LayerRegularizers) for cb in trainer.callbacks)
    layer = next(m for m in model.modules() if isinstance(m, ShiftLinear))
    with torch.no_grad():
        layer.weight_param.w_sparse.fill_(-1.0)
    x, y = data.tensors
    logits = model(x)
    plain = nn.functional.cross_entropy(logits, y)
    expected = 1e-5 * layer.weight_param.w_sparse.numel()
    assert trainer._loss(logits, x, y).item() == pytest.approx(plain.item() + expected, rel=1e-6)
    metrics = trainer.fit()
    assert metrics["regularizer"] > 0


def test_initialisations_have_the_papers_statistics():
    torch.manual_seed(5)
    s3 = S3((64, 32, 3, 3), 3, init="paper")
    expected = math.sqrt(2 / (3 * 3 * 64))
    for name in s3.latent_names:
        assert getattr(s3, name).std().item() == pytest.approx(expected, rel=0.05)
    dense = DenseShift((64, 32, 3, 3), 3, init="paper")
    for name in dense.latent_names:
        assert getattr(dense, name).std().item() == pytest.approx(1e-3, rel=0.05)
    low = DeepShiftPS((64, 32, 3, 3), 3, init="low-variance")
    assert low.shift.std().item() == pytest.approx(1e-3, rel=0.05)
    ps = DeepShiftPS((64, 32, 3, 3), 4, init="paper")
    assert ps.shift.min() >= -6 and ps.shift.max() <= -1 and ps.sign.abs().max() <= 1


def test_from_float_init_reproduces_the_float_signs_and_magnitudes():
    torch.manual_seed(6)
    w = torch.randn(32, 16, 3, 3)
    for method in METHODS:
        p = PARAMETRIZATIONS[method](w.shape, 3, init="from-float", float_weight=w)
        hard = p.hard()
        nonzero = hard != 0
        assert (torch.sign(hard[nonzero]) == torch.sign(w[nonzero])).float().mean() > 0.99, method
        biggest = w.abs().flatten().argmax()
        assert hard.abs().flatten()[biggest] == hard.abs().max(), method


@pytest.mark.parametrize("method", ["s3", "denseshift"])
@pytest.mark.parametrize("bits", [2, 3, 4])
def test_low_variance_from_float_keeps_the_values_in_small_latents(method, bits):
    torch.manual_seed(8)
    w = torch.randn(16, 8, 3, 3)
    plain = PARAMETRIZATIONS[method](w.shape, bits, init="from-float", float_weight=w)
    small = PARAMETRIZATIONS[method](w.shape, bits, init="low-variance-from-float",
                                     float_weight=w)
    assert torch.equal(small.hard(), plain.hard())
    for name in small.latent_names:
        rms = getattr(small, name).square().mean().sqrt().item()
        assert rms == pytest.approx(1e-3, rel=1e-5), name


@pytest.mark.parametrize("method", ["deepshift-q", "deepshift-ps"])
def test_low_variance_from_float_is_refused_where_latents_carry_magnitudes(method):
    w = torch.randn(4, 3)
    with pytest.raises(ConversionError, match=f"{method}: init='low-variance-from-float' needs "
                                              "latents .*signs alone \\(s3, denseshift\\)"):
        PARAMETRIZATIONS[method](w.shape, 3, init="low-variance-from-float", float_weight=w)


def test_state_dict_round_trip_and_latents_are_the_only_weights():
    torch.manual_seed(7)
    model = ec.convert(ec.models.create("resnet20", width=0.25, shortcut="B"), "denseshift")
    names = [n for n, _ in model.named_parameters()]
    assert not any(n.endswith("conv1.weight") and "layers" in n for n in names)
    assert any("weight_param.w_t3" in n for n in names)
    state = model.state_dict()
    torch.manual_seed(8)
    other = ec.convert(ec.models.create("resnet20", width=0.25, shortcut="B"), "denseshift")
    other.load_state_dict(state)
    x = torch.randn(2, 3, 32, 32)
    model.eval(), other.eval()
    with torch.no_grad():
        assert torch.equal(model(x), other(x))


def test_default_policy_keeps_first_conv_and_classifier_float_and_quantizes_downsampling():
    model, report = ec.convert(ec.models.create("resnet20", width=0.25, shortcut="B"), "s3",
                               return_report=True)
    kinds = {name: kind for name, kind, _ in report.converted}
    kept = {name for name, _, _ in report.kept}
    assert len(kept) == 2  # first conv, classifier
    downsampling = [n for n, m in model.named_modules()
                    if isinstance(m, ShiftConv2d) and m.kernel_size == (1, 1)]
    assert downsampling and all(n in kinds for n in downsampling)
    assert all(isinstance(m, nn.BatchNorm2d) for n, m in model.named_modules() if "bn" in n)


def test_bad_options_and_layers_are_rejected_clearly():
    with pytest.raises(ConversionError, match=r"bits must be one of \(2, 3, 4, 5, 6\), got 7"):
        ec.convert(ec.models.create("mlp"), "s3", bits=7)
    for bad, kind in ((3.0, "float"), (True, "bool"), ("3", "str"), (None, "NoneType")):
        message = (rf"bits must be one of \(2, 3, 4, 5, 6\), got {re.escape(repr(bad))} "
                   rf"\(a {kind}; an int is required\)")
        with pytest.raises(ConversionError, match=message):
            ec.convert(ec.models.create("mlp"), "s3", bits=bad)
        with pytest.raises(ConversionError, match=message):
            ShiftConv2d(3, 4, 3, method="denseshift", bits=bad)
        for cls in PARAMETRIZATIONS.values():
            with pytest.raises(ConversionError, match=message):
                cls((4, 3), bad)
            with pytest.raises(ConversionError, match=message):
                cls.value_set(bad)
    with pytest.raises(ConversionError, match=r"deepshift-q: bits must be .* got 1$"):
        DeepShiftQ((4,), 1)
    assert DenseShift.value_set(np.int64(2)) == [-2, -1, 1, 2]  # numpy integers are integers
    layer = ShiftLinear(3, 2, method="s3", bits=np.int64(3))
    assert type(layer.weight_bits) is int and layer.weight_bits == 3
    for bad in (4.0, True, 1, 17):
        with pytest.raises(ConversionError, match=rf"activation_bits must be an int in 2\.\.16, "
                                                  rf"got {re.escape(repr(bad))}"):
            ec.convert(ec.models.create("mlp"), "s3", activation_bits=bad)
        with pytest.raises(ConversionError, match="activation_bits must be an int in 2..16"):
            ShiftLinear(3, 2, method="s3", activation_bits=bad)
    with pytest.raises(ConversionError, match="init must be one of"):
        ec.convert(ec.models.create("mlp"), "denseshift", init="xavier")
    net = nn.Sequential(nn.Linear(4, 4), nn.GRU(4, 4), nn.Linear(4, 2))
    with pytest.raises(ConversionError, match="GRU"):
        ec.convert(net, "deepshift-q", include=["1"])
    with pytest.raises(ConversionError, match="unknown shift method 'shift'"):
        ShiftLinear(3, 3, method="shift")


def test_summary_counts_shift_weights_at_their_bits():
    model = ec.convert(ec.models.create("mlp", hidden=(64, 64)), "s3", bits=3)
    s = ec.summary(model, (1, 28, 28))
    assert s.params_by_bits[3] == 64 * 64


def test_activation_quantizer_levels_and_clip_gradient():
    layer = ShiftLinear(4, 3, method="s3", activation_bits=2)
    assert layer.input_bits == 2
    q = layer.input_quantizer
    with torch.no_grad():
        q.clip.fill_(3.0)
    x = torch.tensor([-1.0, 0.4, 1.6, 7.0], requires_grad=True)
    y = q(x)
    assert y.tolist() == [0.0, 0.0, 2.0, 3.0]  # levels 0, 1, 2, 3
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 0.0] and q.clip.grad.item() == 1.0


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_compiled_forward_and_backward_match_eager(method):
    torch.manual_seed(9)
    layer = ShiftConv2d(3, 4, 3, padding=1, method=method, bits=3)
    x = torch.randn(2, 3, 6, 6)
    eager = layer(x)
    eager.square().sum().backward()
    grads = [p.grad.clone() for p in layer.parameters()]
    layer.zero_grad()
    compiled = torch.compile(layer, backend="aot_eager")(x)
    compiled.square().sum().backward()
    torch.testing.assert_close(compiled, eager)
    for g, p in zip(grads, layer.parameters()):
        torch.testing.assert_close(p.grad, g)


@pytest.mark.parametrize("method", METHODS)
def test_a_few_steps_of_training_lower_the_loss_and_the_monitor_reports_freezing(method):
    torch.manual_seed(10)
    train = ec.data.load("mnist-bundled", split="train", limit=400)
    model = ec.convert(ec.models.create("mlp", hidden=(64, 64)), method, bits=3)
    monitor = WeightFlipMonitor(since_epoch=1)
    trainer = Trainer(model, train, None, TrainConfig(epochs=3, batch_size=50, optimizer="adam",
                                                      lr=1e-2, progress=False),
                      callbacks=[monitor])
    trainer.fit()
    losses = [h["train_loss"] for h in trainer.history]
    assert losses[-1] < losses[0]
    last = trainer.history[-1]
    assert 0.0 <= last["flip_rate"] <= 1.0 and last["sign_flip_rate"] <= last["flip_rate"]
    assert "unchanged_since_epoch_1" in last and "unchanged_since_epoch_1" not in trainer.history[0]
    assert 0.0 <= last["unchanged_since_epoch_1"] <= 1.0


# --- deployment: packed codes ----------------------------------------------------------------

CHANNELS_LAST = torch.channels_last


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("bits", [2, 3, 4])
def test_packed_shift_layers_are_bit_exact_with_the_training_form(method, bits,
                                                                  float_linear_path):
    from edgecompress import deploy
    from edgecompress.deploy import PackedShiftConv2d, PackedShiftLinear
    torch.manual_seed(bits)
    conv = ShiftConv2d(6, 8, 3, stride=2, padding=1, method=method, bits=bits)
    linear = ShiftLinear(30, 7, method=method, bits=bits)
    for layer, x, kind in ((conv, torch.randn(2, 6, 9, 11), PackedShiftConv2d),
                           (linear, torch.randn(3, 30), PackedShiftLinear)):
        frozen = deploy.freeze(nn.Sequential(layer))
        assert isinstance(frozen[0], kind) and frozen[0].codes.dtype == torch.uint8
        assert int(frozen[0].codes.max()) < 2 ** bits
        with torch.no_grad():
            assert torch.equal(frozen(x), layer(x))
            assert torch.equal(frozen[0].discrete_weight(), layer.discrete_weight())


# ResNet shapes: (in, out, kernel, stride); 1x1 stride-2 = a downsampling shortcut
REAL_CONVS = [(16, 16, 3, 1), (16, 32, 3, 2), (32, 32, 3, 1), (32, 64, 3, 2), (64, 64, 3, 1),
              (16, 32, 1, 2), (32, 64, 1, 2)]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("bits", [2, 3, 4])
def test_packed_shift_convs_at_real_channel_counts_are_bit_exact_in_both_layouts(method, bits):
    """A packed conv at 16-64 channels, stride 1 and 2, 3x3 and 1x1, gives exactly the training
    form's output for the same input, contiguous or channels-last, whether its decoded weights
    are held channels-last (as freeze leaves them) or contiguous; and it keeps the layout it
    was given (freeze's channels-last: no weight reorder per call)."""
    from edgecompress import deploy
    torch.manual_seed(100 + bits)
    for cin, cout, k, stride in REAL_CONVS:
        layer = ShiftConv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False,
                            method=method, bits=bits)
        with torch.no_grad():  # wide latents: every code appears, a hard case for rounding
            for name in layer.weight_param.latent_names:
                getattr(layer.weight_param, name).normal_()
        frozen = deploy.freeze(nn.Sequential(layer))
        packed = frozen[0]
        if k == 3:
            assert packed.weight.is_contiguous(memory_format=CHANNELS_LAST)
            assert not packed.weight.is_contiguous()
        x = torch.randn(2, cin, 16, 16)
        inputs = {"contiguous": x, "channels-last": x.contiguous(memory_format=CHANNELS_LAST)}
        for weights in ("channels-last", "contiguous"):
            if weights == "contiguous":
                frozen = frozen.to(memory_format=torch.contiguous_format)
                assert frozen[0].weight.is_contiguous()
            for name, xi in inputs.items():
                with torch.no_grad():
                    expected, got = layer(xi), frozen(xi)
                assert torch.equal(got, expected), (cin, cout, k, stride, weights, name,
                                                    (got - expected).abs().max().item())
        assert frozen[0].weight.is_contiguous()  # the call did not change the held layout


def _resnet_with_statistics(method: str) -> nn.Module:
    """A full-width ResNet-20 (16, 32, 64 channels, 1x1 downsampling convs) whose BatchNorms
    hold running statistics of its own activations."""
    model = ec.convert(ec.models.create("resnet20", shortcut="B"), method, bits=3)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # cumulative average
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(16, 3, 32, 32))
    return model.eval()


@pytest.mark.parametrize("method", METHODS)
def test_whole_frozen_model_is_bit_exact_without_batchnorm_folding(method):
    """Without folding, the frozen model (channels-last, as freeze leaves it) gives exactly
    the training form's output on a channels-last input; a contiguous input to the frozen
    model gives the same values too (its first float conv makes the activations channels-last).
    With folding (the default) the first conv's BatchNorm is folded into its float weights,
    which reorders float rounding: close, not equal."""
    from edgecompress import deploy
    torch.manual_seed(13)
    model = _resnet_with_statistics(method)
    x = torch.randn(4, 3, 32, 32)
    x_last = x.contiguous(memory_format=CHANNELS_LAST)
    exact = deploy.freeze(model, fold_batchnorm=False)
    folded = deploy.freeze(model)
    assert isinstance(folded.stem[1], nn.Identity)  # the float stem's BatchNorm was folded
    with torch.no_grad():
        expected = model(x_last)
        assert torch.equal(exact(x_last), expected)
        assert torch.equal(exact(x), expected)
        torch.testing.assert_close(folded(x), expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(folded(x), model(x), rtol=1e-5, atol=1e-5)


def test_loaded_packed_shift_model_keeps_channels_last_weights_and_exactness(tmp_path):
    from edgecompress import deploy
    torch.manual_seed(14)
    model = _resnet_with_statistics("denseshift")
    frozen = deploy.freeze(model)
    deploy.save(frozen, tmp_path / "m.safetensors")
    loaded = deploy.load(tmp_path / "m.safetensors")
    layer = loaded.stages[2][0].conv2
    assert layer.weight.is_contiguous(memory_format=CHANNELS_LAST)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), frozen(x))
        a = torch.randn(2, 64, 8, 8)
        block = model.stages[2][0]  # bn2 is folded into the packed conv2: up to rounding
        assert layer.scale is not None and isinstance(loaded.stages[2][0].bn2, torch.nn.Identity)
        torch.testing.assert_close(layer(a), block.bn2(block.conv2(a)), rtol=1e-5, atol=1e-5)
        unfolded = deploy.freeze(model, fold_batchnorm=False).stages[2][0].conv2
        assert torch.equal(unfolded(a), block.conv2(a))


def test_packed_shift_model_file_round_trip_size_and_corruption(tmp_path):
    from edgecompress import deploy
    from edgecompress.errors import ModelFileError
    from safetensors.torch import load_file, save_file
    torch.manual_seed(11)
    model = ec.convert(ec.models.create("resnet20", width=0.5, shortcut="B"), "s3", bits=3).eval()
    frozen = deploy.freeze(model)
    path = tmp_path / "s3.safetensors"
    deploy.save(frozen, path)
    loaded = deploy.load(path)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), frozen(x))
    s = ec.summary(frozen, (3, 32, 32))
    assert s.params_by_bits[3] > 0
    analytic = s.bytes + sum(b.numel() * b.element_size() for n, b in frozen.named_buffers()
                             if "running" in n or "batches" in n)
    header = 8 + int.from_bytes(path.read_bytes()[:8], "little")
    assert abs(path.stat().st_size - header - analytic) / analytic < 0.02
    tensors = load_file(str(path))
    key = next(k for k in tensors if k.endswith(".codes"))
    with open(path, "rb") as f:
        meta = f.read(header)
    import json
    metadata = json.loads(meta[8:])["__metadata__"]
    tensors[key] = torch.full_like(tensors[key], 255)  # codes 7: beyond s3's 7 values
    save_file(tensors, str(tmp_path / "bad.safetensors"), metadata=metadata)
    with pytest.raises(ModelFileError, match="codes beyond the 7 values of s3 3-bit"):
        deploy.load(tmp_path / "bad.safetensors")
