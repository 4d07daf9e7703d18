"""The two halves meet: masks decided from the weights (pruning.masks) are what the surgery
(pruning.surgery) removes, and the physically smaller model computes what the masked one does."""

from __future__ import annotations

import pytest
import torch

import edgecompress as ec
from edgecompress import pruning


def weak_every_third_filter(model: torch.nn.Module) -> None:
    """As SPR training would leave it: every third filter and its BN affine near zero."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d) and m.out_channels > 4:
                m.weight[::3] *= 1e-4
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight[::3] *= 1e-4
                m.bias[::3] *= 1e-4


@pytest.mark.parametrize("name", ["resnet20", "vgg-small"])
def test_masked_filters_are_physically_removed_with_the_same_outputs(name):
    torch.manual_seed(0)
    model = ec.models.create(name, width=0.25).eval()
    weak_every_third_filter(model)
    masks = pruning.filter_masks(model, threshold=1e-3)
    removed = sum(int((~keep).sum()) for keep in masks.values())
    assert removed > 0
    pruning.apply_masks(model, masks)
    small = pruning.prune_channels(model, masks)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(small(x), model(x), rtol=1e-5, atol=1e-5)
    before, after = ec.summary(model, (3, 32, 32)), ec.summary(small, (3, 32, 32))
    assert after.total_params < before.total_params and after.total_macs < before.total_macs
