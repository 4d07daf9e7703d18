"""Packed BinaryViT layers and frozen BinaryViT / binary DeiT: bit-exact with the training form in
eval mode, through save / load, with and without the C kernels."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgecompress import deploy
from edgecompress.deploy import (PackedAttentionCore, PackedBinaryLinearBlock,
                                 PackedCenteredBinaryLinear, PackedPoolingBranches)
from edgecompress.kernels import _loader
from edgecompress.layers import AttentionCore, CenteredBinaryLinear, LearnableThresholdSign
from edgecompress.layers.transformer import PoolingBranches, RPReLU
from edgecompress.models.vit import binary_deit, binaryvit


def _perturb(model: nn.Module, alpha: float = 0.02) -> nn.Module:
    """Random non-default thresholds, norms, shifts and BatchNorm statistics (the freshly built
    values are mostly 0 / 1, which would hide a wrongly packed offset); eval mode."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("alpha"):
                p.fill_(alpha)
            elif p.dim() == 1 or name.endswith("scales"):
                p.add_(torch.randn(p.shape, generator=g) * 0.1)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.normal_(0, 0.5, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
    return model.eval()


@pytest.mark.parametrize("in_features, out_features", [(64, 64), (70, 33), (5, 130)])
def test_packed_centered_linear_equals_training_form(in_features, out_features):
    layer = CenteredBinaryLinear(in_features, out_features,
                                 input_quantizer=LearnableThresholdSign(in_features))
    _perturb(layer)
    packed = PackedCenteredBinaryLinear.from_trained(layer)
    x = torch.randn(2, 9, in_features)
    assert packed.threshold is not None and packed.binary_inputs
    assert torch.equal(packed(x), layer(x))
    assert torch.equal(packed.discrete_weight(), layer.discrete_weight())


def test_packed_centered_linear_without_input_quantizer_is_w1a32_to_rounding():
    layer = CenteredBinaryLinear(70, 33).eval()
    packed = PackedCenteredBinaryLinear.from_trained(layer)
    x = torch.randn(4, 70)
    assert packed.threshold is None and not packed.binary_inputs
    torch.testing.assert_close(packed(x), layer(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("binary, quantize_probs", [(True, True), (True, False), (False, False)])
@pytest.mark.parametrize("dim, heads, n, s", [(64, 2, 16, 16), (6, 2, 9, 4), (140, 2, 5, 70)])
def test_packed_attention_core_equals_training_form(binary, quantize_probs, dim, heads, n, s):
    core = _perturb(AttentionCore(dim, heads, binary, quantize_probs), alpha=0.6 / s)
    packed = PackedAttentionCore.from_trained(core)
    g = torch.Generator().manual_seed(1)
    q, k, v = torch.randn(3, n, dim, generator=g), *torch.randn(2, 3, s, dim, generator=g)
    with torch.no_grad():
        expected = core(q, k, v)
    assert torch.equal(packed(q, k, v), expected)
    if quantize_probs:  # both probability values occur (the masks are not trivial)
        with torch.no_grad():
            qs, ks = core._split(core.q_sign(q)), core._split(core.k_sign(k))
            codes = core.probs_quantizer.codes(
                torch.softmax((qs @ ks.transpose(-2, -1)) * core.scale, dim=-1))
        assert 0 < float(codes.mean()) < 1
    assert packed.edgecompress_macs((q, k, v), expected) == core.edgecompress_macs((q, k, v),
                                                                                   expected)


MODELS = {
    "binaryvit": lambda: binaryvit(input_shape=(3, 32, 32)),
    "binaryvit-flat": lambda: binaryvit(input_shape=(3, 32, 32), pyramid=False, depth=2),
    "binary-deit": lambda: binary_deit(input_shape=(3, 32, 32), depth=2),
    "binary-deit-cls-branches": lambda: binary_deit(input_shape=(3, 32, 32), depth=2,
                                                    pooling_branches=True),
}


@pytest.mark.parametrize("name", MODELS)
def test_frozen_binary_vit_equals_training_form_and_round_trips(name, tmp_path):
    model = _perturb(MODELS[name]())
    frozen = deploy.freeze(model)
    kinds = {type(m) for m in frozen.modules()}
    assert {PackedCenteredBinaryLinear, PackedAttentionCore, PackedBinaryLinearBlock} <= kinds
    assert not kinds & {CenteredBinaryLinear, AttentionCore, LearnableThresholdSign,
                        nn.BatchNorm1d, RPReLU, PoolingBranches}
    assert (PackedPoolingBranches in kinds) == (name != "binary-deit")
    # BinaryViT's affine and residual after every attention and MLP run in the epilogue of the
    # binary block before them (the binary DeiT has no affine)
    blocks = [m for m in model.modules() if type(m).__name__ == "Block"]
    fused = [m for m in frozen.modules()
             if isinstance(m, PackedBinaryLinearBlock) and m.block_scale is not None]
    assert len(fused) == (2 * len(blocks) if name.startswith("binaryvit") else 0)
    # and a block's y + branches(x) runs in the pooling pass
    if PackedPoolingBranches in kinds:
        calls = [n for n in frozen.graph.nodes if n.op == "call_module"
                 and isinstance(frozen.get_submodule(n.target), PackedPoolingBranches)]
        assert len(calls) == len(blocks) and all(len(n.args) == 2 for n in calls)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
    assert torch.equal(frozen(x), expected)
    deploy.save(frozen, tmp_path / "m.safetensors")
    loaded = deploy.load(tmp_path / "m.safetensors")
    assert torch.equal(loaded(x), expected)


def test_frozen_binary_vit_without_the_library_is_the_same(monkeypatch):
    model = _perturb(MODELS["binaryvit-flat"]())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
    monkeypatch.setattr(_loader, "load", lambda: None)
    monkeypatch.setattr(_loader, "_warned", True)
    assert torch.equal(deploy.freeze(model)(x), expected)
