"""kernels.max_pool2d (max_pool.c) against torch's max_pool2d, bit for bit, and the frozen
layer that runs it (PackedMaxPool2d)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgecompress import deploy
from edgecompress import kernels as K

PATHS = K.supported_paths()
needs_library = pytest.mark.skipif(not K.available(), reason="the C kernels are not built")


def bits(t: torch.Tensor) -> torch.Tensor:
    """The float32 values' bit patterns (NaN payloads and zero signs included)."""
    return t.contiguous().view(torch.int32)


def check(x: torch.Tensor, kernel, stride, padding, path, threads=1) -> None:
    got = K.max_pool2d(x, kernel, stride, padding, path=path, threads=threads)
    expected = F.max_pool2d(x, kernel, stride, padding)
    assert got.shape == expected.shape
    assert got.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(bits(got), bits(expected.contiguous(memory_format=torch.channels_last)))


@needs_library
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("seed", range(24))
def test_max_pool_equals_torch_on_random_shapes(path, seed):
    """Ragged channel counts (around the kernel's 32-channel blocks), kernels 1-3 (square or
    not), strides 1-3, every padding up to half the kernel, batch 1-3, 1 and 2 threads."""
    g = torch.Generator().manual_seed(seed)
    pick = lambda options: options[int(torch.randint(len(options), (1,), generator=g))]  # noqa: E731
    channels = pick([1, 3, 8, 31, 32, 33, 64, 65, 100])
    kernel = (pick([1, 2, 3]), pick([1, 2, 3]))
    stride = (pick([1, 2, 3]), pick([1, 2, 3]))
    padding = (pick(range(kernel[0] // 2 + 1)), pick(range(kernel[1] // 2 + 1)))
    n, h, w = pick([1, 2, 3]), pick([3, 5, 8, 13]), pick([3, 6, 9, 14])
    x = torch.randn(n, channels, h, w, generator=g).contiguous(memory_format=torch.channels_last)
    for threads in (1, 2):
        check(x, kernel, stride, padding, path, threads)


@needs_library
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("channels", [8, 40, 64])
def test_nans_infinities_and_signed_zeros_as_torch(path, channels):
    """NaN propagates (the last NaN of a window in row-major order, its payload too), the first
    of equal values is kept (-0 before +0 and the reverse), infinities of both signs in one
    window: the cases the vector path hands to its exact loop."""
    g = torch.Generator().manual_seed(channels)
    x = torch.randn(2, channels, 9, 11, generator=g)
    zeros = torch.where(torch.rand(x.shape, generator=g) < 0.5, -0.0, 0.0)
    x = torch.where(torch.rand(x.shape, generator=g) < 0.3, zeros, x)  # (max is often a zero)
    x = x - 3.0 * (torch.rand(x.shape, generator=g) < 0.2)  # negatives, so zeros are maxima
    special = torch.rand(x.shape, generator=g)
    nan_a = torch.tensor(0x7FC00001, dtype=torch.int32).view(torch.float32)
    nan_b = torch.tensor(0xFFC00123 - 2**32, dtype=torch.int32).view(torch.float32)
    x = torch.where(special < 0.02, nan_a, x)
    x = torch.where((special >= 0.02) & (special < 0.04), nan_b, x)
    x = torch.where((special >= 0.04) & (special < 0.06), torch.tensor(float("inf")), x)
    x = torch.where((special >= 0.06) & (special < 0.08), torch.tensor(float("-inf")), x)
    x = x.contiguous(memory_format=torch.channels_last)
    for kernel, stride, padding in (((3, 3), (2, 2), (1, 1)), ((2, 2), (1, 1), (0, 0)),
                                    ((3, 2), (1, 2), (1, 1))):
        check(x, kernel, stride, padding, path)
    # every value of a map negative zero or positive zero: which zero is first decides
    z = torch.where(torch.rand(1, channels, 6, 6, generator=g) < 0.5, -0.0, 0.0)
    check(z.contiguous(memory_format=torch.channels_last), (3, 3), (1, 1), (1, 1), path)


@needs_library
def test_other_layouts_and_dtypes_are_converted_and_bad_geometries_refused():
    x = torch.randn(2, 5, 7, 7, dtype=torch.float64)
    expected = F.max_pool2d(x.float(), 3, 2, 1)
    for given in (x, x.float(), x.float().transpose(2, 3).transpose(2, 3)):
        assert torch.equal(K.max_pool2d(given, (3, 3), (2, 2), (1, 1)), expected)
    with pytest.raises(ValueError, match="padding at most half the kernel"):
        K.max_pool2d(x, (3, 3), (1, 1), (2, 2))
    with pytest.raises(ValueError, match="does not fit the 7x7 map"):
        K.max_pool2d(x, (9, 9), (1, 1), (0, 0))
    with pytest.raises(ValueError, match="float \\(n, c, h, w\\) map"):
        K.max_pool2d(torch.zeros(2, 5, 7, dtype=torch.float32), (3, 3), (1, 1), (1, 1))


def test_freeze_runs_plain_max_pools_on_the_kernel():
    """freeze turns an nn.MaxPool2d into a PackedMaxPool2d (the same outputs, with or without
    the C kernels, channels-last or not); a ceil-mode pool and one with indices stay torch's."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 40, 3), nn.MaxPool2d(3, 2, 1), nn.Conv2d(40, 8, 3),
                          nn.MaxPool2d(2, ceil_mode=True), nn.Flatten()).eval()
    frozen = deploy.freeze(model)
    assert isinstance(frozen[1], deploy.PackedMaxPool2d) and type(frozen[3]) is nn.MaxPool2d
    assert frozen[1].config() == {"kernel_size": (3, 3), "stride": (2, 2), "padding": (1, 1)}
    x = torch.randn(2, 3, 17, 15)
    with torch.no_grad():
        y = frozen[1](frozen[0](x))
        assert torch.equal(y, F.max_pool2d(frozen[0](x), 3, 2, 1))
        assert torch.equal(frozen[1](frozen[0](x).contiguous()), y)
        torch.testing.assert_close(frozen(x), model(x))
    assert not deploy.PackedMaxPool2d.takes(nn.MaxPool2d(2, return_indices=True))
    assert not deploy.PackedMaxPool2d.takes(nn.MaxPool2d(3, dilation=2))
    # a trace (torch.compile, torch.export) sees torch's max_pool2d (and convolution): one
    # graph, the same values to float rounding
    torch._dynamo.reset()
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(frozen, fullgraph=True)(x), frozen(x))
        torch.testing.assert_close(torch.export.export(frozen, (x,)).module()(x), frozen(x))


def test_without_the_library_torch_pools(monkeypatch):
    from edgecompress.kernels import _loader
    monkeypatch.setattr(_loader, "load", lambda: None)
    monkeypatch.setattr(_loader, "_load_error", "simulated: not built")
    monkeypatch.setattr(_loader, "_warned", True)  # (the warning itself: test_kernels.py)
    x = torch.randn(2, 9, 7, 6, dtype=torch.float64)
    got = K.max_pool2d(x, (3, 3), (2, 2), (1, 1))
    assert got.dtype == torch.float32 and got.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(got, F.max_pool2d(x.float(), 3, 2, 1))
    layer = deploy.PackedMaxPool2d((3, 3), (2, 2), (1, 1))
    assert not K.max_pool2d_usable(x.float().contiguous(memory_format=torch.channels_last))
    assert torch.equal(layer(x.float()), F.max_pool2d(x.float(), 3, 2, 1))
