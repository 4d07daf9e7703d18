"""freeze / save / load: the packed inference model equals the training form, files round-trip
exactly, and bad files are rejected with the file named."""

from __future__ import annotations

import copy
import json
import os
import struct

import pytest
import torch
from torch import nn

import edgecompress as ec
from edgecompress import deploy
from edgecompress.deploy import PackedBinaryConv2d, PackedBinaryLinear
from edgecompress.errors import ModelFileError
from edgecompress.layers import BinaryConv2d, BinaryLinear, harden
from edgecompress.quantizers import method_pair


def calibrated(model: nn.Module, shape) -> nn.Module:
    """Give BatchNorm realistic running statistics, then eval mode."""
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, *shape))
    return model.eval()


@pytest.mark.parametrize("mode", ["w1a1", "w1a32"])
@pytest.mark.parametrize("scaling", ["none", "channel"])
def test_frozen_resnet_matches_the_hardened_training_form(mode, scaling):
    torch.manual_seed(0)
    model = ec.models.create("resnet20", width=0.25, activation="hardtanh")
    model = calibrated(ec.convert(model, "bnn++", mode=mode, scaling=scaling), (3, 32, 32))
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = harden(copy.deepcopy(model))(x)
        frozen = deploy.freeze(model, fold_batchnorm=False)
        out = frozen(x)
    kinds = {type(m) for m in frozen.modules()}
    assert PackedBinaryConv2d in kinds and BinaryConv2d not in kinds
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("stride, padding, dilation", [(1, 0, 1), (2, 1, 1), (1, 2, 2),
                                                       (3, 1, 1)])
def test_packed_conv_geometry_variants(stride, padding, dilation):
    torch.manual_seed(1)
    layer = BinaryConv2d(5, 7, 3, stride, padding, dilation, bias=True,
                         weight_quantizer=method_pair("bnn"), input_quantizer=method_pair("bnn"))
    net = nn.Sequential(layer)
    x = torch.randn(2, 5, 11, 9)
    with torch.no_grad():
        torch.testing.assert_close(deploy.freeze(net)(x), net(x))


@pytest.mark.parametrize("groups, cin, cout", [(2, 6, 4), (3, 3, 3), (4, 8, 12), (2, 130, 6)])
@pytest.mark.parametrize("mode", ["w1a1", "w1a32"])
def test_grouped_packed_conv_matches_the_training_form(groups, cin, cout, mode):
    torch.manual_seed(groups + cin)
    net = nn.Sequential(
        BinaryConv2d(cin, cout, 3, 1, 1, 1, groups, bias=True, scaling="channel",
                     weight_quantizer=method_pair("bnn"),
                     input_quantizer=method_pair("bnn") if mode == "w1a1" else None),
        nn.BatchNorm2d(cout), nn.Hardtanh(),
        BinaryConv2d(cout, cout, 3, 2, 1, 1, groups, bias=False,
                     weight_quantizer=method_pair("bnn"),
                     input_quantizer=method_pair("bnn") if mode == "w1a1" else None))
    net = calibrated(net, (cin, 9, 7))
    frozen = deploy.freeze(net)
    assert isinstance(frozen[0], PackedBinaryConv2d) and frozen[0].groups == groups
    x = torch.randn(2, cin, 9, 7)
    with torch.no_grad():
        torch.testing.assert_close(frozen(x), net(x), atol=1e-4, rtol=1e-4)
        assert torch.equal(frozen(x), deploy.freeze(net, fuse=False)(x))


def _reference_conv_rows(signs: torch.Tensor) -> torch.Tensor:
    """+-1 weights (N, C, kh, kw) -> packed rows in the im2col order (kernel row, kernel column,
    channel; each pixel's channels padded with +1 to whole words), with the reference packer."""
    from edgecompress import kernels
    n, c, kh, kw = signs.shape
    padded = torch.ones(n, kh, kw, kernels.words(c) * 64)
    padded[..., :c] = signs.permute(0, 2, 3, 1)
    return kernels.pack_signs_reference(padded.reshape(n, -1))


