"""The group-lasso baseline: its value and gradient, its relation to SPR, training and recipes."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from edgecompress.errors import PruningError, RecipeError
from edgecompress.experiment import run
from edgecompress.pruning import (SPR, GroupLasso, GroupLassoRegularizer, create_regularizer,
                                  find_groups, regularizer_options, spr_cases)
from edgecompress.recipe import Recipe
from edgecompress.train import TrainConfig, Trainer


def tiny_cnn(seed: int = 0, first_in: int = 2) -> nn.Module:
    """Two conv+BN groups of different sizes (n = 2*9+2 and 6*9+2) unless ``first_in`` = 6."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(first_in, 6, 3, bias=False), nn.BatchNorm2d(6), nn.ReLU(),
                         nn.Conv2d(6, 6, 3, bias=False), nn.BatchNorm2d(6), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 2))


def randomize_bn(model: nn.Module) -> None:
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(torch.randn(m.bias.shape, generator=g))


def loop_value(model: nn.Module, lam: float, groups: str = "conv+bn") -> float:
    """The formula of edgecompress.pruning.lasso, one group at a time."""
    total = weight = 0.0
    for g in find_groups(model, groups):
        conv = model.get_submodule(g.layer)
        bn = model.get_submodule(g.bn) if g.bn else None
        for j in range(conv.out_channels):
            entries = [conv.weight[j].flatten()]
            if bn is not None:
                entries.append(torch.stack([bn.weight[j], bn.bias[j]]))
            w = torch.cat(entries).detach().double()
            total += math.sqrt(w.numel()) * math.sqrt(float((w * w).sum()))
            weight += math.sqrt(w.numel())
    return lam * total / weight


@pytest.mark.parametrize("groups", ["conv+bn", "conv"])
def test_value_equals_a_loop_over_groups(groups):
    model = tiny_cnn()
    randomize_bn(model)
    lasso = GroupLasso(model, lam=0.7, groups=groups)
    assert [g.bn is not None for g in lasso.groups] == [groups == "conv+bn"] * 2
    with torch.no_grad():
        value = float(lasso(model))
    assert value == pytest.approx(loop_value(model, 0.7, groups), rel=1e-5)


def test_gradient_is_the_normalised_group_direction():
    model = tiny_cnn()
    randomize_bn(model)
    lam = 1.3
    lasso = GroupLasso(model, lam=lam)
    lasso(model).backward()
    sizes = [g.size(model) for g in lasso.groups]
    assert sizes == [20, 56]
    norm_total = sum(math.sqrt(n) * model.get_submodule(g.layer).out_channels
                     for n, g in zip(sizes, lasso.groups))
    for n, g in zip(sizes, lasso.groups):
        rows = g.matrix(model).detach()
        expected = lam * math.sqrt(n) / norm_total * rows / rows.norm(dim=1, keepdim=True)
        conv, bn = model.get_submodule(g.layer), model.get_submodule(g.bn)
        got = torch.cat([conv.weight.grad.flatten(1), bn.weight.grad[:, None],
                         bn.bias.grad[:, None]], dim=1)
        torch.testing.assert_close(got, expected)


def test_all_zero_group_has_a_finite_value_and_zero_subgradient():
    model = tiny_cnn()
    with torch.no_grad():
        model[3].weight[2].zero_()
        model[4].weight[2] = 0.0
        model[4].bias[2] = 0.0
    lasso = GroupLasso(model, lam=1.0)
    value = lasso(model)
    assert math.isfinite(float(value.detach()))
    assert float(value.detach()) == pytest.approx(loop_value(model, 1.0), rel=1e-5)
    value.backward()
    for p in model.parameters():
        if p.grad is not None:
            assert torch.isfinite(p.grad).all()
    assert not model[3].weight.grad[2].any()
    assert float(model[4].weight.grad[2]) == 0.0 and float(model[4].bias.grad[2]) == 0.0
    assert model[3].weight.grad[1].abs().sum() > 0


