"""freeze runs a ReLU / hardtanh that only a max-pool reads after the pool (a ResNet stem's end):
the same values bit for bit, on a quarter of them."""

from __future__ import annotations

import importlib

import pytest
import torch
from torch import nn

import edgecompress as ec
from edgecompress import deploy

# (deploy.freeze is the function)
freeze_module = importlib.import_module("edgecompress.deploy.freeze")

from .test_fileformat import calibrated, round_trip


def _order(frozen: nn.Module) -> list[str] | None:
    """The modules the frozen model's graph calls, in order; None if freeze rewrote no graph."""
    graph = getattr(frozen, "graph", None)
    return None if graph is None else [str(n.target) for n in graph.nodes
                                       if n.op == "call_module"]


def _without_the_rewrite(model: nn.Module, monkeypatch) -> nn.Module:
    """The frozen form as freeze gave it before the rewrite existed."""
    with monkeypatch.context() as m:
        m.setattr(freeze_module, "_pool_before_activations", lambda graph, model: False)
        return deploy.freeze(model)


@pytest.mark.parametrize("method, activation", [(None, "relu"), (None, "hardtanh"),
                                                ("bnn", "hardtanh")])
def test_resnet18_stem_pools_before_its_activation_with_identical_outputs(
        method, activation, monkeypatch, tmp_path):
    torch.manual_seed(0)
    shape = (3, 64, 64)
    model = ec.models.create("resnet18", width=0.25, activation=activation, input_shape=shape,
                             num_classes=10)
    if method:
        model = ec.convert(model, method, mode="w1a1")
    model = calibrated(model, shape)
    before = _without_the_rewrite(model, monkeypatch)
    frozen = deploy.freeze(model)
    order = _order(frozen)
    assert order.index("stem.3") < order.index("stem.2")  # max-pool, then the activation
    assert _order(before).index("stem.2") < _order(before).index("stem.3")
    assert frozen.get_submodule("stem.2").inplace  # on the pool's output, which nothing else reads
    for batch in (1, 3):  # the direct float kernel's batches and torch's
        x = torch.randn(batch, *shape)
        with torch.no_grad():
            assert torch.equal(frozen(x), before(x))  # a clamp commutes with the maximum
    round_trip(frozen, tmp_path, torch.randn(2, *shape))
    exported = torch.export.export(frozen, (x,))
    with torch.no_grad():
        assert torch.equal(exported.module()(x), frozen(x))


class _Branching(nn.Module):
    """An activation that a max-pool and something else read: the pattern does not hold."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 5, padding=2)
        self.act = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.pool_first = nn.MaxPool2d(2)
        self.act_after = nn.Hardtanh()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.conv(x))
        z = self.act_after(self.pool_first(y))  # already pooled first
        return self.pool(y) + z + nn.functional.avg_pool2d(y, 2)


@pytest.mark.parametrize("model", [
    _Branching(),
    nn.Sequential(nn.Conv2d(3, 8, 5), nn.ReLU(), nn.AvgPool2d(2)),  # not a max-pool
    nn.Sequential(nn.Conv2d(3, 8, 5), nn.Sigmoid(), nn.MaxPool2d(2)),  # not a clamp
])
def test_models_without_the_pattern_keep_their_order(model, monkeypatch):
    torch.manual_seed(1)
    model = model.eval()
    before = _without_the_rewrite(model, monkeypatch)
    frozen = deploy.freeze(model)
    assert _order(frozen) == _order(before)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(frozen(x), before(x))