@pytest.mark.parametrize("groups, cin, cout, kernel, stride, padding, dilation, batch", [
    (2, 6, 4, 3, 1, 1, 1, 2),
    (2, 130, 6, 3, 2, 1, 1, 1),  # 65 channels per group: two words per pixel
    (2, 10, 14, (3, 1), (1, 2), (1, 0), 1, 2),
    (5, 5, 5, 3, 1, 1, 1, 2),  # depthwise
    (3, 3, 6, 3, 1, 0, 1, 1),  # depthwise, 2 outputs per channel, no padding (no mask)
    (7, 7, 7, 3, 2, 2, 2, 2),  # depthwise, strided and dilated
])
def test_grouped_packed_conv_is_bit_exact_against_the_kernel_references(
        groups, cin, cout, kernel, stride, padding, dilation, batch):
    """Each group of a packed grouped W1A1 convolution is the reference im2col of its input
    channels times the reference-packed signs of its weights, with its slice of the folded
    scale and bias: bit for bit, whatever the GEMM path."""
    from edgecompress import kernels
    torch.manual_seed(groups * 100 + cin + cout)
    conv = BinaryConv2d(cin, cout, kernel, stride, padding, dilation, groups, bias=True,
                        scaling="channel", weight_quantizer=method_pair("bnn"),
                        input_quantizer=method_pair("bnn"))
    net = calibrated(nn.Sequential(conv, nn.BatchNorm2d(cout)), (cin, 9, 8))
    frozen = deploy.freeze(net)
    layer = frozen[0]
    assert isinstance(layer, PackedBinaryConv2d) and layer.groups == groups
    assert layer.scale is not None and layer.bias is not None  # BatchNorm folded in
    x = torch.randn(batch, cin, 9, 8)
    x[0, 0, 0, :3] = torch.tensor([0.0, -0.0, -1e-30])  # sign(+-0) = +1 on both sides
    cin_g, cout_g = cin // groups, cout // groups
    ks, st, pa, di = (_pair(v) for v in (kernel, stride, padding, dilation))
    signs = conv.discrete_weight()
    parts = []
    for g in range(groups):
        rows, mask = kernels.im2col_signs_reference(x[:, g * cin_g:(g + 1) * cin_g], ks, st, pa,
                                                    di)
        out = slice(g * cout_g, (g + 1) * cout_g)
        b = _reference_conv_rows(signs[out])
        assert torch.equal(b, layer.rows[out])
        parts.append(kernels.binary_gemm_affine_reference(rows, b, layer.k, mask,
                                                          layer.scale[out], layer.bias[out]))
    oh, ow = (kernels.conv_output_size(s, *geo) for s, geo in zip((9, 8), zip(ks, st, pa, di)))
    expected = torch.cat(parts, dim=1).view(batch, oh, ow, cout).permute(0, 3, 1, 2)
    with torch.no_grad():
        got = layer(x)
        assert got.shape == expected.shape and torch.equal(got, expected)
        assert torch.equal(frozen(x), expected)
        # and the reference itself is the training-form convolution (up to float rounding)
        torch.testing.assert_close(expected, net(x), atol=1e-4, rtol=1e-4)


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


@pytest.mark.parametrize("mode", ["w1a1", "w1a32"])
def test_batchnorm_after_a_packed_layer_is_folded(mode):
    torch.manual_seed(4)
    model = calibrated(ec.convert(ec.models.create("resnet20", width=0.25,
                                                   activation="hardtanh"), "bnn", mode=mode),
                       (3, 32, 32))
    folded, unfolded = deploy.freeze(model), deploy.freeze(model, fold_batchnorm=False)
    count = lambda m: sum(isinstance(q, nn.BatchNorm2d) for q in m.modules())  # noqa: E731
    assert count(unfolded) == 1 + 2 * 9 + 2 and count(folded) == 0  # the float stem's too
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        a, b = folded(x), unfolded(x)
    # folding reorders float rounding, which float activations carry through 20 layers
    torch.testing.assert_close(a, b, atol=1e-5 if mode == "w1a1" else 1e-3, rtol=1e-3)
    assert torch.equal(a.argmax(1), b.argmax(1))


