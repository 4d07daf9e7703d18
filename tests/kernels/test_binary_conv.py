"""The implicit-GEMM binary convolution (``binary_conv``) equals the W1A1 GEMM on im2col rows bit
for bit: random shapes, strides 1 and 2, padding 0 and 1, channel counts off multiples of 64,
batch 1-3, every dispatch path, every epilogue the frozen layers use; and a frozen W1A1 ResNet
gives the same outputs through either path."""

from __future__ import annotations

import copy

import pytest
import torch

import edgecompress as ec
from edgecompress import deploy
from edgecompress import kernels as K
from edgecompress.kernels import _loader

PATHS = K.supported_paths()
needs_library = pytest.mark.skipif(not K.available(), reason="the C kernels are not built")


# ResNet's own: 3x3 with padding 1 at stride 1 and 2, batch 1-3, (batch, channels, size, stride)
RESNET_LIKE = [(2, 130, 9, 1), (3, 70, 8, 2), (1, 64, 7, 1), (3, 100, 6, 1), (1, 200, 7, 2)]


@pytest.fixture(params=["always", "never"])
def pad_correction(request):
    """Zero padding corrected for (on every path) or gathered with masks: the same bits."""
    K._set_pad_correction(request.param)
    yield request.param
    K._set_pad_correction("avx512")


def _case(seed: int) -> dict:
    """A random convolution: batch 1-3, channels mostly not a multiple of 64, 1x1 / 3x3 (and
    one 5x3 dilated) kernels, stride 1 or 2, padding 0 or 1; seeds 100 + i: RESNET_LIKE[i]."""
    g = torch.Generator().manual_seed(seed)
    pick = lambda options: options[int(torch.randint(len(options), (), generator=g))]  # noqa: E731
    kernel = pick([(3, 3), (3, 3), (1, 1), (5, 3)])
    dilation = (2, 1) if kernel == (5, 3) else (1, 1)
    stride, padding = pick([(1, 1), (2, 2), (2, 1)]), pick([(0, 0), (1, 1), (1, 0)])
    batch, c = pick([1, 2, 3]), pick([1, 3, 17, 63, 64, 65, 100, 130, 200])
    n_out = pick([1, 5, 16, 21, 70])
    low = max(kernel[0] * dilation[0], kernel[1] * dilation[1])
    h, w = (int(v) for v in torch.randint(low, low + 9, (2,), generator=g))
    if seed >= 100:
        batch, c, h, s = RESNET_LIKE[seed - 100]
        w, kernel, stride, padding, dilation = h, (3, 3), (s, s), (1, 1), (1, 1)
    x = torch.randn(batch, c, h, w, generator=g)
    weight = torch.randn(n_out, c, *kernel, generator=g)
    return dict(x=x, weight=weight, geometry=(kernel, stride, padding, dilation),
                scale=torch.rand(n_out, generator=g) + 0.1, bias=torch.randn(n_out, generator=g),
                generator=g)


def _operands(case: dict):
    x, weight, geometry = case["x"], case["weight"], case["geometry"]
    pixels, b = K.pack_pixels(x), K.pack_conv_weights(weight)
    rows, mask = K.im2col_words(pixels, x.shape[1], *geometry,
                                masked=geometry[2] != (0, 0))
    k = x.shape[1] * geometry[0][0] * geometry[0][1]
    return pixels, b, rows, mask, k


