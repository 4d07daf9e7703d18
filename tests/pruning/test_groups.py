"""Group detection: conv filters joined with the BatchNorm that consumes their output, found
from the fx graph (zoo models and a user's own module)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgecompress import models
from edgecompress.errors import PruningError
from edgecompress.pruning import find_groups


def test_resnet20_every_conv_joined_with_its_batchnorm_including_the_shortcut():
    model = models.create("resnet20")
    groups = find_groups(model)
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert [g.layer for g in groups] == convs  # graph order is module order here
    pairs = {g.layer: g.bn for g in groups}
    assert pairs["stem.0"] == "stem.1"
    assert pairs["stages.1.0.shortcut.0"] == "stages.1.0.shortcut.1"  # 1x1 downsampling
    assert pairs["stages.2.0.shortcut.0"] == "stages.2.0.shortcut.1"
    for layer, bn in pairs.items():
        if "conv" in layer:
            assert bn == layer.replace("conv", "bn")
    rows = groups[0].matrix(model)
    assert rows.shape == (16, 3 * 9 + 2)
    assert torch.equal(rows[:, -2], model.stem[1].weight) and torch.equal(rows[:, -1],
                                                                          model.stem[1].bias)
    # the classifier's rows are the classes: never a group, even when Linear rows are asked for
    assert "fc" not in [g.layer for g in find_groups(model, "conv+bn+linear")]
    assert all(g.bn is None for g in find_groups(model, "conv"))


def test_vgg_small_batchnorm_found_through_the_max_pool():
    model = models.create("vgg-small", width=0.125)
    groups = find_groups(model)
    f = model.features
    assert [(g.layer, g.bn) for g in groups] == [
        ("features.0", "features.1"), ("features.3", "features.5"),  # conv -> pool -> BN
        ("features.7", "features.8"), ("features.10", "features.12"),
        ("features.14", "features.15"), ("features.17", "features.19")]
    assert isinstance(f[4], nn.MaxPool2d) and isinstance(f[5], nn.BatchNorm2d)


class Mine(nn.Module):
    """A user's module whose names lie: ``bn_a`` follows ``conv_b`` in the dataflow."""

    def __init__(self):
        super().__init__()
        self.conv_a = nn.Conv2d(3, 4, 3, padding=1)
        self.conv_b = nn.Conv2d(4, 5, 3, padding=1)
        self.bn_a = nn.BatchNorm2d(5)
        self.conv_c = nn.Conv2d(5, 6, 1)  # output used twice: no BN joined
        self.bn_c = nn.BatchNorm2d(6)
        self.conv_d = nn.Conv2d(6, 6, 1)  # followed by a BN without affine parameters
        self.bn_plain = nn.BatchNorm2d(6, affine=False)
        self.hidden = nn.Linear(6, 8)
        self.bn1d = nn.BatchNorm1d(8)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        x = torch.relu(self.conv_a(x))
        x = torch.relu(self.bn_a(self.conv_b(x)))
        y = self.conv_c(x)
        x = self.bn_c(y) + y
        x = self.bn_plain(self.conv_d(x))
        x = torch.relu(self.bn1d(self.hidden(x.mean((2, 3)))))
        return self.head(x)


def test_a_users_module_pairs_from_the_dataflow_not_the_names():
    model = Mine()
    assert [(g.layer, g.bn) for g in find_groups(model)] == [
        ("conv_a", None), ("conv_b", "bn_a"), ("conv_c", None), ("conv_d", None)]
    assert [(g.layer, g.bn) for g in find_groups(model, "conv+bn+linear")][-1] == \
        ("hidden", "bn1d")
    assert [(g.layer, g.bn) for g in find_groups(model, "linear")] == [("hidden", None)]
    assert find_groups(model, "conv+bn")[1].size(model) == 4 * 9 + 2


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow
            return self.conv(x)
        return self.conv(-x)


def test_untraceable_model_and_unknown_kind_are_clear_errors():
    with pytest.raises(PruningError, match="Untraceable.*trace"):
        find_groups(Untraceable())
    with pytest.raises(PruningError, match="'conv\\+batchnorm'"):
        find_groups(Mine(), "conv+batchnorm")
    with pytest.raises(PruningError, match="'bn'"):
        find_groups(Mine(), "bn")
