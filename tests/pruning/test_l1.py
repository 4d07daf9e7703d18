"""L1-norm filter pruning ("l1-prune"): the smallest-L1 filters go (summed over coupled layers
with residual=True), the first/last policy and include/exclude, by name through convert and in
a recipe before binarization, and ratio validation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import edgecompress as ec
from edgecompress.errors import ConversionError
from edgecompress.layers import BinaryConv2d
from edgecompress.pruning import L1Prune, prune_channels
from edgecompress.recipe import Recipe

from .test_surgery import CatAdd, calibrated, masked


def resnet20() -> nn.Module:
    torch.manual_seed(0)
    return ec.models.create("resnet20", width=0.5)


def macs(model: nn.Module) -> int:
    return ec.summary(model, model.input_shape).total_macs


def test_the_filters_with_the_smallest_l1_norm_are_removed():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 10, 3), nn.BatchNorm2d(10), nn.ReLU(), nn.Conv2d(10, 6, 3),
                        nn.ReLU(), nn.Flatten(), nn.Linear(6 * 4 * 4, 2))
    net.input_shape = (3, 8, 8)
    out = ec.convert(net, "l1-prune", ratio=0.3, keep_first_last=False)
    # conv 0: 10 filters -> 7, the 7 largest sum |w| in their original order; conv 3: 6 -> 5
    largest = {}
    for index, kept in ((0, 7), (3, 5)):
        norms = net[index].weight.abs().sum((1, 2, 3))
        largest[index] = torch.sort(torch.topk(norms, kept).indices).values
    torch.testing.assert_close(out[0].weight, net[0].weight[largest[0]])
    torch.testing.assert_close(out[3].weight, net[3].weight[largest[3]][:, largest[0]])
    assert out[3].in_channels == 7 and out[6].out_features == 2


def test_residual_groups_are_scored_by_the_summed_l1_norm_of_their_coupled_filters():
    net = calibrated((torch.manual_seed(0), CatAdd())[1])
    out = ec.convert(net, "l1-prune", ratio=0.5, residual=True, keep_first_last=False)
    l1 = {n: getattr(net, n).weight.abs().flatten(1).sum(1)
          for n in ("conv_a", "conv_b", "conv_c", "conv_d", "conv_e")}
    scores = torch.cat([l1["conv_a"], l1["conv_b"]]) + l1["conv_c"] + l1["conv_d"]
    kept = torch.isin(torch.arange(8), torch.topk(scores, 4).indices)
    torch.testing.assert_close(out.conv_c.weight, net.conv_c.weight[kept])
    torch.testing.assert_close(out.conv_d.weight, net.conv_d.weight[kept][:, kept])
    assert out.conv_a.out_channels + out.conv_b.out_channels == 4
    assert out.conv_e.out_channels == 3 and out.head.in_features == 3 * 16
    # the physically pruned model computes what the masked one does
    keep = {"conv_a": kept[:4], "conv_b": kept[4:], "conv_c": kept, "conv_d": kept,
            "conv_e": torch.isin(torch.arange(6), torch.topk(l1["conv_e"], 3).indices)}
    reference = masked(net, keep)
    x = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(out.eval()(x), reference(x), rtol=1e-5, atol=1e-5)


def test_l1_prune_by_name_reports_what_changed_and_keeps_first_last_and_residual_channels():
    net = resnet20()
    out, report = ec.convert(net, "l1-prune", ratio=0.5, return_report=True)
    changed = {n: (a, b) for n, a, b in report.converted}
    assert changed["stages.1.1.conv1"] == ("Conv2d(16, 16)", "Conv2d(16, 8)")
    assert changed["stages.1.1.bn1"] == ("BatchNorm2d(16)", "BatchNorm2d(8)")
    assert changed["stages.1.1.conv2"] == ("Conv2d(16, 16)", "Conv2d(8, 16)")
    kept = {n: why for n, _, why in report.kept}
    assert kept == {"stem.0": "first layer", "fc": "last layer",
                    "stages.1.0.shortcut.0": "channels tied by a residual addition "
                                             "(residual=False)",
                    "stages.2.0.shortcut.0": "feeds the last layer 'fc'"}
    assert "Conv2d(16, 16) -> Conv2d(16, 8)" in str(report)
    assert out.edgecompress_spec["method"]["name"] == "l1-prune"
    assert out.edgecompress_spec["pruned"]["stages.2.2.conv1"] == 16
    assert macs(out) < 0.6 * macs(net)
    # residual=True without the first/last policy prunes the residual chains too
    deeper = ec.convert(net, "l1-prune", ratio=0.5, residual=True, keep_first_last=False)
    assert deeper.stem[0].out_channels == 4 and deeper.fc.in_features == 16
    assert macs(deeper) < macs(out)


def test_include_exclude_and_per_layer_ratios_choose_the_layers():
    net = resnet20()
    _, report = ec.convert(net, "l1-prune", ratio=0.5, exclude=["stages.0.*"],
                           return_report=True)
    kept = {n: why for n, _, why in report.kept}
    assert kept["stages.0.1.conv1"] == "excluded"
    assert all(not n.startswith("stages.0.") for n, _, _ in report.converted)
    out = ec.convert(net, "l1-prune", ratio={"stages.2.*": 0.75, "stages.1.0.*": 0.25})
    assert [b.conv1.out_channels for b in out.stages[2]] == [8, 8, 8]
    assert [b.conv1.out_channels for b in out.stages[1]] == [12, 16, 16]
    assert out.stages[0][0].conv1.out_channels == 8
    assert ec.convert(net, "l1-prune", ratio=0.0).stages[2][0].conv1.out_channels == 32


def test_prune_then_binarize_in_a_recipe_method_list():
    recipe = Recipe.from_dict({
        "model": {"name": "resnet20", "width": 0.5, "activation": "hardtanh"},
        "data": "cifar10",
        "method": [{"name": "l1-prune", "ratio": 0.5}, {"name": "bnn", "mode": "w1a1"}]})
    model, report = recipe.build_model(10, (3, 32, 32))
    assert report.method == "l1-prune -> bnn"
    conv1 = model.stages[1][1].conv1
    assert isinstance(conv1, BinaryConv2d) and conv1.out_channels == 8
    names = [n for n, _, _ in report.converted]
    assert "stages.1.1.bn1" in names and "stages.1.1.conv1" in names
    assert [m["name"] for m in model.edgecompress_spec["method"]] == ["l1-prune", "bnn"]
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("ratio", [1.0, -0.1, "half", True, {"stages.*": 1.5}, {3: 0.5}])
def test_bad_ratios_are_clear_errors(ratio):
    with pytest.raises(ConversionError, match="ratio"):
        ec.convert(resnet20(), "l1-prune", ratio=ratio)


def test_l1_prune_as_an_object_and_its_options():
    assert ec.convert.method_options("l1-prune") == {
        "ratio", "macs_reduction", "residual", "round_to", "input_shape", "keep_first_last",
        "include", "exclude"}
    net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8),
                        nn.ReLU(), nn.Linear(8, 3))
    out = L1Prune(ratio=0.5, input_shape=(6,)).apply(net)  # first, feeds-last and last kept
    assert [out[i].out_features for i in (0, 2, 4, 6)] == [8, 4, 8, 3]
    with pytest.raises(ConversionError, match="residual"):
        L1Prune(residual="yes")
    with pytest.raises(ConversionError, match="round_to must be a positive int"):
        L1Prune(round_to=0)


def test_round_to_keeps_multiples_of_channels_rounding_up():
    net = resnet20()  # conv1 widths 8, 16, 32
    out = ec.convert(net, "l1-prune", ratio=0.7, round_to=4)
    # kept 8 - 5 = 3 -> 4, 16 - 11 = 5 -> 8, 32 - 22 = 10 -> 12
    assert [out.stages[s][0].conv1.out_channels for s in range(3)] == [4, 8, 12]
    plain = ec.convert(net, "l1-prune", ratio=0.7)
    assert [plain.stages[s][0].conv1.out_channels for s in range(3)] == [3, 5, 10]


def test_macs_reduction_picks_the_smallest_ratio_that_removes_that_much():
    torch.manual_seed(0)
    net = ec.models.create("convnet", width=0.25)  # 8, 16, 32 channels
    base = macs(net)
    out = ec.convert(net, "l1-prune", macs_reduction=0.5, keep_first_last=False)
    # the MACs only change where floor(ratio * channels) does: at multiples of 1/32 here
    reachable = [1 - macs(ec.convert(net, "l1-prune", ratio=k / 32, keep_first_last=False)) / base
                 for k in range(32)]
    assert 1 - macs(out) / base == min(r for r in reachable if r >= 0.5)
    with pytest.raises(ConversionError, match=r"macs_reduction 0\.999 is out of reach"):
        ec.convert(net, "l1-prune", macs_reduction=0.999)
    with pytest.raises(ConversionError, match="ratio or macs_reduction, not both"):
        ec.convert(net, "l1-prune", ratio=0.3, macs_reduction=0.5)
    for bad in (0, 1, -0.5, "half"):
        with pytest.raises(ConversionError, match="macs_reduction must be a number in"):
            ec.convert(net, "l1-prune", macs_reduction=bad)


@pytest.mark.slow
def test_macs_reduction_on_resnet20_with_residual_channels():
    target = 0.5
    net = ec.models.create("resnet20")  # full width: 16-64 channels, fine steps of MACs
    out = ec.convert(net, "l1-prune", macs_reduction=target, residual=True)
    assert target <= 1 - macs(out) / macs(net) < target + 0.05


def test_prune_channels_and_l1_agree_on_the_same_masks():
    net = resnet20()
    l1 = ec.convert(net, "l1-prune", ratio=0.5)
    keep = {f"stages.{s}.{b}.conv1": torch.isin(
        torch.arange(8 * 2 ** s), torch.topk(net.stages[s][b].conv1.weight.abs().flatten(1)
                                             .sum(1), 4 * 2 ** s).indices)
        for s in range(3) for b in range(3)}
    direct = prune_channels(net, keep)
    for key, value in direct.state_dict().items():
        assert torch.equal(l1.state_dict()[key], value), key