@needs_library
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("seed", [*range(24), *range(100, 100 + len(RESNET_LIKE))])
def test_implicit_conv_equals_the_gemm_on_im2col_rows(path, seed, pad_correction):
    case = _case(seed)
    pixels, b, rows, mask, k = _operands(case)
    c, geometry = case["x"].shape[1], case["geometry"]
    scale, bias = case["scale"], case["bias"]
    residual = torch.randn(rows.shape[0], b.shape[0], generator=case["generator"])
    panels = K.pack_panels(b)
    for threads in (1, 2):
        run = lambda output, **epilogue: K.binary_conv(  # noqa: E731
            pixels, c, b, *geometry, output=output, panels=panels, path=path, threads=threads,
            **epilogue)
        assert torch.equal(run("int32"), K.binary_gemm(rows, b, k, mask, path=path))
        assert torch.equal(run("float32", scale=scale, bias=bias),
                           K.binary_gemm_affine(rows, b, k, mask, scale, bias, path=path))
        assert torch.equal(run("signs", scale=scale, bias=bias),
                           K.binary_gemm_signs(rows, b, k, mask, scale, bias, path=path))
        for clamp in (None, (-1.0, 1.0), (0.0, float("inf"))):
            got = run("float32", scale=scale, bias=bias, residual=residual, clamp=clamp)
            expected = K.binary_gemm_affine(rows, b, k, mask, scale, bias, residual=residual,
                                            clamp=clamp, path=path)
            assert torch.equal(got, expected)
    # and both equal the reference: the float convolution of the signs
    signs = lambda t: torch.where(t >= 0, 1.0, -1.0).double()  # noqa: E731
    kernel, stride, padding, dilation = geometry
    expected = torch.nn.functional.conv2d(signs(case["x"]), signs(case["weight"]), None, stride,
                                          padding, dilation)
    expected = expected.permute(0, 2, 3, 1).reshape(rows.shape[0], -1).round().to(torch.int32)
    assert torch.equal(K.binary_conv(pixels, c, b, *geometry, output="int32", path=path),
                       expected)


# padding wider than 1, and a kernel of more than 64 rows (its padding is gathered with masks,
# not corrected), (kernel, stride, padding, dilation, batch, channels, h, w)
WIDE_PADDING = [((3, 3), (2, 2), (2, 2), (1, 1), 2, 70, 9, 7),
                ((5, 3), (1, 1), (4, 1), (2, 1), 1, 65, 10, 6),
                ((3, 3), (1, 2), (3, 0), (1, 1), 3, 17, 4, 8),
                ((65, 1), (1, 1), (2, 0), (1, 1), 2, 3, 66, 3),
                ((65, 2), (2, 1), (1, 1), (1, 1), 1, 130, 70, 2)]


@needs_library
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("geometry", WIDE_PADDING, ids=str)
def test_implicit_conv_with_wide_padding_and_tall_kernels(path, geometry, pad_correction):
    kernel, stride, padding, dilation, batch, c, h, w = geometry
    g = torch.Generator().manual_seed(sum(kernel) + c)
    x, weight = torch.randn(batch, c, h, w, generator=g), torch.randn(5, c, *kernel, generator=g)
    pixels, b = K.pack_pixels(x), K.pack_conv_weights(weight)
    rows, mask = K.im2col_words(pixels, c, kernel, stride, padding, dilation, masked=True)
    k, scale, bias = c * kernel[0] * kernel[1], torch.rand(5, generator=g), torch.randn(5, generator=g)
    for threads in (1, 2):
        run = lambda output, **epilogue: K.binary_conv(  # noqa: E731
            pixels, c, b, kernel, stride, padding, dilation, output=output, path=path,
            threads=threads, **epilogue)
        assert torch.equal(run("int32"), K.binary_gemm(rows, b, k, mask, path=path))
        assert torch.equal(run("signs", scale=scale, bias=bias),
                           K.binary_gemm_signs(rows, b, k, mask, scale, bias, path=path))
    signs = lambda t: torch.where(t >= 0, 1.0, -1.0).double()  # noqa: E731
    expected = torch.nn.functional.conv2d(signs(x), signs(weight), None, stride, padding,
                                          dilation)
    expected = expected.permute(0, 2, 3, 1).reshape(rows.shape[0], -1).round().to(torch.int32)
    assert torch.equal(run("int32"), expected)
    plan = K.BinaryConvPlan(pixels, c, b, K.pack_panels(b), kernel, stride, padding, dilation,
                            implicit=True, path=path)
    assert torch.equal(plan(pixels), K.binary_gemm_affine(rows, b, k, mask, path=path))