class _PreActivation(nn.Module):
    """act(x) feeds a float conv while x itself is the shortcut: act must not run in place."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.act = nn.Hardtanh()
        self.act2 = nn.Hardtanh()

        self.conv2 = BinaryConv2d(4, 4, 3, padding=1, weight_quantizer=method_pair("bnn"),
                                  input_quantizer=method_pair("bnn"))
        self.conv3 = BinaryConv2d(4, 4, 3, padding=1, weight_quantizer=method_pair("bnn"),
                                  input_quantizer=method_pair("bnn"))
        self.offset = nn.Parameter(torch.randn(1, 4, 1, 1))

    def forward(self, x):
        y = self.bn(self.conv(x))
        z = self.act2(self.conv2(self.act(y)) + y)
        return self.act3(self.conv3(z) + self.offset)  # a broadcast "residual"


def test_freeze_folds_batchnorm_fuses_residual_ends_and_runs_activations_in_place_safely():
    torch.manual_seed(5)
    model = _PreActivation()
    model.act3 = nn.ReLU()
    model = calibrated(model, (4, 6, 6))
    frozen = deploy.freeze(model)
    assert isinstance(frozen.bn, nn.Identity) and frozen.conv.bias is not None
    assert not frozen.act.inplace  # y is also the shortcut
    # act2(conv2(.) + y) and act3(conv3(.) + offset) run in the GEMMs' store loops
    assert frozen.conv2.fused_clamp == (-1.0, 1.0)
    assert frozen.conv3.fused_clamp == (0.0, float("inf"))
    assert not hasattr(frozen, "act2") and not hasattr(frozen, "act3")
    x = torch.randn(2, 4, 6, 6)
    before = x.clone()
    with torch.no_grad():
        out, expected = frozen(x), model(x)
        unfused = deploy.freeze(model, fuse=False)(x)
    assert torch.equal(x, before)  # the caller's input is never overwritten
    assert torch.equal(out, unfused)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("net", ["resnet20", "mlp"])
def test_sign_fusion_gives_identical_outputs(net):
    torch.manual_seed(6)
    shape = (3, 32, 32) if net == "resnet20" else (1, 28, 28)
    options = {"width": 0.5} if net == "resnet20" else {"hidden": (100, 70, 70)}
    model = ec.convert(ec.models.create(net, activation="hardtanh", **options), "bnn++",
                       mode="w1a1", scaling="channel")
    model = calibrated(model, shape)
    fused, plain = deploy.freeze(model), deploy.freeze(model, fuse=False)
    emitting = [n for n, m in fused.named_modules() if getattr(m, "emit_signs", False)]
    # resnet20: the first conv of each of the 9 blocks; mlp: the first of its two binary linears
    assert len(emitting) == (9 if net == "resnet20" else 1), emitting
    assert not any(getattr(m, "emit_signs", False) for m in plain.modules())
    if net == "resnet20":  # each block's end, act(conv2(.) + shortcut), runs in its GEMM
        assert sum(getattr(m, "fused_clamp", None) is not None for m in fused.modules()
                   if isinstance(m, deploy.PackedBinaryConv2d)) == 9
        # and the float stem's hardtanh in the direct float kernel's store
        assert isinstance(fused.stem[0], deploy.PackedFloatConv2d)
        assert fused.stem[0].fused_clamp == (-1.0, 1.0)
        assert isinstance(fused, torch.fx.GraphModule) and type(fused).__name__ == "ResNet"
    assert fused.edgecompress_spec == model.edgecompress_spec
    assert tuple(fused.input_shape) == tuple(model.input_shape)
    assert fused.state_dict().keys() == plain.state_dict().keys()
    x = torch.randn(5, *shape)
    with torch.no_grad():
        assert torch.equal(fused(x), plain(x))
        expected = harden(copy.deepcopy(model))(x)
        torch.testing.assert_close(fused(x), expected, atol=1e-3, rtol=1e-3)


def test_packed_linear_batch_one_and_token_inputs():
    torch.manual_seed(2)
    net = nn.Sequential(BinaryLinear(130, 17, weight_quantizer=method_pair("bc"),
                                     input_quantizer=method_pair("bnn")))
    frozen = deploy.freeze(net)
    assert isinstance(frozen[0], PackedBinaryLinear)
    for x in (torch.randn(1, 130), torch.randn(2, 5, 130)):
        with torch.no_grad():
            torch.testing.assert_close(frozen(x), net(x))


def test_packed_w1a32_linear_small_batches_use_the_sign_select_kernel():
    from edgecompress import kernels
    torch.manual_seed(7)
    net = nn.Sequential(BinaryLinear(200, 33, weight_quantizer=method_pair("bnn"),
                                     scaling="channel"))
    frozen = deploy.freeze(net)
    layer = frozen[0]
    assert layer.dense is None  # the float copy of the weights is only made for large batches
    small = torch.randn(PackedBinaryLinear.W1A32_KERNEL_MAX_ROWS, 200)
    with torch.no_grad():
        out = frozen(small)
        assert torch.equal(out, kernels.w1a32_gemm_reference(small, layer.bits, 200,
                                                             layer.scale, layer.bias))
        torch.testing.assert_close(out, net(small), atol=1e-4, rtol=1e-4)
        big = torch.randn(40, 200)
        torch.testing.assert_close(frozen(big), net(big), atol=1e-4, rtol=1e-4)
    assert layer.dense is not None


def test_frozen_model_predicts_like_the_trained_model_on_real_data():
    from edgecompress.train import TrainConfig, Trainer
    train = ec.data.load("mnist-bundled", split="train", limit=1000)
    test = ec.data.load("mnist-bundled", split="test")
    torch.manual_seed(0)
    model = ec.convert(ec.models.create("mlp", hidden=(256, 256), activation="hardtanh"), "bnn",
                       mode="w1a1")
    Trainer(model, train, None, TrainConfig(epochs=1, optimizer="adam", lr=1e-3,
                                            progress=False)).fit()
    model.eval()
    frozen = deploy.freeze(model)
    x = torch.stack([test[i][0] for i in range(len(test))])
    with torch.no_grad():
        assert torch.equal(frozen(x).argmax(1), model(x).argmax(1))


def _trained_on_mnist(name: str, mode: str, **options):
    """A model converted with BNN and trained for one short epoch on the bundled MNIST subset,
    in eval mode, with the 1,000 bundled test images and labels."""
    from edgecompress.train import TrainConfig, Trainer
    train = ec.data.load("mnist-bundled", split="train", limit=3000)
    test = ec.data.load("mnist-bundled", split="test")
    torch.manual_seed(0)
    model = ec.convert(ec.models.create(name, activation="hardtanh", **options), "bnn",
                       mode=mode)
    Trainer(model, train, None, TrainConfig(epochs=1, optimizer="adam", lr=5e-3, batch_size=50,
                                            progress=False)).fit()
    model.eval()
    x = torch.stack([test[i][0] for i in range(len(test))])
    y = torch.tensor([int(test[i][1]) for i in range(len(test))])
    return model, x, y


def test_frozen_w1a1_convnet_predicts_like_the_trained_model_on_real_data():
    model, x, y = _trained_on_mnist("convnet", "w1a1", width=0.5)
    frozen = deploy.freeze(model)
    assert sum(isinstance(m, PackedBinaryConv2d) for m in frozen.modules()) == 2
    with torch.no_grad():
        trained = model(x)
        out = frozen(x)
    assert (trained.argmax(1) == y).float().mean() > 0.3  # trained: 3x chance at least
    assert torch.equal(out.argmax(1), trained.argmax(1))
    torch.testing.assert_close(out, trained, atol=1e-3, rtol=1e-3)


def test_frozen_w1a32_mlp_predicts_like_the_trained_model_on_real_data():
    model, x, y = _trained_on_mnist("mlp", "w1a32", hidden=(256, 256))
    frozen = deploy.freeze(model)
    assert sum(isinstance(m, PackedBinaryLinear) for m in frozen.modules()) == 1
    with torch.no_grad():
        trained = model(x)
        whole = frozen(x)  # 1,000 rows: torch's float GEMM on the +-1 weights
        chunked = torch.cat([frozen(part) for part in x.split(PackedBinaryLinear
                                                               .W1A32_KERNEL_MAX_ROWS)])
    assert (trained.argmax(1) == y).float().mean() > 0.8
    for out in (whole, chunked):  # chunked: the sign-select kernel
        assert torch.equal(out.argmax(1), trained.argmax(1))
        torch.testing.assert_close(out, trained, atol=1e-3, rtol=1e-3)


def saved_mlp(tmp_path, width=64):
    torch.manual_seed(3)
    model = ec.convert(ec.models.create("mlp", hidden=(width, width), activation="hardtanh"),
                       "bnn", mode="w1a1", scaling="channel", keep_first_last=False)
    frozen = deploy.freeze(calibrated(model, (1, 28, 28)))
    path = tmp_path / "model.safetensors"
    deploy.save(frozen, path)
    return frozen, path


def test_save_load_round_trip_is_exact(tmp_path):
    frozen, path = saved_mlp(tmp_path)
    loaded = deploy.load(path)
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded(x), frozen(x))
    for key, value in frozen.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_file_size_matches_the_analytic_size(tmp_path):
    frozen, path = saved_mlp(tmp_path, width=1024)
    binary = sum(m.out_features * m.k for m in frozen.modules()
                 if isinstance(m, (PackedBinaryLinear, PackedBinaryConv2d)))
    floats = sum(t.numel() * t.element_size() for k, t in frozen.state_dict().items()
                 if not k.endswith(".bits"))
    analytic = binary / 8 + floats
    assert abs(os.path.getsize(path) - analytic) / analytic < 0.02


@pytest.mark.slow
def test_frozen_model_under_torch_compile(tmp_path):
    frozen, _ = saved_mlp(tmp_path)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(frozen)(x), frozen(x))


def _w1a32(name: str, **options) -> nn.Module:
    torch.manual_seed(8)
    model = ec.convert(ec.models.create(name, activation="hardtanh", **options), "bnn",
                       mode="w1a32", scaling="channel")
    return deploy.freeze(calibrated(model, (1, 28, 28)))


@pytest.mark.slow
def test_frozen_w1a32_mlp_under_torch_compile_uses_the_custom_op():
    """Small batches run the sign-select kernel as the opaque custom op, large ones torch's
    float GEMM on the +-1 weights; both compile without a graph break and match eager."""
    frozen = _w1a32("mlp", hidden=(70, 33))
    graphs = []

    def recording(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    small = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(frozen, backend=recording, fullgraph=True)(small),
                                   frozen(small))
    calls = [str(n.target) for gm in graphs for n in gm.graph.nodes if n.op == "call_function"]
    # first and last linear stay float: the 70 -> 33 layer is the binary one
    assert sum("w1a32_gemm" in c for c in calls) == 1, calls
    torch._dynamo.reset()
    compiled = torch.compile(frozen, fullgraph=True)
    for batch in (2, PackedBinaryLinear.W1A32_KERNEL_MAX_ROWS + 4):
        x = torch.randn(batch, 1, 28, 28)
        with torch.no_grad():
            torch.testing.assert_close(compiled(x), frozen(x))


@pytest.mark.slow
def test_frozen_w1a32_convnet_under_torch_compile():
    frozen = _w1a32("convnet", width=0.25)
    assert sum(isinstance(m, PackedBinaryConv2d) for m in frozen.modules()) == 2
    torch._dynamo.reset()
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(frozen, fullgraph=True)(x), frozen(x))


@pytest.mark.parametrize("name, options, shape", [
    ("mlp", {"hidden": (70, 33, 20)}, (1, 28, 28)),
    ("resnet20", {"width": 0.25}, (3, 16, 16)),  # packed signs between layers, fused residuals
])
@pytest.mark.slow
def test_frozen_w1a1_model_compiles_as_one_graph_and_exports(name, options, shape):
    """Packing and the GEMM (a convolution's: the implicit-GEMM binary_conv, or the GEMM on
    im2col rows, whichever the layers run; the default depends on the CPU) are custom ops under
    torch.compile and torch.export: no graph break (fullgraph), the same predictions as eager;
    the exported program equals eager."""
    torch.manual_seed(0)
    model = ec.models.create(name, activation="hardtanh", **options).eval()
    frozen = deploy.freeze(ec.convert(model, "bnn", mode="w1a1"))
    convs = [m for m in frozen.modules() if isinstance(m, PackedBinaryConv2d)]
    assert bool(convs) == (name == "resnet20")
    x = torch.randn(3, *shape)
    for implicit in ((True, False) if convs else (None,)):
        for conv in convs:
            conv.implicit_gemm = implicit
        graphs = []

        def recording(gm, example_inputs):
            graphs.append(gm)
            return gm.forward

        torch._dynamo.reset()
        with torch.no_grad():
            torch.testing.assert_close(
                torch.compile(frozen, backend=recording, fullgraph=True)(x), frozen(x))
            calls = {str(n.target) for gm in graphs for n in gm.graph.nodes
                     if n.op == "call_function"}
            gemm = "binary_conv" if implicit else "binary_gemm_affine"
            assert any(gemm in c for c in calls), calls
            assert any(("pack_signs" in c or "pack_pixels" in c) for c in calls), calls
            exported = torch.export.export(frozen, (x,))
            assert torch.equal(exported.module()(x), frozen(x))


@pytest.mark.slow
def test_grouped_packed_conv_compiles_as_one_graph():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Hardtanh(),
                        nn.Conv2d(8, 8, 3, padding=1, groups=4), nn.BatchNorm2d(8), nn.Hardtanh(),
                        nn.Flatten(), nn.Linear(8 * 36, 2)).eval()
    frozen = deploy.freeze(ec.convert(net, "bnn", mode="w1a1"))
    torch._dynamo.reset()
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(frozen, fullgraph=True)(x), frozen(x))


def test_im2col_custom_op_never_aliases_its_input():
    from edgecompress.kernels.ops import im2col_words_op

    pixels = ec.kernels.pack_pixels(torch.randn(1, 70, 4, 4))
    rows, mask = im2col_words_op(pixels, 70, [1, 1], [1, 1], [0, 0], [1, 1], False)
    assert rows.untyped_storage().data_ptr() != pixels.untyped_storage().data_ptr()
    assert torch.equal(rows, pixels.view(16, -1)) and mask.numel() == 0
    torch.library.opcheck(im2col_words_op, (pixels, 70, [3, 3], [1, 1], [1, 1], [1, 1], True))
    torch.library.opcheck(im2col_words_op, (pixels, 70, [1, 1], [1, 1], [0, 0], [1, 1], False))


def test_summary_of_a_frozen_model_counts_one_bit_weights(tmp_path):
    frozen, _ = saved_mlp(tmp_path)
    s = ec.summary(frozen, (1, 28, 28))
    assert s.params_by_bits[1] == 784 * 64 + 64 * 64 + 64 * 10
    assert set(s.macs_by_precision) == {"w1a1"}


def _rewrite_metadata(path, change):
    raw = path.read_bytes()
    size = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + size])
    meta = json.loads(header["__metadata__"]["edgecompress"])
    change(meta)
    header["__metadata__"]["edgecompress"] = json.dumps(meta)
    body = json.dumps(header).encode()
    body += b" " * (-len(body) % 8)
    path.write_bytes(struct.pack("<Q", len(body)) + body + raw[8 + size:])


@pytest.mark.parametrize("damage, message", [
    ("truncate", "not a readable safetensors file"),
    ("random", "not a readable safetensors file"),
    ("newer", "format version 99 is newer"),
    ("foreign", "format 'other'"),
    ("older", "format version 1 is older"),
])
def test_bad_files_are_rejected_naming_the_file(tmp_path, damage, message):
    _, path = saved_mlp(tmp_path)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:-100])
    elif damage == "random":
        path.write_bytes(os.urandom(500))
    elif damage == "newer":
        _rewrite_metadata(path, lambda m: m.update(version=99))
    elif damage == "foreign":
        _rewrite_metadata(path, lambda m: m.update(format="other"))
    elif damage == "older":
        _rewrite_metadata(path, lambda m: m.update(version=1))
    with pytest.raises(ModelFileError, match=message) as info:
        deploy.load(path)
    assert "model.safetensors" in str(info.value)


def test_wrong_tensor_shape_is_rejected(tmp_path):
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open
    _, path = saved_mlp(tmp_path)
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    key = next(k for k in tensors if k.endswith(".bits"))
    tensors[key] = tensors[key][:-1].clone()
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(ModelFileError, match=f"tensor '{key}' has .* expected"):
        deploy.load(path)


def test_save_needs_a_frozen_model(tmp_path):
    model = ec.models.create("mlp")
    with pytest.raises(ModelFileError, match="in training mode; call .*freeze"):
        deploy.save(model, tmp_path / "m.safetensors")
    converted = ec.convert(model, "bnn")
    with pytest.raises(ModelFileError, match=r"training-form layers .*BinaryLinear.*freeze"):
        deploy.save(converted, tmp_path / "m.safetensors")


def _rewrite_tensors(path, change):
    """Rewrite a saved model's tensors with safetensors, keeping its metadata."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    change(tensors)
    save_file(tensors, str(path), metadata=meta)


