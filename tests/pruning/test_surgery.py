"""Physical channel surgery: the pruned model computes what the masked model does, for every zoo
CNN and a user's own module; residual additions stay consistent; the coupling rule; the pruned
model lives on (trains, summarizes, converts, freezes, saves and loads); clear errors."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn

import edgecompress as ec
from edgecompress import deploy
from edgecompress.errors import ConversionError
from edgecompress.pruning import coupled_groups, effective_keep, prune_channels, width_changes
from edgecompress.pruning.surgery import PRUNABLE_TYPES


class CatAdd(nn.Module):
    """A user's own module: two branches concatenated, added to a third, a residual block on top
    (so cat and add tie conv_a/conv_b to conv_c and conv_d), then an untied conv and a head."""

    def __init__(self) -> None:
        super().__init__()
        self.input_shape = (3, 8, 8)
        self.conv_a, self.bn_a = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.conv_b, self.bn_b = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.conv_c, self.bn_c = nn.Conv2d(3, 8, 1), nn.BatchNorm2d(8)
        self.conv_d, self.bn_d = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv_e, self.bn_e = nn.Conv2d(8, 6, 3, padding=1), nn.BatchNorm2d(6)
        self.head = nn.Linear(6 * 4 * 4, 5)

    def forward(self, x: Tensor) -> Tensor:
        y = torch.cat([self.bn_a(self.conv_a(x)), self.bn_b(self.conv_b(x))], dim=1)
        y = torch.relu(y + self.bn_c(self.conv_c(x)))
        y = torch.relu(y + self.bn_d(self.conv_d(y)))
        y = torch.relu(self.bn_e(self.conv_e(y)))
        return self.head(torch.flatten(nn.functional.max_pool2d(y, 2), 1))


def zoo(name: str, **kw) -> nn.Module:
    torch.manual_seed(0)
    return ec.models.create(name, **kw)


MODELS = {
    "vgg-small": lambda: zoo("vgg-small", width=0.125, input_shape=(3, 16, 16)),
    "resnet20": lambda: zoo("resnet20", width=0.5),
    "resnet32": lambda: zoo("resnet32", width=0.25, input_shape=(3, 16, 16)),
    "resnet56": lambda: zoo("resnet56", width=0.25, input_shape=(3, 16, 16)),
    "resnet18": lambda: zoo("resnet18", width=0.125, input_shape=(3, 32, 32)),
    "convnet": lambda: zoo("convnet"),
    "cat-add": lambda: (torch.manual_seed(0), CatAdd())[1],
}


def calibrated(model: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters, then eval mode."""
    torch.manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.2, 0.2)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(8, *model.input_shape))
    return model.eval()


def random_keep(model: nn.Module, fraction: float = 0.4, seed: int = 0) -> dict[str, Tensor]:
    """Keep masks dropping about ``fraction`` of the coupled channels of every prunable group,
    the same channels in every layer of a group."""
    gen = torch.Generator().manual_seed(seed)
    keep = {}
    for group in coupled_groups(model):
        if group.reason is not None:
            continue
        kept = torch.rand(group.size, generator=gen) >= fraction
        kept[torch.randint(group.size, (1,), generator=gen)] = True
        keep.update({n: kept[group.channels[n]] for n in group.layers})
    return keep


def batchnorm_after(model: nn.Module, layer: str) -> nn.Module | None:
    """The BatchNorm that normalizes ``layer``'s output: the next one in module order (true of the
    zoo and of CatAdd)."""
    names = [n for n, _ in model.named_modules()]
    modules = dict(model.named_modules())
    width = modules[layer].weight.shape[0]
    for n in names[names.index(layer) + 1:]:
        if isinstance(modules[n], PRUNABLE_TYPES):
            return None
        if isinstance(modules[n], nn.modules.batchnorm._BatchNorm):
            return modules[n] if modules[n].num_features == width else None
    return None


def masked(model: nn.Module, keep: dict[str, Tensor]) -> nn.Module:
    """A copy with the dropped filters (and bias, BatchNorm gamma and beta) set to zero."""
    model = copy.deepcopy(model)
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, mask in keep.items():
            for m in (modules[name], batchnorm_after(model, name)):
                if m is None:
                    continue
                m.weight[~mask] = 0
                if m.bias is not None:
                    m.bias[~mask] = 0
    return model


def macs_params(model: nn.Module) -> tuple[int, int]:
    s = ec.summary(model, model.input_shape)
    return s.total_macs, s.total_params