@needs_library
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("seed", [*range(12), *range(100, 100 + len(RESNET_LIKE))])
def test_planned_conv_equals_the_calls_one_by_one(path, seed, pad_correction):
    """BinaryConvPlan (packing, gathering and GEMM in one C call) equals pack_pixels,
    im2col_words and the GEMM bit for bit: float inputs held contiguous or channels-last and
    packed pixels, the implicit GEMM or im2col rows, float32 (residual, clamp) and signs
    outputs, 1 and 2 threads; a plan refuses an input of another shape, dtype or layout."""
    case = _case(seed)
    pixels, b, rows, mask, k = _operands(case)
    x, geometry = case["x"], case["geometry"]
    scale, bias = case["scale"], case["bias"]
    residual = torch.randn(rows.shape[0], b.shape[0], generator=case["generator"])
    panels = K.pack_panels(b)
    inputs = [x, x.contiguous(memory_format=torch.channels_last), pixels]
    for threads in (1, 2):
        for implicit in (False, True):
            for i, given in enumerate(inputs):
                plan = lambda **kw: K.BinaryConvPlan(  # noqa: E731
                    given, x.shape[1], b, panels, *geometry, implicit=implicit, scale=scale,
                    bias=bias, path=path, threads=threads, **kw)
                signs = plan(output="signs")
                assert signs.takes(given) and not signs.takes(inputs[(i + 1) % 3])
                assert torch.equal(signs(given),
                                   K.binary_gemm_signs(rows, b, k, mask, scale, bias, path=path))
                for clamp in (None, (-1.0, 1.0)):
                    for res in (None, residual):
                        got = plan(clamp=clamp)(given, res)
                        expected = K.binary_gemm_affine(rows, b, k, mask, scale, bias,
                                                        residual=res, clamp=clamp, path=path)
                        assert torch.equal(got, expected), (threads, implicit, i, clamp)
    with pytest.raises(ValueError, match="residual must have shape"):
        K.BinaryConvPlan(x, x.shape[1], b, panels, *geometry, implicit=False)(x, residual[1:])
    # the image form: the same values, as (n, N, oh, ow) channels-last / (n, oh, ow, words)
    plan = K.BinaryConvPlan(x, x.shape[1], b, panels, *geometry, implicit=True, scale=scale,
                            bias=bias, path=path)
    n, n_out, (oh, ow) = x.shape[0], b.shape[0], plan.image_shape[2:]
    as_image = residual.view(n, oh, ow, n_out).permute(0, 3, 1, 2)  # channels-last
    for res_image in (as_image, as_image.contiguous(), as_image.double()):
        got = plan.image(x, res_image)
        assert got.shape == (n, n_out, oh, ow) and got.dtype == torch.float32
        assert got.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(got.permute(0, 2, 3, 1).reshape(-1, n_out), plan(x, residual))
    signs = K.BinaryConvPlan(x, x.shape[1], b, panels, *geometry, implicit=True, path=path,
                             output="signs")
    assert torch.equal(signs.image(x), signs(x).view(n, oh, ow, -1))
    with pytest.raises(ValueError, match="residual must have shape"):
        plan.image(x, as_image[:, 1:])
    with pytest.raises(ValueError, match="residual must have shape"):
        signs.image(x, as_image)
    with pytest.raises(ValueError, match="held contiguous or channels-last"):
        K.BinaryConvPlan(x.transpose(2, 3), x.shape[1], b, panels, *geometry, implicit=False)


@needs_library
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("channels, size, stride", [(1, (7, 5), (2, 2)), (64, (9, 9), (2, 1)),
                                                     (130, (6, 11), (1, 3)), (65, (5, 4), (3, 3))])