@pytest.mark.parametrize("damage", ["shorter", "transposed", "float64"])
def test_float_tensor_of_the_wrong_shape_or_dtype_is_rejected_naming_file_and_tensor(tmp_path,
                                                                                       damage):
    _, path = saved_mlp(tmp_path)
    keys = load_keys(path)
    key = next(k for k in keys if k.endswith(".scale"))

    def change(tensors):
        if damage == "shorter":
            tensors[key] = tensors[key][:-1].clone()
        elif damage == "transposed":  # same number of values, wrong shape
            tensors[key] = tensors[key].reshape(-1, 1).clone()
        else:
            tensors[key] = tensors[key].double()

    _rewrite_tensors(path, change)
    with pytest.raises(ModelFileError) as info:
        deploy.load(path)
    message = str(info.value)
    assert "model.safetensors" in message and repr(key) in message and "expected" in message


@pytest.mark.parametrize("kind", [".bias", ".bits"])
def test_file_with_a_tensor_missing_is_rejected_naming_file_and_tensor(tmp_path, kind):
    _, path = saved_mlp(tmp_path)
    key = next(k for k in load_keys(path) if k.endswith(kind))
    _rewrite_tensors(path, lambda tensors: tensors.pop(key))
    with pytest.raises(ModelFileError, match="missing") as info:
        deploy.load(path)
    message = str(info.value)
    assert "model.safetensors" in message and key in message


