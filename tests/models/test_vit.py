"""DeiT / binary DeiT / BinaryViT: shapes for every variant and image size, what each switch
changes, the float DeiT against a hand-written reference, and the rejected options."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from edgecompress import models, summary
from edgecompress.errors import EdgecompressError, ModelConfigError
from edgecompress.layers import CenteredBinaryLinear, LearnableThresholdSign
from edgecompress.layers.binary import harden
from edgecompress.models.vit import PatchMerging, PoolingBranches
from edgecompress.quantizers import METHODS, method_parameters
from edgecompress.train.schedules import scheduled_modules

SHAPES = [(1, 28, 28), (3, 32, 32)]
SWITCHES = ("pool", "pooling_branches", "affine", "pyramid")
TINY = {"size": "mini", "depth": 1}  # flat models in these tests


def variants():
    """Every combination of the four switches (the pyramid needs average pooling)."""
    for pool, branches, affine, pyramid in itertools.product(("cls", "avg"), *[(False, True)] * 3):
        if pyramid and pool == "cls":
            continue
        yield dict(pool=pool, pooling_branches=branches, affine=affine, pyramid=pyramid)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("switches", list(variants()), ids=lambda d: "-".join(
    f"{k}={v}" for k, v in d.items()))
def test_every_variant_runs_on_every_small_image(shape, switches):
    torch.manual_seed(0)
    flat = {} if switches["pyramid"] else TINY
    model = models.create("binaryvit", num_classes=7, input_shape=shape, **flat, **switches)
    out = model(torch.randn(2, *shape))
    assert out.shape == (2, 7)
    out.square().mean().backward()
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    assert not unused


def test_float_deit_runs_on_small_images_and_keeps_the_224_configuration():
    for shape in SHAPES:
        assert models.create("deit", input_shape=shape, **TINY)(torch.randn(2, *shape)).shape \
            == (2, 10)
    deit = models.create("deit")  # the DeiT-tiny configuration at 224x224
    assert deit.stem.kernel_size == (16, 16) and deit.pos_embed.shape == (1, 197, 192)
    assert len(deit.blocks) == 12 and deit.blocks[0].attn.core.heads == 3
    assert models.create("deit", size="small").pos_embed.shape == (1, 197, 384)


def _stage_layout(model):
    """(tokens side, width, heads, kv reduction, blocks) per stage, read from the modules."""
    stages, side = [], None
    for block in model.blocks:
        if isinstance(block, PatchMerging):
            continue
        attn = block.attn
        key = (attn.grid[0], block.norm1.normalized_shape[0], attn.core.heads, attn.kv_reduction)
        if stages and stages[-1][0] == key:
            stages[-1][1] += 1
        else:
            stages.append([key, 1])
        side = attn.grid[0]
    assert side is not None
    return [(*key, n) for key, n in stages]


def test_binaryvit_keeps_the_papers_224_pyramid():
    model = models.create("binaryvit", num_classes=1000)
    assert model.stem.kernel_size == (4, 4)
    assert _stage_layout(model) == [(56, 64, 1, 8, 3), (28, 128, 2, 4, 4), (14, 256, 4, 1, 8),
                                    (7, 512, 8, 1, 4)]
    widths = [b.mlp.fc1.out_features for b in model.blocks if not isinstance(b, PatchMerging)]
    assert sorted(set(widths)) == [512, 1024, 2048] and widths[0] == 512 and widths[-1] == 2048


def test_small_image_pyramids_are_scaled_as_documented():
    cifar = models.create("binaryvit", input_shape=(3, 32, 32))
    assert cifar.stem.kernel_size == (2, 2)
    assert _stage_layout(cifar) == [(16, 32, 1, 4, 1), (8, 64, 2, 2, 1), (4, 128, 4, 1, 2),
                                    (2, 128, 4, 1, 1)]
    mnist = models.create("binaryvit", input_shape=(1, 28, 28))
    assert _stage_layout(mnist) == [(14, 32, 1, 2, 1), (7, 64, 2, 1, 1)]


def _names(model):
    return {n for n, _ in model.named_parameters()}


def test_each_switch_changes_only_what_it_should():
    shape = (3, 32, 32)
    base_options = dict(input_shape=shape, size="mini", depth=2)  # 2: the CLS token sees the
    # grid tokens that block 0's pooling branches change
    torch.manual_seed(0)
    base = models.create("binary-deit", **base_options).eval()
    x = torch.randn(2, *shape)
    # average pooling: no CLS token (one position fewer), nothing else
    torch.manual_seed(0)
    avg = models.create("binary-deit", pool="avg", **base_options)
    assert _names(base) - _names(avg) == {"cls_token"} and _names(avg) <= _names(base)
    assert avg.pos_embed.shape[1] == base.pos_embed.shape[1] - 1
    # pooling branches: only their scales are added; at their initial 0 the output is unchanged
    torch.manual_seed(0)
    branches = models.create("binary-deit", pooling_branches=True, **base_options).eval()
    added = _names(branches) - _names(base)
    assert added and all(n.endswith("branches.scales") for n in added)
    assert _names(base) <= _names(branches)
    torch.testing.assert_close(branches(x), base(x))
    with torch.no_grad():
        branches.blocks[0].branches.scales.fill_(1.0)
    assert not torch.allclose(branches(x), base(x))
    # affine: only per-channel scales and shifts before the residual adds
    torch.manual_seed(0)
    affine = models.create("binary-deit", affine=True, **base_options)
    added = _names(affine) - _names(base)
    assert _names(base) <= _names(affine)
    assert {n.split(".")[-2] for n in added} == {"affine1", "affine2"}
    assert torch.equal(affine.blocks[0].affine1.weight, torch.full((64,), 0.1))
    # pyramid: stages joined by patch merging and pooled keys/values, with the other switches
    flat = models.create("binary-deit", pool="avg", input_shape=shape)
    pyramid = models.create("binary-deit", pool="avg", pyramid=True, input_shape=shape)
    assert not any(isinstance(m, PatchMerging) for m in flat.modules())
    assert sum(isinstance(m, PatchMerging) for m in pyramid.modules()) == 3
    assert not any(isinstance(m, PoolingBranches) for m in pyramid.modules())
    assert {type(m) for m in pyramid.modules()} - {type(m) for m in flat.modules()} \
        == {PatchMerging}


def test_binary_models_binarize_weights_and_activations_and_keep_stem_and_head_float():
    torch.manual_seed(0)
    model = models.create("binaryvit", input_shape=(1, 28, 28))
    binary = [m for m in model.modules() if isinstance(m, CenteredBinaryLinear)]
    assert binary and all(m.weight_bits == 1 and m.input_bits == 1 for m in binary)
    for m in binary:
        w = m.quantized_weight().detach()
        assert torch.equal(w.abs(), w.abs().amax(dim=1, keepdim=True).expand_as(w))
    seen = []
    hooks = [m.register_forward_hook(lambda mod, args, out: seen.append(out))
             for m in model.modules() if isinstance(m, LearnableThresholdSign)]
    model(torch.randn(2, 1, 28, 28))
    for h in hooks:
        h.remove()
    assert seen and all(set(t.unique().tolist()) <= {-1.0, 1.0} for t in seen)
    assert type(model.stem) is torch.nn.Conv2d and type(model.head) is torch.nn.Linear
    float_model = models.create("deit", input_shape=(1, 28, 28), **TINY)
    assert not any(isinstance(m, CenteredBinaryLinear) for m in float_model.modules())


def _reference_deit(model, x):
    """The float DeiT written out with plain torch ops from its state_dict."""
    s = {k: v.detach() for k, v in model.state_dict().items()}
    b = x.shape[0]
    tokens = F.conv2d(x, s["stem.weight"], s["stem.bias"], stride=model.stem.stride)
    tokens = tokens.flatten(2).transpose(1, 2)
    tokens = torch.cat([s["cls_token"].expand(b, -1, -1), tokens], 1) + s["pos_embed"]
    dim = tokens.shape[-1]
    for i, block in enumerate(model.blocks):
        heads, p = block.attn.core.heads, f"blocks.{i}."
        h = F.layer_norm(tokens, (dim,), s[p + "norm1.weight"], s[p + "norm1.bias"])
        q, k, v = (F.linear(h, s[f"{p}attn.{n}.weight"], s[f"{p}attn.{n}.bias"]) for n in "qkv")
        mha = torch.nn.MultiheadAttention(dim, heads, batch_first=True, bias=True)
        with torch.no_grad():  # identity projections: only the attention itself is compared
            mha.in_proj_weight.copy_(torch.eye(dim).repeat(3, 1))
            mha.in_proj_bias.zero_()
            mha.out_proj.weight.copy_(s[p + "attn.proj.weight"])
            mha.out_proj.bias.copy_(s[p + "attn.proj.bias"])
        attn, _ = mha(q, k, v, need_weights=False)
        tokens = tokens + attn
        h = F.layer_norm(tokens, (dim,), s[p + "norm2.weight"], s[p + "norm2.bias"])
        h = F.gelu(F.linear(h, s[p + "mlp.fc1.weight"], s[p + "mlp.fc1.bias"]))
        tokens = tokens + F.linear(h, s[p + "mlp.fc2.weight"], s[p + "mlp.fc2.bias"])
    tokens = F.layer_norm(tokens, (dim,), s["norm.weight"], s["norm.bias"])
    return F.linear(tokens[:, 0], s["head.weight"], s["head.bias"])


def test_float_deit_matches_an_independent_reference():
    torch.manual_seed(0)
    model = models.create("deit", input_shape=(3, 32, 32), size="mini", depth=2).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), _reference_deit(model, x), rtol=1e-4, atol=1e-5)


def test_summary_counts_attention_products_by_precision():
    shape = (3, 32, 32)
    model = models.create("binary-deit", input_shape=shape, **TINY)
    tokens, dim = 8 * 8 + 1, 64
    macs = summary(model, shape).macs_by_precision
    assert macs["w1a1"] >= tokens * tokens * dim and macs["u1a1"] == tokens * tokens * dim
    unquantized = models.create("binary-deit", input_shape=shape, quantize_probs=False, **TINY)
    macs = summary(unquantized, shape).macs_by_precision
    assert "u1a1" not in macs and macs["w1a32"] == tokens * tokens * dim
    float_macs = summary(models.create("deit", input_shape=shape, **TINY), shape).macs_by_precision
    linears = tokens * 12 * dim * dim  # q, k, v, proj, and the 4x MLP
    stem_and_head = 64 * 3 * 16 * dim + dim * 10
    assert float_macs == {"w32a32": linears + 2 * tokens * tokens * dim + stem_and_head}


@pytest.mark.parametrize("name, options, words", [
    ("binary-deit", {"input_shape": (3, 30, 30)}, ["30x30", "patch_size 4"]),
    ("binary-deit", {"input_shape": (3, 32, 32), "patch_size": 5}, ["32x32", "patch_size 5"]),
    ("binaryvit", {"input_shape": (3, 30, 30), "patch_size": 4}, ["30x30", "patch_size 4"]),
    ("binary-deit", {"size": "mini", "heads": 5}, ["heads 5", "dim 64"]),
    ("deit", {"size": "mini", "dim": 30, "heads": 4}, ["heads 4", "dim 30"]),
    ("binaryvit", {"pool": "max"}, ["pool", "'max'", "cls, avg"]),
    ("binaryvit", {"pool": "cls"}, ["pyramid=True", "pool='avg'"]),
    ("binaryvit", {"size": "huge"}, ["size 'huge'", "paper, mini"]),
    ("deit", {"size": "paper"}, ["size 'paper'", "tiny, small, mini"]),
    ("binaryvit", {"dim": 32}, ["dim", "pyramid"]),
    ("deit", {"depth": 0}, ["depth", "positive integer", "0"]),
])
def test_bad_options_are_rejected_naming_option_and_value(name, options, words):
    with pytest.raises(ModelConfigError) as info:
        models.create(name, **options)
    for word in words:
        assert word in str(info.value)


def test_unknown_switch_and_wrong_input_size_are_rejected():
    with pytest.raises(EdgecompressError, match=r"unknown option\(s\) \['avgpool'\]"):
        models.create("binaryvit", avgpool=True)
    model = models.create("deit", input_shape=(1, 28, 28), **TINY)
    with pytest.raises(ModelConfigError, match=r"built for inputs \(1, 28, 28\), got \(3, 32, 32\)"):
        model(torch.zeros(1, 3, 32, 32))


def test_summary_gives_attention_products_their_operation_kinds():
    shape = (3, 32, 32)
    tokens, dim = 8 * 8 + 1, 64
    binary = summary(models.create("binary-deit", input_shape=shape, **TINY), shape)
    cores = [layer for layer in binary.layers if layer.kind == "AttentionCore"]
    assert cores and all(layer.ops_by_kind == {"add": tokens * tokens * dim,
                                               "xnor-popcount": tokens * tokens * dim}
                         for layer in cores)
    floating = summary(models.create("deit", input_shape=shape, **TINY), shape)
    cores = [layer for layer in floating.layers if layer.kind == "AttentionCore"]
    assert cores and all(layer.ops_by_kind == {"mac": 2 * tokens * tokens * dim}
                         for layer in cores)


# the two binary ViTs at test sizes: the flat one cut to one block, the pyramid as it is
BINARY_VITS = {"binary-deit": TINY, "binaryvit": {"size": "mini"}}
SMALL = (3, 16, 16)  # a 16x16 image: 8x8 tokens for the pyramid, 4x4 for the flat model


@pytest.mark.parametrize("name", list(BINARY_VITS))
@pytest.mark.parametrize("method", METHODS)
def test_every_binarization_method_can_be_the_weight_quantizer(name, method):
    """Selected by name, the method's pair (and its schedules, which the trainer steps) sits in
    every binary linear; a training step moves the weights; the deployed weights are +-alpha per
    row; the state (scheduled values included) survives a state_dict round trip."""
    torch.manual_seed(0)
    options = {"input_shape": SMALL, "weight_method": method, **BINARY_VITS[name]}
    model = models.create(name, **options)
    binary = [m for m in model.modules() if isinstance(m, CenteredBinaryLinear)]
    assert binary and all(m.weight_quantizer.name == method for m in binary)
    ramps = {p for p, s in method_parameters(method).items() if s.kind != "constant"}
    scheduled = [m for _, m in scheduled_modules(model)]
    assert len(scheduled) == (len(binary) if ramps else 0)
    assert all(set(m.schedules) == ramps for m in scheduled)
    for module in scheduled:  # the trainer's ScheduleStepper midway through a run
        for param, schedule in module.schedules.items():
            module.set_param(param, schedule.value(1, 3))
    before = [m.weight.detach().clone() for m in binary]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x, y = torch.randn(4, *SMALL), torch.tensor([0, 1, 2, 3])
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    assert math.isfinite(loss.item())
    assert all(not torch.equal(m.weight, w) for m, w in zip(binary, before))
    copy = models.create(name, **options)
    copy.load_state_dict(model.state_dict())
    model.eval(), copy.eval()
    with torch.no_grad():
        torch.testing.assert_close(copy(x), model(x), rtol=0, atol=0)
    harden(model)
    for m in binary:
        w = m.quantized_weight().detach()
        alpha = m.centered_weight().abs().mean(dim=1, keepdim=True).detach()
        assert torch.equal(w, alpha * torch.where(m.centered_weight() >= 0, 1.0, -1.0))


def test_the_weight_method_takes_the_methods_options():
    model = models.create("binary-deit", input_shape=(3, 32, 32), **TINY,
                          weight_method={"name": "bnn++", "prox": "proxquant", "beta": 2.0,
                                         "lam": {"kind": "linear", "start": 0.0, "end": 0.5}})
    pair = next(m for m in model.modules() if isinstance(m, CenteredBinaryLinear)).weight_quantizer
    assert type(pair.prox).__name__ == "ProxQuantProx" and float(pair.backward.beta) == 2.0
    assert pair.prox.schedules["lam"].end == 0.5


@pytest.mark.parametrize("method, words", [
    ("bnn-", ["weight_method 'bnn-'", "unknown binarization method", "bnn++"]),
    ({"name": "pc", "lam": 1.0}, ["weight_method", "'lam'", "mu"]),
    ({"mu": 1.0}, ["weight_method", "'name'"]),
])
def test_a_bad_weight_method_is_rejected_naming_it(method, words):
    with pytest.raises(ModelConfigError) as info:
        models.create("binaryvit", size="mini", input_shape=(3, 32, 32), weight_method=method)
    for word in words:
        assert word in str(info.value)