def test_planned_pointwise_conv_packs_only_the_pixels_it_reads(path, channels, size, stride):
    """A 1x1 convolution without padding on a float input (a ResNet shortcut): the plan packs
    only the strided pixels, straight into the GEMM's rows; the same bits as packing every
    pixel and gathering them, for both layouts, ragged sizes and 1 and 2 threads."""
    g = torch.Generator().manual_seed(channels)
    x = torch.randn(2, channels, *size, generator=g)
    b = K.pack_conv_weights(torch.randn(21, channels, 1, 1, generator=g))
    geometry = ((1, 1), stride, (0, 0), (1, 1))
    rows, _ = K.im2col_words(K.pack_pixels(x), channels, *geometry)
    scale, bias = torch.rand(21, generator=g) + 0.1, torch.randn(21, generator=g)
    expected = K.binary_gemm_affine(rows, b, channels, None, scale, bias, path=path)
    for given in (x, x.contiguous(memory_format=torch.channels_last)):
        for threads in (1, 2):
            for implicit in (False, True):
                plan = K.BinaryConvPlan(given, channels, b, K.pack_panels(b), *geometry,
                                        implicit=implicit, scale=scale, bias=bias, path=path,
                                        threads=threads)
                assert torch.equal(plan(given), expected)


@needs_library
@pytest.mark.parametrize("path", PATHS)
def test_cache_blocks_of_panels_re_read_the_windows_exactly(path):
    """Tiny cache blocks: every panel block reads (and gathers at the border) the windows
    again."""
    case = _case(5)
    case["weight"] = torch.randn(70, *case["weight"].shape[1:], generator=case["generator"])
    pixels, b, rows, mask, k = _operands(case)
    geometry = case["geometry"]
    expected = K.binary_gemm(rows, b, k, mask, path=path)
    try:
        for block in (1, 3000):
            K._set_gemm_block_bytes(block)
            assert torch.equal(K.binary_conv(pixels, case["x"].shape[1], b, *geometry,
                                             output="int32", path=path), expected)
    finally:
        K._set_gemm_block_bytes(256 * 1024)


def test_without_the_library_the_reference_gives_the_same_result(monkeypatch):
    case = _case(7)
    pixels, b, _, _, _ = _operands(case)
    args = (pixels, case["x"].shape[1], b, *case["geometry"])
    epilogue = dict(scale=case["scale"], bias=case["bias"], clamp=(-1.0, 1.0))
    fast = [K.binary_conv(*args, output=output, **epilogue) for output in ("int32", "float32")]
    fast.append(K.binary_conv(*args, output="signs", scale=case["scale"], bias=case["bias"]))
    monkeypatch.setattr(_loader, "load", lambda: None)
    monkeypatch.setattr(_loader, "_warned", True)
    slow = [K.binary_conv(*args, output=output, **epilogue) for output in ("int32", "float32")]
    slow.append(K.binary_conv(*args, output="signs", scale=case["scale"], bias=case["bias"]))
    for got, expected in zip(slow, fast):
        assert got.dtype == expected.dtype and torch.equal(got, expected)


def test_bad_arguments_are_rejected_clearly():
    pixels = K.pack_pixels(torch.randn(1, 70, 5, 5))
    b = K.pack_conv_weights(torch.randn(4, 70, 3, 3))
    geometry = ((3, 3), (1, 1), (1, 1), (1, 1))
    with pytest.raises(ValueError, match=r"packed pixels must be int64 \(n, h, w, 2\)"):
        K.binary_conv(pixels[..., :1], 70, b, *geometry)
    with pytest.raises(ValueError, match=r"b must be an int64 tensor of packed rows \(R, 18\)"):
        K.binary_conv(pixels, 70, b[:, :9], *geometry)
    with pytest.raises(ValueError, match="output must be one of"):
        K.binary_conv(pixels, 70, b, *geometry, output="int8")
    with pytest.raises(ValueError, match="does not fit"):
        K.binary_conv(pixels, 70, b, (3, 3), (1, 1), (0, 0), (3, 3))
    with pytest.raises(ValueError, match="residual must have shape"):
        K.binary_conv(pixels, 70, b, *geometry, residual=torch.zeros(24, 4))