def test_file_with_an_extra_tensor_is_rejected_naming_it(tmp_path):
    _, path = saved_mlp(tmp_path)
    _rewrite_tensors(path, lambda tensors: tensors.update(stowaway=torch.zeros(3)))
    with pytest.raises(ModelFileError, match="unexpected") as info:
        deploy.load(path)
    assert "model.safetensors" in str(info.value) and "stowaway" in str(info.value)


def load_keys(path):
    from safetensors import safe_open
    with safe_open(str(path), "pt") as f:
        return list(f.keys())


@pytest.mark.parametrize("method, options", [("s3", {"bits": 3}), ("bnn", {"mode": "w1a1"})])
def test_fastest_layout_returns_either_layout_with_the_same_outputs(method, options):
    torch.manual_seed(5)
    model = ec.convert(ec.models.create("resnet20", width=0.25, activation="hardtanh"), method,
                       **options).eval()
    frozen = deploy.freeze(model)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = frozen(x)
    chosen, timing = deploy.fastest_layout(frozen, x, threads=1, rounds=1)
    assert timing.name == "contiguous vs channels-last" and timing.threads == 1
    assert (chosen is not frozen) == (timing.speedup > 1)
    stem = chosen.get_submodule("stem.0").weight
    assert stem.is_contiguous() == (chosen is not frozen)
    assert not frozen.get_submodule("stem.0").weight.is_contiguous()  # left as it was
    with torch.no_grad():
        torch.testing.assert_close(chosen(x), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"example batch \(N, C, H, W\), got \(3, 32, 32\)"):
        deploy.fastest_layout(frozen, x[0])
    with pytest.raises(ValueError, match="holds no 4-D tensor"):
        deploy.fastest_layout(deploy.freeze(nn.Sequential(nn.Linear(4, 2))), torch.randn(1, 1, 2, 2))
