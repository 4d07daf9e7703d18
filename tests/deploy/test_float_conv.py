"""Frozen float convolutions: freeze's PackedFloatConv2d (direct float kernel) and its fusions."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import edgecompress as ec
from edgecompress import deploy
from edgecompress.deploy import float_conv
from edgecompress.kernels import _loader

from .test_fileformat import calibrated, round_trip


def _frozen_resnet(seed: int = 0) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(seed)
    model = calibrated(ec.models.create("resnet20", width=0.5), (3, 32, 32)).eval()
    return model, deploy.freeze(model)


def test_freeze_runs_resnet_convs_in_the_direct_kernel_with_fused_epilogues(tmp_path):
    model, frozen = _frozen_resnet()
    convs = {n: m for n, m in frozen.named_modules() if isinstance(m, deploy.PackedFloatConv2d)}
    assert not any(type(m) is nn.Conv2d for m in frozen.modules())
    assert len(convs) == 21  # stem, 2 per block, 2 downsampling shortcuts
    relu = (0.0, float("inf"))
    # stem and each block's conv1 fuse their ReLU; each block's conv2 act(conv2 + shortcut)
    assert all(convs[f"stages.{s}.{b}.conv{i}"].fused_clamp == relu
               for s in range(3) for b in range(3) for i in (1, 2))
    assert convs["stem.0"].fused_clamp == relu
    assert not any(node.op == "call_function" and "add" in str(node.target)
                   for node in frozen.graph.nodes)
    for batch in (1, 2, 3):  # the kernel (batch <= KERNEL_MAX_BATCH) and torch's convolution
        x = torch.randn(batch, 3, 32, 32)
        with torch.no_grad():
            torch.testing.assert_close(frozen(x), model(x), rtol=1e-4, atol=1e-4)
    same = ec.summary(model, (3, 32, 32))
    assert ec.summary(frozen, (3, 32, 32)).total_macs == same.total_macs
    # each BatchNorm's weight and bias become its convolution's bias
    assert ec.summary(frozen, (3, 32, 32)).params_by_bits[32] == same.params_by_bits[32] - sum(
        m.num_features for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    loaded = round_trip(frozen, tmp_path, torch.randn(1, 3, 32, 32))
    assert isinstance(loaded.get_submodule("stages.1.0.conv2"), deploy.PackedFloatConv2d)
    # the folded BatchNorms' Identity modules keep their places but are not called
    for gm in (frozen, loaded):
        assert isinstance(gm.stem[1], nn.Identity) and isinstance(gm.stages[0][0].bn1, nn.Identity)
        assert not any(node.op == "call_module" and isinstance(gm.get_submodule(node.target),
                                                                nn.Identity)
                       for node in gm.graph.nodes)


def test_the_kernel_runs_at_small_batch_and_torch_above(monkeypatch):
    _, frozen = _frozen_resnet(seed=1)
    calls = []
    real = ec.kernels.DirectConvPlan.__call__
    monkeypatch.setattr(ec.kernels.DirectConvPlan, "__call__",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    with torch.no_grad():
        frozen(torch.randn(float_conv.KERNEL_MAX_BATCH, 3, 32, 32))
        assert len(calls) == 21
        frozen(torch.randn(float_conv.KERNEL_MAX_BATCH + 1, 3, 32, 32))
    assert len(calls) == 21


def test_a_layer_keeps_one_kernel_plan_per_shape_and_renews_it_when_its_tensors_change():
    torch.manual_seed(3)
    conv = nn.Conv2d(5, 7, 3, padding=1)
    layer = deploy.PackedFloatConv2d.from_trained(conv)
    x1, x2 = torch.randn(1, 5, 6, 6), torch.randn(2, 5, 4, 4)
    with torch.no_grad():
        for x in (x1, x2, x1):
            assert torch.equal(layer(x), ec.kernels.conv2d_direct(x, conv.weight, conv.bias,
                                                                  (1, 1), (1, 1)))
        assert len(layer._plans) == 2
        plan = layer._plans[x1.shape]
        threads = torch.get_num_threads()
        torch.set_num_threads(1 if threads > 1 else 2)
        try:
            layer(x1)
            assert layer._plans[x1.shape] is not plan  # a plan fixes its thread count
        finally:
            torch.set_num_threads(threads)
        # new tensors (a state_dict assigned, a folded BatchNorm): the outputs follow them
        new = nn.Conv2d(5, 7, 3, padding=1)
        layer.load_state_dict({"weight": new.weight.detach().clone(),
                               "bias": new.bias.detach().clone()}, assign=True)
        layer.prepare()
        torch.testing.assert_close(layer(x1), new(x1), rtol=1e-5, atol=1e-5)
        layer.bias = torch.zeros(7)  # a replaced bias tensor alone
        torch.testing.assert_close(layer(x1), new(x1) - new.bias.view(1, -1, 1, 1),
                                   rtol=1e-5, atol=1e-5)


def test_a_frozen_model_that_has_run_deep_copies_and_pickles():
    """The kernel plans (ctypes pointers to this process's tensors) are not copied: a deep
    copy or an unpickled model makes its own at its first call, with the same outputs."""
    import copy
    import io

    _, frozen = _frozen_resnet(seed=2)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        y = frozen(x)
        assert frozen.stem[0]._plans
        buffer = io.BytesIO()
        torch.save(frozen, buffer)
        buffer.seek(0)
        for twin in (copy.deepcopy(frozen), torch.load(buffer, weights_only=False)):
            assert not twin.stem[0]._plans
            assert torch.equal(twin(x), y)
            assert twin.stem[0]._plans
        assert frozen.stem[0]._plans  # the original keeps its own


def test_unsupported_convolutions_stay_torch_modules():
    model = nn.Sequential(nn.Conv2d(3, 4, 5, padding=2), nn.ReLU(), nn.Conv2d(4, 4, 3, groups=2),
                          nn.Conv2d(4, 5, 3, padding=1, bias=False), nn.ReLU())
    frozen = deploy.freeze(model)
    kinds = [type(m).__name__ for m in frozen.children()]
    assert kinds[:3] == ["Conv2d", "ReLU", "Conv2d"] and kinds[3] == "PackedFloatConv2d"
    x = torch.randn(1, 3, 9, 9)
    with torch.no_grad():
        torch.testing.assert_close(frozen(x), model(x), rtol=1e-5, atol=1e-5)


def test_without_the_library_the_frozen_model_runs_torch_and_says_so_once(monkeypatch):
    model, frozen = _frozen_resnet(seed=2)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        # (missing from the start: a layer's plans exist only once the library was loaded,
        # and a loaded library stays loaded)
        with monkeypatch.context() as patch:
            patch.setattr(_loader, "load", lambda: None)
            patch.setattr(_loader, "_load_error", "simulated: not built")
            patch.setattr(_loader, "_warned", False)
            with pytest.warns(RuntimeWarning, match="simulated: not built"):
                slow = frozen(x)
        fast = frozen(x)
    torch.testing.assert_close(slow, fast, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(slow, model(x), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_frozen_float_convs_compile_as_one_graph_and_export_as_torch_convs():
    torch.manual_seed(5)
    model = nn.Sequential(nn.Conv2d(3, 9, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(9, 5, 3, stride=2, padding=1)).eval()
    frozen = deploy.freeze(model)
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(torch.compile(frozen, fullgraph=True)(x), frozen(x))
        exported = torch.export.export(frozen, (x,))
        assert "aten.conv2d" in str(exported.graph)
        torch.testing.assert_close(exported.module()(x), model(x), rtol=1e-5, atol=1e-5)