@pytest.mark.parametrize("name", sorted(MODELS))
def test_pruned_model_equals_the_masked_model(name):
    model = calibrated(MODELS[name]())
    keep = random_keep(model)
    reference = masked(model, keep)
    state = copy.deepcopy(model.state_dict())
    pruned = prune_channels(reference, keep).eval()
    for key, value in model.state_dict().items():  # the input model is untouched
        assert torch.equal(state[key], value), key
    x = torch.randn(4, *model.input_shape)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), reference(x), rtol=1e-5, atol=1e-5)
    modules = dict(pruned.named_modules())
    for layer, mask in keep.items():
        assert modules[layer].weight.shape[0] == int(mask.sum()), layer
    (macs0, params0), (macs1, params1) = macs_params(model), macs_params(pruned)
    assert macs1 < macs0 and params1 < params0
    assert pruned.input_shape == model.input_shape


def test_coupled_groups_follow_additions_and_concatenations():
    groups = {g.layers: g for g in coupled_groups(CatAdd())}
    tied = groups[("conv_a", "conv_b", "conv_c", "conv_d")]
    assert tied.size == 8 and tied.reason is None and tied.feeds == ("conv_d", "conv_e")
    # channel j of conv_b is channel 4 + j of the concatenation, hence of conv_c and conv_d
    assert torch.equal(tied.channels["conv_b"], tied.channels["conv_c"][4:])
    assert torch.equal(tied.channels["conv_a"], tied.channels["conv_d"][:4])
    assert groups[("conv_e",)].feeds == ("head",)
    assert "model's output" in groups[("head",)].reason
    assert tied.members(int(tied.channels["conv_b"][0])) == [("conv_b", 0), ("conv_c", 4),
                                                              ("conv_d", 4)]


@pytest.mark.parametrize("depth", [20, 32, 56])
def test_pruning_across_residual_additions_keeps_shapes_consistent(depth):
    model = calibrated(zoo(f"resnet{depth}", width=0.5))
    blocks = (depth - 2) // 6
    chain = next(g for g in coupled_groups(model) if "stages.1.0.shortcut.0" in g.layers)
    # the second stage's residual chain: every block's conv2 and the projection shortcut
    assert set(chain.layers) == {"stages.1.0.shortcut.0",
                                 *(f"stages.1.{b}.conv2" for b in range(blocks))}
    kept = torch.arange(chain.size) % 3 != 0
    keep = {n: kept[chain.channels[n]] for n in chain.layers}
    keep["stages.1.1.conv1"] = torch.arange(16) >= 5
    reference = masked(model, keep)
    pruned = prune_channels(reference, keep).eval()
    width = int(kept.sum())
    stage = pruned.stages[1]
    assert len(stage) == blocks
    assert stage[0].shortcut[0].out_channels == stage[0].shortcut[1].num_features == width
    for block in stage:
        assert block.conv2.out_channels == block.bn2.num_features == width
    for block in stage[1:]:
        assert block.conv1.in_channels == width
    assert pruned.stages[2][0].conv1.in_channels == pruned.stages[2][0].shortcut[0].in_channels \
        == width
    assert stage[1].conv1.out_channels == stage[1].conv2.in_channels == 11
    # in float64: through 56 layers float32 rounding (summation order differs) reaches ~1e-5
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(pruned.double()(x), reference.double()(x), rtol=1e-9,
                                   atol=1e-9)
    changed = {n for n, _, _ in width_changes(model, pruned)}
    assert {"stages.1.0.bn2", "stages.2.0.shortcut.0", "stages.1.1.conv2"} <= changed


def test_coupled_layers_that_disagree_keep_the_union_or_raise():
    model = MODELS["resnet20"]()
    drop = {"stages.1.1.conv2": torch.arange(16) >= 4}  # its coupled layers keep everything
    effective = effective_keep(model, drop)
    assert set(effective) == {"stages.1.0.conv2", "stages.1.0.shortcut.0", "stages.1.1.conv2",
                              "stages.1.2.conv2"}
    assert all(bool(m.all()) for m in effective.values())
    assert prune_channels(model, drop).stages[1][1].conv2.out_channels == 16
    with pytest.raises(ConversionError, match=r"'stages\.1\.1\.conv2' keeps channels "
                                              r"\[0, 1, 2, 3\] differently.*stages\.1\.0\.conv2"):
        prune_channels(model, drop, on_conflict="raise")
    # a channel dropped by all coupled layers goes even if only some channels agree
    chain = ("stages.1.0.conv2", "stages.1.0.shortcut.0", "stages.1.1.conv2", "stages.1.2.conv2")
    agree = {n: torch.arange(16) != 7 for n in chain}
    agree["stages.1.1.conv2"] = (torch.arange(16) != 7) & (torch.arange(16) >= 4)
    assert prune_channels(model, agree).stages[1][1].conv2.out_channels == 15