def test_equals_spr_in_its_group_lasso_case_with_lambda_scaled():
    # equal group sizes (both layers: 6*9 + 2 entries) make both normalisations a plain mean
    model = tiny_cnn(first_in=6)
    lam, alpha = 0.8, 0.01
    spr = SPR(model, lam, alpha, M=100.0)  # big M: ||w||_inf / M <= c ||w||_2 < 1, case 2
    for layer, cases in spr.cases(model).items():
        assert (cases == 2).all(), layer
    lasso = GroupLasso(model, lam=2 * math.sqrt(alpha * (1 - alpha)) * lam)
    torch.testing.assert_close(lasso(model), spr(model))
    # and not by accident: with a small M some groups leave case 2 and the terms differ
    small = SPR(model, lam, alpha, M=0.05)
    rows = lasso.groups[0].matrix(model).detach()
    assert (spr_cases(rows, 0.05, alpha) != 2).any()
    assert not torch.isclose(lasso(model), small(model))


def images(n: int = 64) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 2
    x = torch.randn(n, 2, 6, 6, generator=g) + y[:, None, None, None].float()
    return TensorDataset(x, y)


def test_training_with_group_lasso_shrinks_the_group_norms_and_logs_the_term():
    data = images()
    config = TrainConfig(epochs=2, batch_size=16, lr=0.05, momentum=0.9, progress=False)
    plain = Trainer(tiny_cnn(), data, None, config)
    plain.fit()
    callback = GroupLassoRegularizer(lam=5.0)
    regularized = Trainer(tiny_cnn(), data, None, config, callbacks=[callback])
    regularized.fit()
    norms = lambda m: torch.cat(list(GroupLasso(m, 1.0).norms(m).values()))  # noqa: E731
    with torch.no_grad():
        shrunk, unregularized = norms(regularized.model), norms(plain.model)
        final = float(callback.penalty(regularized.model))
    assert (shrunk < unregularized).all()
    assert shrunk.sum() < 0.8 * unregularized.sum()
    for row in regularized.history:
        assert row["group_lasso"] > 0
    assert regularized.history[-1]["group_lasso"] < regularized.history[0]["group_lasso"]
    assert callback.last == pytest.approx(final, rel=0.2)  # the last step's term
    assert "group_lasso" not in plain.history[-1]


def test_group_lasso_by_name():
    for name in ("group-lasso", "group_lasso", "Group-Lasso"):
        callback = create_regularizer({"name": name, "lam": 0.5, "groups": "conv"})
        assert isinstance(callback, GroupLassoRegularizer)
        assert callback.options == {"lam": 0.5, "groups": "conv"}
    assert regularizer_options("group-lasso") == ["lam", "groups"]


RECIPE = {"model": {"name": "convnet"}, "data": {"name": "mnist-bundled", "limit": 64},
          "epochs": 1, "batch_size": 32, "optimizer": {"name": "sgd", "lr": 0.05}}


def test_recipe_regularizer_section_trains_with_group_lasso(tmp_path):
    recipe = Recipe.from_dict({**RECIPE, "regularizer": {"name": "group-lasso", "lam": 0.5}})
    result = run(recipe, out_dir=tmp_path, progress=False)
    assert result.metrics["group_lasso"] > 0
    assert result.history[-1]["group_lasso"] == result.metrics["group_lasso"]


@pytest.mark.parametrize("lam", [-1.0, math.nan, math.inf, "1", True, None])
def test_bad_lambda_is_a_clear_error(lam):
    with pytest.raises(PruningError, match="group lasso lambda.*" + repr(lam)[:3]):
        GroupLasso(tiny_cnn(), lam)
    with pytest.raises(PruningError, match="group lasso lambda"):
        GroupLassoRegularizer(lam=lam)


def test_recipe_errors_name_the_value():
    with pytest.raises(RecipeError, match="group lasso lambda.*-2"):
        Recipe.from_dict({**RECIPE, "regularizer": {"name": "group-lasso", "lam": -2}})
    with pytest.raises(RecipeError, match="'regularizer.alpha'"):
        Recipe.from_dict({**RECIPE, "regularizer": {"name": "group-lasso", "lam": 1,
                                                    "alpha": 0.1}})
    with pytest.raises(RecipeError, match="group kind 'filters'"):
        Recipe.from_dict({**RECIPE, "regularizer": {"name": "group-lasso", "lam": 1,
                                                    "groups": "filters"}})


def test_a_model_without_groups_is_a_clear_error():
    with pytest.raises(PruningError, match="no pruning groups.*Sequential"):
        GroupLasso(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), 1.0)