@needs_library
def test_a_path_the_cpu_cannot_run_is_refused(monkeypatch):
    from edgecompress.kernels import dispatch

    pixels = K.pack_pixels(torch.randn(1, 70, 5, 5))
    b = K.pack_conv_weights(torch.randn(4, 70, 3, 3))
    monkeypatch.setattr(dispatch, "path_code", lambda path: 3)
    with pytest.raises(RuntimeError, match=r"^binary_conv.*not supported on this CPU"):
        K.binary_conv(pixels, 70, b, (3, 3), (1, 1), (1, 1))


def test_binary_conv_custom_op_passes_opcheck():
    from edgecompress.kernels.ops import binary_conv_op

    case = _case(3)
    pixels, b, rows, mask, k = _operands(case)
    geometry = [list(g) for g in case["geometry"]]
    residual = torch.randn(rows.shape[0], b.shape[0], generator=case["generator"])
    for signs, tail in ((False, (residual, -1.0, 1.0)), (True, ())):
        args = (pixels, case["x"].shape[1], b, K.pack_panels(b), *geometry, case["scale"],
                case["bias"], signs, *tail)
        torch.library.opcheck(binary_conv_op, args)
        expected = K.binary_gemm_signs(rows, b, k, mask, case["scale"], case["bias"]) if signs \
            else K.binary_gemm_affine(rows, b, k, mask, case["scale"], case["bias"],
                                      residual=residual, clamp=(-1.0, 1.0))
        assert torch.equal(torch.ops.edgecompress.binary_conv(*args), expected)


def _calibrated_w1a1_resnet() -> torch.nn.Module:
    torch.manual_seed(4)
    model = ec.convert(ec.models.create("resnet20", width=0.5, activation="hardtanh"), "bnn++",
                       mode="w1a1", scaling="channel")
    model.train()
    with torch.no_grad():  # BatchNorm statistics of random data, so the outputs are not trivial
        for _ in range(2):
            model(torch.randn(8, 3, 32, 32))
    return model.eval()


@pytest.mark.parametrize("batch", [1, 3])
def test_frozen_w1a1_resnet_gives_the_same_outputs_through_both_paths(monkeypatch, batch):
    model = _calibrated_w1a1_resnet()
    frozen, plain = deploy.freeze(model), deploy.freeze(copy.deepcopy(model), fuse=False)
    frozen.batch_chunk = None  # no batch-1 measuring pass: only this batch's plans below
    convs = [m for m in frozen.modules() if isinstance(m, deploy.PackedBinaryConv2d)
             and m.binary_inputs]
    # stride-2 and padded 3x3 convolutions, sign-emitting and residual-clamp epilogues among them
    assert any(m.stride == (2, 2) for m in convs) and all(m.padding == (1, 1) for m in convs
                                                          if m.kernel_size == (3, 3))
    assert any(m.emit_signs for m in convs) and any(m.fused_clamp for m in convs)
    x = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(batch))

    def implicit_ran() -> set[bool]:  # how the 3x3 convolutions' plans ran their GEMMs
        return {p.implicit for m in convs if m.kernel_size == (3, 3) for p in m._plans.values()}

    monkeypatch.setattr(deploy.PackedBinaryConv2d, "implicit_gemm", True)
    with torch.no_grad():
        implicit, implicit_plain = frozen(x), plain(x)
        if K.available():
            assert implicit_ran() == {True}  # the frozen convolutions ran the implicit GEMM
        monkeypatch.setattr(deploy.PackedBinaryConv2d, "implicit_gemm", False)
        im2col, im2col_plain = frozen(x), plain(x)
        if K.available():
            assert implicit_ran() == {False}
        monkeypatch.undo()  # the class's default again
        assert torch.equal(frozen(x), implicit)  # the default: the implicit GEMM
        if K.available():
            assert implicit_ran() == {True}
        # and the calls one by one (no plans: as under a profile) give the same bits
        monkeypatch.setattr(deploy.PackedBinaryConv2d, "_plan", lambda self, x: None)
        stepwise = frozen(x)
    assert torch.equal(implicit, im2col) and torch.equal(implicit_plain, im2col_plain)
    assert torch.equal(implicit, implicit_plain) and torch.equal(implicit, stepwise)


