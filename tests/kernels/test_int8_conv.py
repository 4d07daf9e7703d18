"""kernels.int8_conv (int8_conv.c): the integer convolution of <= 8-bit codes, bit for bit
against its PyTorch reference on every path (random geometries, both input layouts, signed and
unsigned codes of 2-8 bits, NaN / infinite / tied inputs, the largest sums), the weight panels'
layout, and the errors for bad arguments."""

from __future__ import annotations

import pytest
import torch

from edgecompress import kernels as K

PATHS = K.supported_paths()
needs_library = pytest.mark.skipif(not K.available(), reason="the C kernels are not built")


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int32)


def _case(seed: int):
    g = torch.Generator().manual_seed(seed)

    def pick(lo: int, hi: int) -> int:
        return int(torch.randint(lo, hi + 1, (), generator=g))

    n, c, out = pick(1, 3), pick(1, 19), pick(1, 70)
    kh, kw = pick(1, 7), pick(1, 7)
    stride, dilation = (pick(1, 2), pick(1, 2)), (pick(1, 2), pick(1, 2))
    padding = (pick(0, 3), pick(0, 3))
    h = dilation[0] * (kh - 1) + 1 + pick(0, 8)
    w = dilation[1] * (kw - 1) + 1 + pick(0, 8)
    bits, signed, weight_bits = pick(2, 8), bool(pick(0, 1)), pick(2, 8)
    q = (-2 ** (bits - 1), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)
    codes = torch.randint(-2 ** (weight_bits - 1), 2 ** (weight_bits - 1), (out, c, kh, kw),
                          dtype=torch.int8, generator=g)
    step = torch.tensor(0.03 + float(torch.rand((), generator=g)))
    x = torch.randn(n, c, h, w, generator=g) * (q[1] - q[0]) * step / 3
    flat = x.view(-1)
    # ties (exactly half a step: round half to even), values far outside the range, a NaN
    idx = torch.randperm(flat.numel(), generator=g)[: max(1, flat.numel() // 8)]
    flat[idx] = (torch.randint(q[0] - 3, q[1] + 3, (len(idx),), generator=g) + 0.5) * step
    flat[idx[: len(idx) // 4]] = float("inf")
    flat[idx[len(idx) // 4: len(idx) // 3]] = -1e30
    flat[idx[0]] = float("nan")
    if pick(0, 1):
        x = x.contiguous(memory_format=torch.channels_last)
    scale = torch.rand(out, generator=g) * 1e-2
    bias = torch.randn(out, generator=g) if pick(0, 1) else None
    return x, codes, (kh, kw), stride, padding, dilation, step, q, scale, bias


@needs_library
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("seed", range(14))
def test_equals_the_reference_bit_for_bit_on_random_geometries(path, seed):
    x, codes, kernel, stride, padding, dilation, step, q, scale, bias = _case(seed)
    expected = K.int8_conv_reference(x, codes, stride, padding, dilation, step, q, scale, bias)
    panels, wsum = K.int8_conv_panels(codes, dilation)
    for threads in (1, 2):
        got = K.int8_conv(x, panels, wsum, codes.shape[0], kernel, stride, padding, dilation,
                          step=step, q_range=q, scale=scale, bias=bias, path=path,
                          threads=threads)
        assert got.shape == expected.shape
        assert got.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(_bits(got), _bits(expected.contiguous(
            memory_format=torch.channels_last)))


@needs_library
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("signed", [True, False])
def test_the_largest_sums_stay_exact(path, signed):
    """Every product at its extreme, the largest input code times -128, over a 3x3 window of
    512 channels: |acc| = 4608 x 255 x 128 (unsigned codes; the kernel's offset codes reach
    that sum for signed ones too) is exact in int32."""
    q = (-128, 127) if signed else (0, 255)
    codes = torch.full((20, 512, 3, 3), -128, dtype=torch.int8)
    codes[1::2] = 127
    x = torch.full((1, 512, 5, 5), 1e9)
    scale, step = torch.ones(20), torch.tensor(0.5)
    expected = K.int8_conv_reference(x, codes, (1, 1), (1, 1), (1, 1), step, q, scale)
    panels, wsum = K.int8_conv_panels(codes)
    got = K.int8_conv(x, panels, wsum, 20, (3, 3), (1, 1), (1, 1), (1, 1), step=step,
                      q_range=q, scale=scale, path=path)
    assert torch.equal(got, expected)
    assert float(expected[0, 0, 2, 2]) == float(q[1] * -128 * 4608)
    assert float(expected[0, 1, 2, 2]) == float(q[1] * 127 * 4608)


@pytest.mark.parametrize("dilation", [(1, 1), (2, 2)])
def test_panel_layout(dilation):
    """Panel p, group g, bytes 4 j .. 4 j + 3: output 16 p + j's codes at the group's four
    positions of its run (a kernel row of kw c bytes, or one tap of c bytes when dilated along
    the width), zero past the run and past the outputs; wsum: each output's sum."""
    torch.manual_seed(0)
    out, c, kh, kw = 19, 3, 2, 3
    codes = torch.randint(-128, 128, (out, c, kh, kw), dtype=torch.int8)
    panels, wsum = K.int8_conv_panels(codes, dilation)
    runs, run_len = (kh * kw, c) if dilation[1] > 1 else (kh, kw * c)
    groups = -(-run_len // 4)
    assert panels.dtype == torch.int8 and panels.shape == (2, runs * groups, 64)
    window = codes.permute(0, 2, 3, 1).reshape(out, runs, run_len)
    for o in range(32):
        for run in range(runs):
            for pos in range(4 * groups):
                got = int(panels[o // 16, run * groups + pos // 4, 4 * (o % 16) + pos % 4])
                want = int(window[o, run, pos]) if o < out and pos < run_len else 0
                assert got == want, (o, run, pos)
    assert torch.equal(wsum, codes.to(torch.int32).sum((1, 2, 3)))


def test_bad_arguments_are_refused():
    codes = torch.zeros(4, 3, 3, 3, dtype=torch.int8)
    panels, wsum = K.int8_conv_panels(codes)
    x, scale = torch.randn(1, 3, 6, 6), torch.ones(4)
    geometry = (4, (3, 3), (1, 1), (1, 1), (1, 1))

    def call(**changes):
        args = dict(x=x, panels=panels, wsum=wsum, step=0.1, q_range=(-128, 127), scale=scale)
        args.update(changes)
        return K.int8_conv(args.pop("x"), args.pop("panels"), args.pop("wsum"), *geometry,
                           **args)

    call()  # the good call
    for changes, message in [
        ({"q_range": (-128, 128)}, "at most 8 bits"),
        ({"q_range": (1, 255)}, "q_min <= 0 <= q_max"),
        ({"step": 0.0}, "step > 0"),
        ({"step": torch.tensor([0.1, 0.2])}, "one input step"),
        ({"panels": panels[:, :-1]}, "panels must be int8"),
        ({"panels": panels.to(torch.int16)}, "panels must be int8"),
        ({"scale": torch.ones(3)}, "scale must have shape"),
        ({"x": torch.randint(0, 9, (1, 3, 6, 6))}, "float"),
        ({"x": torch.randn(3, 6, 6)}, "float"),
    ]:
        with pytest.raises(ValueError, match=message):
            call(**changes)
    big = torch.zeros(1, 8000, 3, 3, dtype=torch.int8)
    with pytest.raises(ValueError, match="exceeds"):
        K.int8_conv(torch.randn(1, 8000, 3, 3), *K.int8_conv_panels(big), 1, (3, 3), (1, 1),
                    (0, 0), (1, 1), step=0.1, q_range=(0, 255), scale=torch.ones(1))
    with pytest.raises(ValueError, match="integer codes"):
        K.int8_conv_panels(torch.zeros(4, 3, 3, 3))
    with pytest.raises(ValueError, match="-128..127"):
        K.int8_conv_panels(torch.full((4, 3, 3, 3), 200, dtype=torch.int16))


def test_without_the_library_the_reference_runs(monkeypatch):
    from edgecompress.kernels import _loader
    x, codes, kernel, stride, padding, dilation, step, q, scale, bias = _case(3)
    panels, wsum = K.int8_conv_panels(codes, dilation)
    monkeypatch.setattr(_loader, "load", lambda: None)
    monkeypatch.setattr(_loader, "_load_error", "simulated: not built")
    monkeypatch.setattr(_loader, "_warned", True)  # (the warning itself: test_kernels.py)
    assert not K.int8_conv_vnni()
    got = K.int8_conv(x, panels, wsum, codes.shape[0], kernel, stride, padding, dilation,
                      step=step, q_range=q, scale=scale, bias=bias)
    expected = K.int8_conv_reference(x, codes, stride, padding, dilation, step, q, scale, bias)
    assert got.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(got, expected)