def test_zero_padding_shortcuts_are_refused_where_torch_pruning_cannot_follow_them():
    model = calibrated(zoo("resnet20", shortcut="A", width=0.5))
    with pytest.raises(ConversionError, match=r"'stem\.0'.*zero-padding"):
        prune_channels(model, {"stem.0": torch.arange(8) > 0})
    keep = {f"stages.{s}.{b}.conv1": torch.arange(8 * 2 ** s) % 2 == 0
            for s in range(3) for b in range(3)}
    reference = masked(model, keep)
    pruned = prune_channels(reference, keep)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), reference(x), rtol=1e-5, atol=1e-5)


def test_bad_keep_masks_are_clear_errors_naming_the_layer():
    model = MODELS["resnet20"]()
    with pytest.raises(ConversionError, match=r"'stages\.0\.1\.conv1' removes all its 8 output"):
        prune_channels(model, {"stages.0.1.conv1": torch.zeros(8, dtype=torch.bool)})
    with pytest.raises(ConversionError, match=r"'stages\.0\.1\.conv1' must be a bool tensor of "
                                              r"shape \(8,\).*\(7,\)"):
        prune_channels(model, {"stages.0.1.conv1": torch.ones(7, dtype=torch.bool)})
    with pytest.raises(ConversionError, match="no layer 'stages.9'"):
        prune_channels(model, {"stages.9": torch.ones(8, dtype=torch.bool)})
    with pytest.raises(ConversionError, match=r"'stem\.1' is a BatchNorm2d"):
        prune_channels(model, {"stem.1": torch.ones(8, dtype=torch.bool)})
    with pytest.raises(ConversionError, match=r"'fc'.*model's output"):
        prune_channels(model, {"fc": torch.arange(10) > 2})
    with pytest.raises(ConversionError, match="on_conflict"):
        prune_channels(model, {}, on_conflict="ignore")
    with pytest.raises(ConversionError, match=r"'stages\.0\.0\.conv1' is a BinaryConv2d: prune "
                                              r"the float model, then compress it"):
        prune_channels(ec.convert(model, "bnn"), {})
    with pytest.raises(ConversionError, match="no input_shape"):
        prune_channels(nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2)), {})


def test_example_inputs_may_be_a_shape_or_a_tensor_and_linear_rows_prune():
    net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    keep = {"0": torch.arange(8) % 2 == 0}
    by_shape = prune_channels(net, keep, (6,))
    by_tensor = prune_channels(net, keep, torch.randn(1, 6))
    for pruned in (by_shape, by_tensor):
        assert pruned[0].out_features == pruned[2].in_features == 4
    x = torch.randn(5, 6)
    torch.testing.assert_close(by_shape(x), masked(net, keep)(x))


def test_spec_records_the_pruned_widths():
    model = MODELS["resnet20"]()
    pruned = prune_channels(model, {"stages.0.0.conv1": torch.arange(8) < 3})
    assert pruned.edgecompress_spec["model"]["name"] == "resnet20"
    assert pruned.edgecompress_spec["pruned"] == {"stages.0.0.conv1": 3}
    assert "pruned" not in model.edgecompress_spec


def test_pruned_model_trains_summarizes_converts_freezes_saves_and_loads(tmp_path):
    torch.manual_seed(0)
    model = calibrated(zoo("resnet20", width=0.5, activation="hardtanh"))
    pruned = prune_channels(model, random_keep(model, seed=3))
    # trains a step
    pruned.train()
    opt = torch.optim.SGD(pruned.parameters(), lr=0.1)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(10, (8,))
    before = copy.deepcopy(pruned.state_dict())
    loss = nn.functional.cross_entropy(pruned(x), y)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    assert any(not torch.equal(before[k], v) for k, v in pruned.state_dict().items())
    pruned.eval()
    assert "Conv2d" in str(ec.summary(pruned, (3, 32, 32)))
    for method in ({"name": "bnn", "mode": "w1a1"}, {"name": "s3", "bits": 3}):
        converted = ec.convert(pruned, [method]).eval()
        frozen = deploy.freeze(converted)
        path = tmp_path / f"{method['name']}.safetensors"
        deploy.save(frozen, path)
        loaded = deploy.load(path)
        with torch.no_grad():
            assert torch.equal(loaded(x), frozen(x))
        assert loaded.edgecompress_spec["pruned"] == pruned.edgecompress_spec["pruned"]
    frozen = deploy.freeze(pruned)
    deploy.save(frozen, tmp_path / "float.safetensors")
    with torch.no_grad():
        assert torch.equal(deploy.load(tmp_path / "float.safetensors")(x), frozen(x))