@needs_library
def test_frozen_convolution_plans_follow_shape_layout_threads_and_copies():
    """A frozen W1A1 convolution makes a plan per input shape and dtype at its first call and
    remakes it when the layout or torch's thread count changes; a deepcopy starts without
    plans; an input no plan takes (a float input neither contiguous nor channels-last) runs the
    calls one by one; every output equals the calls one by one."""
    model = _calibrated_w1a1_resnet()
    frozen = deploy.freeze(model)
    conv = next(m for m in frozen.modules() if isinstance(m, deploy.PackedBinaryConv2d)
                and m.binary_inputs and m.kernel_size == (3, 3) and not m.emit_signs)
    x = torch.randn(2, conv.in_channels, 8, 8)
    residual = torch.randn(2, conv.out_features, *conv(x).shape[2:])
    stepwise = copy.deepcopy(conv)
    stepwise._plan = lambda x: None  # the calls one by one
    threads = torch.get_num_threads()
    try:
        with torch.no_grad():
            for given in (x, x.contiguous(memory_format=torch.channels_last), x[:1],
                          x.transpose(2, 3)):
                for t in (1, 2):
                    torch.set_num_threads(t)
                    for res in (None, residual[:given.shape[0]]):
                        assert torch.equal(conv(given, res), stepwise(given, res))
                        plan = conv._plans.get((given.shape, given.dtype))
                        planned = given.is_contiguous() or given.is_contiguous(
                            memory_format=torch.channels_last)
                        assert (plan is not None and plan.takes(given)) == planned
    finally:
        torch.set_num_threads(threads)
    assert len(conv._plans) == 2 and copy.deepcopy(conv)._plans == {}


@needs_library
def test_conv_tap_popcounts_count_the_minus_one_weights_per_tap_and_column():
    g = torch.Generator().manual_seed(5)
    for n_out, c, kernel in ((5, 3, (3, 3)), (21, 130, (3, 1)), (70, 64, (1, 2))):
        weight = torch.randn(n_out, c, *kernel, generator=g)
        panels = K.pack_panels(K.pack_conv_weights(weight))
        got = K.conv_tap_popcounts(panels, n_out, kernel, c)
        expected = (weight < 0).sum(dim=1).reshape(n_out, -1).t()  # (taps, n_out), taps row-major
        assert torch.equal(got, expected)
    with pytest.raises(ValueError, match="do not hold 5 columns"):
        K.conv_tap_popcounts(panels, 5, kernel, c)
    assert K.conv_tap_popcounts(panels, n_out, (65, 1), c) is None  # no correction: gathered
    pixels = K.pack_pixels(torch.randn(1, c, 4, 4, generator=g))
    b = K.pack_conv_weights(weight)
    with pytest.raises(ValueError, match="tap_pop must be contiguous int64"):
        K.binary_conv(pixels, c, b, kernel, (1, 1), (1, 1), tap_pop=got[:1])
    assert torch.equal(K.binary_conv(pixels, c, b, kernel, (1, 1), (1, 1), tap_pop=got),
                       K.binary_conv(pixels, c, b, kernel, (1, 1), (1, 1)))
