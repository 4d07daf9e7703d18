"""Pruning to a MACs budget: the smallest global magnitude threshold reaching the target, layers
never emptied, kept counts rounded, and L1 through the same bisection."""

from __future__ import annotations

import pytest
import torch

from edgecompress import models, summary
from edgecompress.errors import PruningError
from edgecompress.pruning import prune_channels, removal_thresholds, threshold_for_macs
from edgecompress.pruning.budget import macs_removed, threshold_masks


def resnet() -> torch.nn.Module:
    torch.manual_seed(0)
    model = models.create("resnet20", width=0.5).eval()
    with torch.no_grad():  # groups (filter, gamma, beta) of very different norms, as after SPR
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                scale = torch.rand(m.out_channels) ** 3
                m.weight.mul_(scale[:, None, None, None])
            elif isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(scale * 0.5)
    return model


@pytest.mark.parametrize("target", [0.3, 0.5, 0.7])
def test_the_threshold_is_the_smallest_reaching_the_target(target):
    model = resnet()
    shape = (3, 32, 32)
    t, masks = threshold_for_macs(model, target, shape)
    example = (torch.randn(1, *shape),)
    assert macs_removed(model, masks, example) >= target
    for name, keep in masks.items():
        assert keep.any(), name  # never empty
    # the next smaller candidate threshold falls short of the target
    r = torch.cat([v.flatten() for v in removal_thresholds(model).values()])
    below = float(r[r < t].max())
    assert macs_removed(model, threshold_masks(model, below, shape), example) < target


def test_every_layer_keeps_a_channel_and_round_to_keeps_multiples():
    model = resnet()
    _, masks = threshold_for_macs(model, 0.8, (3, 32, 32), round_to=4)
    pruned = prune_channels(model, masks, (3, 32, 32))
    for name, m in pruned.named_modules():
        if isinstance(m, torch.nn.Conv2d):
            assert m.out_channels >= 1 and m.out_channels % 4 == 0, (name, m.out_channels)
    base = summary(model, (3, 32, 32)).total_macs
    assert 1 - summary(pruned, (3, 32, 32)).total_macs / base >= 0.8


def test_an_unreachable_budget_and_bad_values_are_clear_errors():
    model = resnet()
    with pytest.raises(PruningError, match=r"macs_reduction 0.999 is out of reach"):
        threshold_for_macs(model, 0.999, (3, 32, 32))
    for bad in (0, 1, -0.2, True, "half"):
        with pytest.raises(PruningError, match="must be a number in"):
            threshold_for_macs(model, bad, (3, 32, 32))
    with pytest.raises(PruningError, match="round_to must be a positive int"):
        threshold_for_macs(model, 0.5, (3, 32, 32), round_to=0)
