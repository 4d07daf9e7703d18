"""Pruning decisions: filter masks from a threshold, masked fine-tuning, the threshold search,
and prune targets that would empty a layer."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from edgecompress.errors import PruningError
from edgecompress.pruning import (FixedMasks, apply_masks, filter_masks, removal_thresholds,
                                  search_threshold)
from edgecompress.train import TrainConfig, Trainer


def net(act: type[nn.Module] = nn.ReLU) -> nn.Module:
    """conv(6 filters) -> BN -> ReLU -> conv(4) -> BN -> ReLU -> pool -> Linear; filter j of the
    first conv has largest |entry| 0.1 * (j + 1) (BN gamma/beta below it), of the second
    1 + 0.1 * j."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 6, 3, bias=True), nn.BatchNorm2d(6), act(),
                          nn.Conv2d(6, 4, 3, bias=False), nn.BatchNorm2d(4), act(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    with torch.no_grad():
        peak = 0.1 * torch.arange(1, 7.0)
        w = torch.rand(6, 2, 3, 3) * 0.5 * peak[:, None, None, None]
        w[:, 0, 0, 0] = peak
        model[0].weight.copy_(w)
        model[0].bias.copy_(0.01 * peak)
        model[1].weight.copy_(0.5 * peak)
        model[1].bias.copy_(-0.5 * peak)
        w = torch.rand(4, 6, 3, 3) * 0.5
        w[:, 0, 0, 0] = 1.0 + 0.1 * torch.arange(4.0)
        model[3].weight.copy_(w)
    return model


def test_filter_masks_remove_groups_with_no_surviving_entry():
    model = net()
    r = removal_thresholds(model)
    torch.testing.assert_close(r["0"], 0.1 * torch.arange(1, 7.0))
    masks = filter_masks(model, threshold=0.25)
    assert masks["0"].tolist() == [False, False, True, True, True, True]
    assert masks["3"].all() and set(masks) == {"0", "3"}
    # "almost none survive": a group goes once at most half of its 20 entries exceed t
    half = filter_masks(model, threshold=0.05, survive_fraction=0.5)
    above = (torch.cat([model[0].weight.flatten(1), model[1].weight[:, None],
                        model[1].bias[:, None]], 1).abs() > 0.05).sum(1)
    assert half["0"].tolist() == (above > 10).tolist()
    assert half["0"].sum() < filter_masks(model, threshold=0.05)["0"].sum()


def test_a_threshold_that_empties_a_layer_is_an_error_naming_it():
    with pytest.raises(PruningError, match="every filter of layer '0'"):
        filter_masks(net(), threshold=0.6)
    with pytest.raises(PruningError, match="'3'.*every filter"):
        apply_masks(net(), {"3": torch.zeros(4, dtype=torch.bool)})


def test_bad_masks_are_errors_naming_the_layer():
    with pytest.raises(PruningError, match="'nope'"):
        apply_masks(net(), {"nope": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(PruningError, match="'0'.*shape"):
        apply_masks(net(), {"0": torch.ones(5, dtype=torch.bool)})
    with pytest.raises(PruningError, match="-1"):
        filter_masks(net(), threshold=-1)


def test_apply_masks_zeroes_the_filters_bias_and_batchnorm_entries_only():
    model, original = net(), net()
    keep = torch.tensor([True, False, True, False, True, True])
    apply_masks(model, {"0": keep})
    for name in ("0.weight", "0.bias", "1.weight", "1.bias"):
        now, before = model.state_dict()[name], original.state_dict()[name]
        assert (now[~keep] == 0).all() and torch.equal(now[keep], before[keep])
    assert torch.equal(model[3].weight, original[3].weight)
    # channel j is exactly 0 after the BatchNorm, whatever its running statistics
    model.eval()
    model[1].running_mean.uniform_(-1, 1)
    out = model[:2](torch.randn(3, 2, 5, 5))
    assert (out[:, ~keep] == 0).all() and (out[:, keep] != 0).any()


def test_fixed_masks_hold_through_sgd_with_momentum_and_weight_decay():
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(48, 2, 6, 6, generator=g), torch.arange(48) % 2)
    masks = {"0": torch.tensor([True, False, True, False, True, True]),
             "3": torch.tensor([False, True, True, False])}
    cfg = TrainConfig(epochs=2, batch_size=16, lr=0.1, momentum=0.9, weight_decay=5e-4,
                      decay_1d=True, progress=False)
    # tanh passes gradient at 0, so the last BN's beta of a removed channel gets a gradient
    masked = Trainer(apply_masks(net(nn.Tanh), masks), data, None, cfg,
                     callbacks=[FixedMasks(masks)])
    masked.fit()
    m = masked.model
    for (conv, bn), keep in zip(((m[0], m[1]), (m[3], m[4])), masks.values()):
        for tensor in (conv.weight, bn.weight, bn.bias):
            assert (tensor[~keep] == 0).all() and (tensor[keep] != 0).all()
    assert (m[0].bias[~masks["0"]] == 0).all()
    # without the callback a removed channel comes back to life, so the test above can fail
    free = Trainer(apply_masks(net(nn.Tanh), masks), data, None, cfg)
    free.fit()
    assert (free.model[4].bias[~masks["3"]].abs() > 1e-4).all()


def test_threshold_search_finds_the_largest_threshold_within_the_tolerance():
    model = net()
    before = copy.deepcopy(model.state_dict())
    calls = []

    def accuracy(m: nn.Module) -> float:  # monotone: 10 points lost per removed filter
        calls.append(1)
        removed = int((m[0].weight.flatten(1).abs().amax(1) == 0).sum())
        removed += int((m[3].weight.flatten(1).abs().amax(1) == 0).sum())
        return 90.0 - 10.0 * removed

    found = search_threshold(model, accuracy, tolerance=25.0, groups="conv")
    assert found.masks["0"].tolist() == [False, False, True, True, True, True]
    assert found.masks["3"].all()
    assert found.baseline == 90.0 and found.score == 70.0
    r = removal_thresholds(model, "conv")
    candidates = torch.cat(list(r.values())).unique()
    # the largest candidate keeping the drop <= 25: removing a third group costs 30 points
    assert found.threshold == pytest.approx(float(r["0"][1]))
    assert float(candidates[candidates > found.threshold].min()) == pytest.approx(0.3)
    assert len(calls) <= 2 + len(candidates).bit_length()  # binary search, not a scan
    for k, v in model.state_dict().items():  # the model itself is not modified
        assert torch.equal(v, before[k])
    zero = search_threshold(model, accuracy, tolerance=5.0, groups="conv")
    assert zero.threshold == 0.0 and all(mask.all() for mask in zero.masks.values())
    everything = search_threshold(model, accuracy, tolerance=1000.0, groups="conv")
    assert everything.masks["0"].tolist() == [False] * 5 + [True]  # never an empty layer
    assert everything.threshold == pytest.approx(0.5) and everything.masks["3"].all()
