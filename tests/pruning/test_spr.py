"""The SPR term: closed form vs brute-force minimization over y, continuity, gradients, the
loss normalization, M from a reference, and bad parameters."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from edgecompress.errors import PruningError
from edgecompress.pruning import SPR, SPRRegularizer, find_groups, spr_cases, spr_values


def brute_force(w: torch.Tensor, m: float, alpha: float) -> float:
    """min over y in [||w||_inf / M, 1] of alpha ||w||^2 / y + (1 - alpha) y, by golden-section
    search (the objective is convex in y)."""
    sq, lo = float((w * w).sum()), float(w.abs().max()) / m
    f = lambda y: alpha * sq / y + (1 - alpha) * y  # noqa: E731
    lo = max(lo, 1e-300)
    a, b, g = lo, 1.0, (math.sqrt(5) - 1) / 2
    for _ in range(300):
        c, d = b - g * (b - a), a + g * (b - a)
        if f(c) < f(d):
            b = d
        else:
            a = c
    return min(f(lo), f(1.0), f((a + b) / 2))


def random_groups(n_groups: int = 300, seed: int = 0):
    """(w, M) pairs over many scales, feasible (||w||_inf <= M)."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(n_groups):
        n = int(torch.randint(1, 20, (1,), generator=g))
        scale = 10 ** float(torch.empty(1).uniform_(-3, 1, generator=g))
        w = torch.randn(1, n, generator=g, dtype=torch.float64) * scale
        m = float(w.abs().max()) * 10 ** float(torch.empty(1).uniform_(0, 2, generator=g))
        yield w, m


@pytest.mark.parametrize("alpha", [0.1, 0.5, 0.9])
def test_closed_form_equals_brute_force_minimization_in_every_case(alpha):
    seen = set()
    for w, m in random_groups():
        z = float(spr_values(w, m, alpha))
        seen.add(int(spr_cases(w, m, alpha)))
        assert z == pytest.approx(brute_force(w[0], m, alpha), rel=1e-9, abs=1e-15)
    assert seen == {1, 2, 3}


def test_cases_are_vectorized_over_rows():
    g = torch.Generator().manual_seed(2)
    rows = torch.randn(30, 5, generator=g) * torch.logspace(-3, 1, 30)[:, None]
    batched = spr_values(rows, 1.0, 0.3)
    assert set(spr_cases(rows, 1.0, 0.3).tolist()) == {1, 2, 3}
    single = torch.stack([spr_values(r[None], 1.0, 0.3)[0] for r in rows])
    torch.testing.assert_close(batched, single)


def _both_sides(w, m, alpha, eps=1e-9):
    """z and case just below and just above a boundary crossed by scaling w."""
    lo, hi = w * (1 - eps), w * (1 + eps)
    return (float(spr_values(lo, m, alpha)), float(spr_values(hi, m, alpha)),
            int(spr_cases(lo, m, alpha)), int(spr_cases(hi, m, alpha)))


def test_continuity_at_the_three_case_boundaries():
    alpha = 0.2
    c = math.sqrt(alpha / (1 - alpha))
    w = torch.tensor([[0.3, -0.1, 0.05, 0.2]], dtype=torch.float64)
    inf, l2 = float(w.abs().max()), float(w.norm())
    # 2 | 3: ||w||_inf / M = c ||w||_2 (scaling w keeps the ratio; cross by moving M instead)
    m = inf / (c * l2)
    below, above = (float(spr_values(w, m * (1 + s), alpha)) for s in (1e-9, -1e-9))
    assert {int(spr_cases(w, m * (1 + 1e-9), alpha)), int(spr_cases(w, m * (1 - 1e-9), alpha))} \
        == {2, 3}
    assert below == pytest.approx(above, rel=1e-6)
    # 1 | 2: c ||w||_2 = 1 with ||w||_inf / M small
    z_lo, z_hi, k_lo, k_hi = _both_sides(w / (c * l2), 1e3, alpha)
    assert (k_lo, k_hi) == (2, 1) and z_lo == pytest.approx(z_hi, rel=1e-6)
    # 1 | 3: ||w||_inf / M = 1 with c ||w||_2 < 1
    spiky = torch.tensor([[1.0, 0.01, -0.02]], dtype=torch.float64)
    z_lo, z_hi, k_lo, k_hi = _both_sides(spiky, 1.0, alpha)
    assert (k_lo, k_hi) == (3, 1) and z_lo == pytest.approx(z_hi, rel=1e-6)


@pytest.mark.parametrize("m", [0.5, 100.0])  # 1/M > c (case 3 reachable near 0) and not
def test_finite_value_and_gradient_at_an_all_zero_group(m):
    w = torch.zeros(3, 6, dtype=torch.float64)
    w[1] = torch.linspace(-0.2, 0.3, 6)
    w.requires_grad_(True)
    z = spr_values(w, m, 0.3)
    assert torch.isfinite(z).all() and float(z[0].detach()) == 0.0
    z.sum().backward()
    assert torch.isfinite(w.grad).all()
    # a group approaching zero: values and gradients stay finite
    tiny = torch.full((1, 6), 1e-30, dtype=torch.float64, requires_grad=True)
    spr_values(tiny, m, 0.3).sum().backward()
    assert torch.isfinite(tiny.grad).all()


def test_gradcheck_in_float64_away_from_the_boundaries():
    alpha = 0.1
    c = math.sqrt(alpha / (1 - alpha))
    g = torch.Generator().manual_seed(1)
    for scale, m, case in ((4.0, 1.0, 1), (0.3, 100.0, 2), (0.1, 1.0, 3)):
        w = torch.randn(2, 8, generator=g, dtype=torch.float64) * scale
        w[:, 0] = w.abs().amax(1) * 1.5  # a unique largest |entry| (amax is smooth there)
        assert spr_cases(w, m, alpha).tolist() == [case, case]
        inf, l2 = w.abs().amax(1) / m, c * w.norm(dim=1)
        assert (torch.maximum(inf, l2) - 1).abs().min() > 1e-3 and (inf - l2).abs().min() > 1e-3
        assert torch.autograd.gradcheck(lambda x: spr_values(x, m, alpha), (w.requires_grad_(),))


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 3, 1, bias=False), nn.ReLU(), nn.Flatten(),
                         nn.Linear(3 * 4 * 4, 2))


def test_loss_term_is_the_size_weighted_mean_times_lambda():
    model = tiny_net()
    with torch.no_grad():
        model[1].weight.uniform_(0.5, 1.5)
        model[1].bias.uniform_(-0.5, 0.5)
    spr = SPR(model, lam=0.7, alpha=0.2, M={"0": 0.4, "3": 2.0})
    assert [(g.layer, g.bn) for g in spr.groups] == [("0", "1"), ("3", None)]
    first = torch.cat([model[0].weight.flatten(1), model[1].weight[:, None],
                       model[1].bias[:, None]], 1)
    second = model[3].weight.flatten(1)
    num = spr_values(first, 0.4, 0.2).sum() * 20 + spr_values(second, 2.0, 0.2).sum() * 4
    expected = 0.7 * num / (4 * 20 + 3 * 4)
    torch.testing.assert_close(spr(model), expected)


def test_m_from_the_reference_model_times_m_scale():
    model, reference = tiny_net(), tiny_net()
    with torch.no_grad():
        reference[0].weight.mul_(7.0)
        reference[1].weight.fill_(0.01)
    spr = SPR.from_reference(model, reference, lam=1.0, alpha=0.1, m_scale=0.5)
    with torch.no_grad():
        largest = {g.layer: float(g.matrix(reference).abs().max())
                   for g in find_groups(reference)}
    assert spr.M == pytest.approx({k: 0.5 * v for k, v in largest.items()})
    own = SPR(model, lam=1.0, alpha=0.1)
    assert own.M["0"] != pytest.approx(spr.M["0"])
    with pytest.raises(PruningError, match="differ"):
        SPR(model, 1.0, 0.1, reference=nn.Sequential(nn.Conv2d(2, 5, 3), nn.BatchNorm2d(5),
                                                     nn.ReLU(), nn.Conv2d(5, 3, 1)))


@pytest.mark.parametrize("kw, text", [
    (dict(lam=-0.1), "-0.1"), (dict(lam=float("nan")), "nan"),
    (dict(alpha=0.0), "0.0"), (dict(alpha=1.0), "1.0"), (dict(alpha=-0.5), "-0.5"),
    (dict(alpha=1.5), "1.5"), (dict(m_scale=0.0), "0.0"),
    (dict(M=0.0), "0.0"), (dict(M=-2.0), "-2.0"), (dict(M={"0": 1.0, "3": 0.0}), "'3'"),
    (dict(M={"0": 1.0}), "missing"), (dict(groups="conv+gn"), "conv\\+gn"),
])
def test_bad_parameters_are_clear_errors(kw, text):
    args = dict(lam=1.0, alpha=0.1)
    args.update(kw)
    with pytest.raises(PruningError, match=text):
        SPR(tiny_net(), **args)
    if "M" not in kw or not isinstance(kw["M"], dict):  # the callback checks up front
        with pytest.raises(PruningError, match=text):
            SPRRegularizer(**args)


def test_m_zero_from_an_all_zero_reference_layer_names_the_layer():
    reference = tiny_net()
    with torch.no_grad():
        reference[3].weight.zero_()
    with pytest.raises(PruningError, match="'3'"):
        SPR(tiny_net(), 1.0, 0.1, reference=reference)
