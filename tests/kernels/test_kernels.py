"""Binary kernels: every path bit-exact against the PyTorch reference on random, ragged shapes."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from edgecompress import kernels as K
from edgecompress.kernels import _loader

PATHS = K.supported_paths()
needs_library = pytest.mark.skipif(not K.available(), reason="the C kernels are not built")


def test_kernels_are_built_here():
    """CI builds the C library with the package; if this fails the build silently fell back."""
    assert K.available()
    assert "scalar" in PATHS


def test_reference_gemm_is_the_plain_dot_product():
    torch.manual_seed(0)
    x, w = torch.randn(5, 70), torch.randn(3, 70)
    signs = lambda t: torch.where(t >= 0, 1.0, -1.0).double()  # noqa: E731
    a, b = K.pack_signs_reference(x), K.pack_signs_reference(w)
    expected = (signs(x) @ signs(w).T).to(torch.int32)
    assert torch.equal(K.binary_gemm_reference(a, b, 70), expected)
    valid = (torch.rand(5, 70) > 0.3).double()
    mask = K.pack_signs_reference(-valid)  # bit 1 where valid
    expected = ((signs(x) * valid) @ signs(w).T).to(torch.int32)
    assert torch.equal(K.binary_gemm_reference(a, b, 70, mask), expected)


def test_pack_round_trip_and_bit_layout():
    x = torch.tensor([[-1.0, 2.0, -0.0, -3.0] + [1.0] * 60 + [-5.0]])
    packed = K.pack_signs(x)
    assert packed.shape == (1, 2)
    assert packed[0, 0].item() == 0b1001 and packed[0, 1].item() == 1
    assert torch.equal(K.unpack_signs_reference(packed, 65), torch.where(x < 0, -1.0, 1.0).double())


SHAPES = [(1, 1, 1), (1, 16, 64), (2, 3, 63), (5, 17, 65), (4, 16, 128), (9, 33, 577),
          (1, 64, 4608), (13, 130, 1000), (6, 5, 3000)]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("m, n, k", SHAPES)
def test_pack_signs_matches_reference(path, m, n, k):
    x = torch.randn(m, k)
    x[0, : min(k, 4)] = torch.tensor([0.0, -0.0, float("-inf"), float("nan")])[: min(k, 4)]
    assert torch.equal(K.pack_signs(x, path=path), K.pack_signs_reference(x))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("m, n, k", SHAPES)
def test_pack_signs_with_offset_is_the_sign_of_the_float_sum(path, m, n, k):
    g = torch.Generator().manual_seed(k)
    x, offset = torch.randn(m, k, generator=g), torch.randn(k, generator=g)
    x[0] = -offset  # sums exactly 0: bit 0
    if m > 1:  # sums that round to 0 or to the smallest negative number
        x[1] = -offset * (1 + 2.0 ** -24)
    expected = K.pack_signs_reference(x + offset)
    assert torch.equal(K.pack_signs_reference(x, offset), expected)
    assert torch.equal(K.pack_signs(x, offset, path=path), expected)
    with pytest.raises(ValueError, match="offset"):
        K.pack_signs(x, torch.zeros(k + 1))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("m, n, k", SHAPES)
@pytest.mark.parametrize("masked", [False, True])
def test_gemm_paths_bit_exact(path, m, n, k, masked):
    g = torch.Generator().manual_seed(m * 1000 + n * 10 + k)
    a = K.pack_signs(torch.randn(m, k, generator=g))
    b = K.pack_signs(torch.randn(n, k, generator=g))
    mask = K.pack_signs(torch.randn(m, k, generator=g)) if masked else None
    expected = K.binary_gemm_reference(a, b, k, mask)
    for threads in (1, 2):
        assert torch.equal(K.binary_gemm(a, b, k, mask, path=path, threads=threads), expected)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("k", [31 * 64, 32 * 64, 62 * 64 + 5, 4608])
def test_gemm_counts_at_their_largest(path, k):
    """Every bit differing (a dot product of -k) or every bit equal, over more words than a
    kernel may sum in narrow counters before widening them (the AVX2 tile sums byte counts
    over 31 words): the largest counts, which random signs never reach."""
    ones = torch.ones(3, k)
    a = K.pack_signs(ones)
    b = K.pack_signs(torch.cat([-ones[:2], ones[:1]]))
    mask = K.pack_signs(torch.cat([-ones[:1], ones[:1], -ones[:1]]))  # all, none, all valid
    assert torch.equal(K.binary_gemm(a, b, k, path=path),
                       torch.tensor([[-k, -k, k]] * 3, dtype=torch.int32))
    assert torch.equal(K.binary_gemm(a, b, k, mask, path=path),
                       K.binary_gemm_reference(a, b, k, mask))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("m, n, k", SHAPES)
@pytest.mark.parametrize("affine", ["scale", "bias", "both", "none"])  # and the signs of it
def test_gemm_affine_epilogue_bit_exact(path, m, n, k, affine):
    g = torch.Generator().manual_seed(m + n + k)
    a = K.pack_signs(torch.randn(m, k, generator=g))
    b = K.pack_signs(torch.randn(n, k, generator=g))
    mask = K.pack_signs(torch.randn(m, k, generator=g)) if k % 2 else None
    scale = torch.rand(n, generator=g) * 0.37 + 1e-3 if affine in ("scale", "both") else None
    bias = torch.randn(n, generator=g) * 3.1 if affine in ("bias", "both") else None
    expected = K.binary_gemm_affine_reference(a, b, k, mask, scale, bias)
    assert expected.dtype == torch.float32
    signs = K.binary_gemm_signs_reference(a, b, k, mask, scale, bias)
    assert torch.equal(signs, K.pack_signs(expected))
    for threads in (1, 2):
        got = K.binary_gemm_affine(a, b, k, mask, scale, bias, path=path, threads=threads)
        assert torch.equal(got, expected)
        got = K.binary_gemm_signs(a, b, k, mask, scale, bias, path=path, threads=threads)
        assert torch.equal(got, signs)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("m, n, k", SHAPES)
@pytest.mark.parametrize("clamp", [None, (-1.0, 1.0), (0.0, float("inf"))])
def test_gemm_residual_and_clamp_epilogue_bit_exact(path, m, n, k, clamp):
    g = torch.Generator().manual_seed(m * 3 + n + k)
    a = K.pack_signs(torch.randn(m, k, generator=g))
    b = K.pack_signs(torch.randn(n, k, generator=g))
    scale = torch.rand(n, generator=g) / max(k, 1) ** 0.5
    bias = torch.randn(n, generator=g) * 0.3
    residual = torch.randn(m, n, generator=g)
    expected = K.binary_gemm_affine_reference(a, b, k, None, scale, bias, residual, clamp)
    if clamp is not None:
        assert expected.min() >= clamp[0] and expected.max() <= clamp[1]
    for threads in (1, 2):
        got = K.binary_gemm_affine(a, b, k, None, scale, bias, residual=residual, clamp=clamp,
                                   path=path, threads=threads)
        assert torch.equal(got, expected)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("clamp", [(-1.0, 1.0), (0.0, float("inf"))])
def test_gemm_epilogue_keeps_nan_and_infinity_as_torch_does(path, clamp):
    """A NaN or infinite residual (or scale) goes through the clamp as torch's does: NaN stays
    NaN, never becomes a bound; packed signs of infinite values as the reference's. Full panels
    of 16 columns and a ragged one, so every store kernel runs."""
    g = torch.Generator().manual_seed(7)
    m, n, k = 6, 40, 200
    a = K.pack_signs(torch.randn(m, k, generator=g))
    b = K.pack_signs(torch.randn(n, k, generator=g))
    scale, bias = torch.rand(n, generator=g) * 0.1, torch.randn(n, generator=g)
    scale[3] = float("inf")
    residual = torch.randn(m, n, generator=g)
    residual[0, 1], residual[2, 17], residual[5, 39] = float("nan"), float("-inf"), float("nan")
    expected = K.binary_gemm_affine_reference(a, b, k, None, scale, bias, residual, clamp)
    assert expected.isnan().sum() >= 2
    for threads in (1, 2):
        got = K.binary_gemm_affine(a, b, k, None, scale, bias, residual=residual, clamp=clamp,
                                   path=path, threads=threads)
        assert torch.equal(got.isnan(), expected.isnan())
        assert torch.equal(got.nan_to_num(), expected.nan_to_num())
    # the signs of values with an infinite scale (and NaN where the dot product is 0)
    assert torch.equal(K.binary_gemm_signs(a, b, k, None, scale, bias, path=path),
                       K.binary_gemm_signs_reference(a, b, k, None, scale, bias))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("block", [1, 3000, 40_000])  # bytes: one panel per block, 2-3 panels...
def test_gemm_cache_blocking_is_bit_exact(path, block):
    """The panels walked in blocks (tiny blocks here, to split these small shapes): the same
    integers, affine values and packed signs (whose 64-bit words span 4 panels, so a word is
    finished across blocks)."""
    g = torch.Generator().manual_seed(block)
    m, n, k = 13, 130, 1000
    a = K.pack_signs(torch.randn(m, k, generator=g))
    b = K.pack_signs(torch.randn(n, k, generator=g))
    mask = K.pack_signs(torch.randn(m, k, generator=g))
    scale, bias = torch.rand(n, generator=g) + 0.01, torch.randn(n, generator=g)
    expected = K.binary_gemm_reference(a, b, k, mask)
    signs = K.binary_gemm_signs_reference(a, b, k, mask, scale, bias)
    affine = K.binary_gemm_affine_reference(a, b, k, mask, scale, bias)
    try:
        K._set_gemm_block_bytes(block)
        for threads in (1, 2):
            assert torch.equal(K.binary_gemm(a, b, k, mask, path=path, threads=threads),
                               expected)
            assert torch.equal(K.binary_gemm_signs(a, b, k, mask, scale, bias, path=path,
                                                   threads=threads), signs)
            assert torch.equal(K.binary_gemm_affine(a, b, k, mask, scale, bias, path=path,
                                                    threads=threads), affine)
    finally:
        K._set_gemm_block_bytes(256 * 1024)


def test_gemm_affine_rejects_a_wrong_scale():
    a, b = K.pack_signs(torch.randn(2, 70)), K.pack_signs(torch.randn(3, 70))
    with pytest.raises(ValueError, match="scale must be a vector of 3 values"):
        K.binary_gemm_affine(a, b, 70, scale=torch.ones(4))
    with pytest.raises(ValueError, match=r"residual must have shape \(2, 3\)"):
        K.binary_gemm_affine(a, b, 70, residual=torch.ones(3, 2))


@settings(max_examples=30, deadline=None)
@given(m=st.integers(1, 12), n=st.integers(1, 40), k=st.integers(1, 300), seed=st.integers(0, 99))
def test_gemm_random_shapes(m, n, k, seed):
    g = torch.Generator().manual_seed(seed)
    a = K.pack_signs(torch.randn(m, k, generator=g))
    b = K.pack_signs(torch.randn(n, k, generator=g))
    expected = K.binary_gemm_reference(a, b, k)
    for path in PATHS:
        assert torch.equal(K.binary_gemm(a, b, k, path=path), expected)


def test_panels_match_reference_layout_and_are_reusable():
    b = K.pack_signs(torch.randn(21, 130))
    panels = K.pack_panels(b)
    assert panels.shape == (2, 3, 16)
    assert torch.equal(panels[1, :, 4], b[20]) and torch.equal(panels[1, :, 5], torch.zeros(3,
                                                                                        dtype=torch.int64))
    a = K.pack_signs(torch.randn(7, 130))
    assert torch.equal(K.binary_gemm(a, b, 130, panels=panels), K.binary_gemm_reference(a, b, 130))


def test_bad_arguments_are_rejected_clearly():
    a, b = K.pack_signs(torch.randn(2, 70)), K.pack_signs(torch.randn(3, 70))
    with pytest.raises(ValueError, match=r"b must be an int64 tensor of packed rows \(R, 2\)"):
        K.binary_gemm(a, b[:, :1], 70)
    with pytest.raises(ValueError, match="mask has 1 rows but a has 2"):
        K.binary_gemm(a, b, 70, a[:1])
    with pytest.raises(ValueError, match="path must be one of"):
        K.binary_gemm(a, b, 70, path="neon")
    with pytest.raises(ValueError, match="panels have shape"):
        K.binary_gemm(a, b, 70, panels=torch.zeros(1, 1, 16, dtype=torch.int64))
    with pytest.raises(ValueError, match="2-D"):
        K.pack_signs(torch.randn(2, 3, 4))


def test_without_the_library_the_reference_path_runs_and_says_so_once(monkeypatch):
    monkeypatch.setattr(_loader, "load", lambda: None)
    monkeypatch.setattr(_loader, "_load_error", "simulated: not built")
    monkeypatch.setattr(_loader, "_warned", False)
    x, w = torch.randn(3, 100), torch.randn(4, 100)
    with pytest.warns(RuntimeWarning, match="simulated: not built"):
        a = K.pack_signs(x)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = K.binary_gemm(a, K.pack_signs(w), 100)
    assert torch.equal(out, K.binary_gemm_reference(a, K.pack_signs_reference(w), 100))



def _every_kernel_function(seed: int) -> list[torch.Tensor]:
    """The result of every kernel function on ragged inputs (k = 70: two words, one partial;
    n = 21: two panels, one partial; a padded strided convolution)."""
    g = torch.Generator().manual_seed(seed)
    m, n, k = 5, 21, 70
    x, w = torch.randn(m, k, generator=g), torch.randn(n, k, generator=g)
    a, b = K.pack_signs(x), K.pack_signs(w)
    mask = K.pack_signs(torch.randn(m, k, generator=g))
    scale, bias = torch.rand(n, generator=g) + 0.1, torch.randn(n, generator=g)
    residual = torch.randn(m, n, generator=g)
    image = torch.randn(2, 70, 5, 4, generator=g)
    geometry = ((3, 3), (2, 1), (1, 1), (1, 1))
    return [a, b, K.pack_panels(b), K.binary_gemm(a, b, k, mask),
            K.binary_gemm_affine(a, b, k, mask, scale, bias, residual=residual, clamp=(-1.0, 1.0)),
            K.binary_gemm_signs(a, b, k, mask, scale, bias),
            K.w1a32_gemm(x, K.sign_panels(b, k), n, scale, bias),
            K.pack_pixels(image), *K.im2col_signs(image, *geometry),
            *K.im2col_words(K.pack_pixels(image), 70, *geometry),
            K.binary_gemm_groups(a.view(1, m, -1), b.view(1, n, -1), k, scale),
            K.mask_matmul(mask.view(1, m, -1), b.t().contiguous()[None], 1, 0.5),
            K.conv2d_direct(image, torch.randn(3, 70, 3, 3, generator=g), bias[:3], (2, 1),
                            (1, 1), clamp=(0.0, 1.0))]


def test_every_kernel_function_falls_back_to_its_reference_with_the_same_result(monkeypatch):
    fast = _every_kernel_function(seed=3)
    monkeypatch.setattr(_loader, "load", lambda: None)
    monkeypatch.setattr(_loader, "_warned", True)
    slow = _every_kernel_function(seed=3)
    assert len(fast) == len(slow)
    for got, expected in zip(slow, fast):
        assert got.dtype == expected.dtype and torch.equal(got, expected)


@needs_library
def test_a_path_the_cpu_cannot_run_is_the_same_runtime_error_for_every_kernel(monkeypatch):
    """Path code 3 exists on no CPU: the C kernels refuse it (never run it), and every wrapper,
    signswish included, raises RuntimeError naming the kernel and the supported paths."""
    from edgecompress.kernels import dispatch

    x = torch.randn(3, 70)
    a, b = K.pack_signs(x), K.pack_signs(torch.randn(4, 70))
    monkeypatch.setattr(dispatch, "path_code", lambda path: 3)
    calls = {"pack_signs": lambda: K.pack_signs(x),
             "binary_gemm": lambda: K.binary_gemm_affine(a, b, 70),
             "w1a32_gemm": lambda: K.w1a32_gemm(x, K.sign_panels(b, 70), 4),
             "binary_gemm_groups": lambda: K.binary_gemm_groups(a[None], b[None], 70,
                                                                torch.ones(4)),
             "mask_matmul": lambda: K.mask_matmul(a[None], b.t()[None].contiguous(), 1, 1.0),
             "signswish": lambda: K.signswish(x, 5.0),
             "conv2d_direct": lambda: K.conv2d_direct(x.view(1, 1, 3, 70), torch.ones(1, 1, 1, 1))}
    for name, call in calls.items():
        with pytest.raises(RuntimeError, match=rf"^{name}.*not supported on this CPU; supported"):
            call()


@needs_library
def test_a_failed_allocation_in_c_is_reported_as_out_of_memory():
    """A work buffer larger than the address space: the W1A32 kernel returns its out-of-memory
    status (before touching any operand), which the wrapper raises as a MemoryError."""
    status = _loader.load().ec_w1a32_gemm(None, None, 2 ** 60, 1, 1, None, None, None, -1, 1)
    with pytest.raises(MemoryError, match="w1a32_gemm: out of memory"):
        _loader.check_status(status, "w1a32_gemm", None)


CONV_CASES = [  # n, c, h, w, kernel, stride, padding, dilation
    (1, 1, 5, 5, (3, 3), (1, 1), (1, 1), (1, 1)),
    (2, 3, 7, 6, (3, 3), (2, 2), (1, 1), (1, 1)),
    (1, 64, 6, 6, (3, 3), (1, 1), (1, 1), (1, 1)),
    (2, 70, 5, 4, (1, 1), (1, 1), (0, 0), (1, 1)),
    (2, 70, 5, 4, (1, 1), (2, 2), (0, 0), (1, 1)),
    (1, 130, 9, 9, (3, 3), (1, 1), (2, 2), (2, 2)),
    (3, 16, 8, 8, (5, 3), (3, 1), (2, 0), (1, 1)),
]


@pytest.mark.parametrize("n, c, h, w, kernel, stride, padding, dilation", CONV_CASES)
def test_im2col_matches_reference_and_conv_matches_float(n, c, h, w, kernel, stride, padding,
                                                         dilation):
    g = torch.Generator().manual_seed(c * 7 + h)
    x = torch.randn(n, c, h, w, generator=g)
    rows, mask = K.im2col_signs(x, kernel, stride, padding, dilation)
    ref_rows, ref_mask = K.im2col_signs_reference(x, kernel, stride, padding, dilation)
    assert torch.equal(rows, ref_rows) and torch.equal(mask, ref_mask)
    weight = torch.randn(5, c, *kernel, generator=g)
    b = K.pack_conv_weights(weight)
    k = c * kernel[0] * kernel[1]
    expected = torch.nn.functional.conv2d(torch.where(x >= 0, 1.0, -1.0).double(),
                                          torch.where(weight >= 0, 1.0, -1.0).double(),
                                          stride=stride, padding=padding, dilation=dilation)
    expected = expected.permute(0, 2, 3, 1).reshape(-1, 5).round().to(torch.int32)
    assert torch.equal(K.binary_gemm_reference(rows, b, k, mask), expected)
    for path in PATHS:
        assert torch.equal(K.binary_gemm(rows, b, k, mask, path=path), expected)
    # the same rows from a channels-last input, and without a mask where there is no padding
    last = x.contiguous(memory_format=torch.channels_last)
    assert torch.equal(K.pack_pixels(last), K.pack_pixels(x.contiguous()))
    rows_cl, mask_cl = K.im2col_signs(last, kernel, stride, padding, dilation)
    assert torch.equal(rows_cl, rows) and torch.equal(mask_cl, mask)
    if padding == (0, 0):
        rows_nm, no_mask = K.im2col_signs(last, kernel, stride, padding, dilation, masked=False)
        assert no_mask is None and torch.equal(rows_nm, rows)
        assert torch.equal(K.binary_gemm(rows_nm, b, k), expected)


W1A32_SHAPES = [(1, 1, 1), (1, 16, 64), (2, 17, 65), (7, 33, 130), (8, 32, 63), (9, 130, 200),
                (17, 5, 577), (1, 300, 129)]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("m, n, k", W1A32_SHAPES)
def test_w1a32_gemm_paths_bit_exact(path, m, n, k):
    g = torch.Generator().manual_seed(m * 31 + n + k)
    x = torch.randn(m, k, generator=g)
    b = K.pack_signs(torch.randn(n, k, generator=g))
    panels = K.sign_panels(b, k)
    assert panels.shape == (-(-n // 16), k) and panels.dtype == torch.int16
    scale, bias = torch.rand(n, generator=g) + 0.1, torch.randn(n, generator=g)
    for affine in ((None, None), (scale, bias)):
        expected = K.w1a32_gemm_reference(x, b, k, *affine)
        signs = K.unpack_signs_reference(b, k).float()
        plain = x @ signs.T
        if affine[0] is not None:
            plain = plain * scale + bias
        torch.testing.assert_close(expected, plain, atol=1e-4, rtol=1e-4)  # it is x @ S.T
        for threads in (1, 2):
            got = K.w1a32_gemm(x, panels, n, *affine, path=path, threads=threads)
            assert torch.equal(got, expected)


def test_sign_panels_layout():
    w = torch.ones(18, 3)
    w[0, 0] = w[15, 0] = w[17, 2] = -1.0
    panels = K.sign_panels(K.pack_signs(w), 3)
    assert panels.tolist() == [[-(2 ** 15) + 1, 0, 0], [0, 0, 2]]


def test_w1a32_gemm_rejects_mismatched_panels():
    x = torch.randn(2, 10)
    panels = K.sign_panels(K.pack_signs(torch.randn(20, 10)), 10)
    with pytest.raises(ValueError, match="int16 sign panels"):
        K.w1a32_gemm(x, panels, 40)
    with pytest.raises(ValueError, match="bias must be a vector of 20"):
        K.w1a32_gemm(x, panels, 20, bias=torch.zeros(3))


# --- SignSwish (training kernel) ------------------------------------------------------------------

def _signswish_inputs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=g) * 2
    special = torch.tensor([0.0, -0.0, 100.0, -100.0, 1e-30, -1e-30, 17.5, -17.5])
    x[: min(n, 8)] = special[: min(n, 8)]  # saturated sigmoid, signed zeros, tiny values
    return x, torch.randn(n, generator=g)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("n", [1, 7, 16, 17, 1000, 16384 * 2 + 5])  # ragged vs 8, 16, chunk
@pytest.mark.parametrize("beta", [0.5, 5.0])
def test_signswish_kernel_matches_the_pytorch_formulas(path, n, beta):
    from edgecompress.quantizers.elementary import SignSwish
    from edgecompress.quantizers.proximal import ProxConnectProx

    x, grad = _signswish_inputs(n, seed=n)
    ss, prox = SignSwish(beta), ProxConnectProx(0.3)
    value = ss.value_reference(x)
    # float rounding only: a polynomial exp against torch's; relative to the largest magnitude
    torch.testing.assert_close(K.signswish(x, beta, "value", path=path), value,
                               rtol=1e-5, atol=2e-6)
    torch.testing.assert_close(K.signswish(x, beta, "prox", mu=0.3, path=path), prox.value(value),
                               rtol=1e-5, atol=2e-6)
    expected = ss.derivative(x) * grad
    torch.testing.assert_close(K.signswish(x, beta, "grad", grad=grad, path=path), expected,
                               rtol=1e-5, atol=2e-6 * beta * grad.abs().max().item())


@pytest.mark.parametrize("path", PATHS)
def test_signswish_kernel_prox_signs_follow_sign_of_the_value(path):
    """clip(v + mu sign(v)): sign(+-0) = +1, so x = -0.0 moves to +mu, x < 0 to -mu or below."""
    x = torch.tensor([0.0, -0.0, -1e-3, 1e-3] * 5)
    out = K.signswish(x, 5.0, "prox", mu=0.25, path=path)
    assert out[0] == out[1] == 0.25
    assert (out[2] < -0.25) and (out[3] > 0.25)


def test_signswish_kernel_threads_agree():
    x, grad = _signswish_inputs(100_000, seed=1)
    one = K.signswish(x, 5.0, "grad", grad=grad, threads=1)
    assert torch.equal(one, K.signswish(x, 5.0, "grad", grad=grad, threads=2))


def test_signswish_kernel_rejects_bad_input():
    x = torch.randn(10)
    with pytest.raises(ValueError, match="op must be one of"):
        K.signswish(x, 5.0, "derivative")
    with pytest.raises(TypeError, match="float32 CPU tensor"):
        K.signswish(x.double(), 5.0)
    with pytest.raises(ValueError, match="grad is needed"):
        K.signswish(x, 5.0, "grad")
    with pytest.raises(ValueError, match="grad has shape"):
        K.signswish(x, 5.0, "grad", grad=torch.randn(11))
    with pytest.raises(ValueError, match="path must be one of"):
        K.signswish(x, 5.0, path="neon")


def test_signswish_quantizer_uses_the_kernel_only_where_it_can(monkeypatch):
    """Eager float32 goes through the kernel; float64 (gradcheck) and a missing library use the
    PyTorch formulas, with the same values."""
    from edgecompress.quantizers import method_pair

    calls = []
    real = K.signswish
    monkeypatch.setattr(K, "signswish", lambda *a, **kw: calls.append(a[2:] or "value")
                        or real(*a, **kw))
    pair = method_pair("bnn++", mu=0.4)
    x = torch.randn(50, requires_grad=True)
    pair(x).sum().backward()
    assert len(calls) == 2  # the fused forward and the gradient
    fast = x.grad.clone()
    calls.clear()
    x64 = x.detach().double().requires_grad_()
    pair(x64).sum().backward()
    assert calls == []
    torch.testing.assert_close(fast, x64.grad.float(), rtol=1e-5, atol=1e-5)
    monkeypatch.setattr(_loader, "load", lambda: None)
    monkeypatch.setattr(_loader, "_warned", True)
    x.grad = None
    pair(x).sum().backward()
    assert calls == []
    torch.testing.assert_close(fast, x.grad, rtol=1e-5, atol=1e-5)


# --- custom ops (torch.library) ---------------------------------------------------------------------

OPCHECK_SHAPES = [(1, 1, 1), (3, 17, 70), (5, 70, 129)]  # ragged against 64 words and 16 panels


@pytest.mark.parametrize("m, n, k", OPCHECK_SHAPES)
@pytest.mark.parametrize("variant", ["plain", "masked-affine", "signs", "residual-clamp",
                                     "residual-no-clamp"])
def test_binary_gemm_affine_custom_op_passes_opcheck(m, n, k, variant):
    from edgecompress.kernels.ops import binary_gemm_affine_op

    g = torch.Generator().manual_seed(m * 100 + n + k)
    a = K.pack_signs(torch.randn(m, k, generator=g))
    b = K.pack_signs(torch.randn(n, k, generator=g))
    panels = K.pack_panels(b)
    mask = K.pack_signs(torch.randn(m, k, generator=g)) if variant == "masked-affine" else None
    scale = torch.rand(n, generator=g) + 0.1
    bias = torch.randn(n, generator=g)
    residual = torch.randn(m, n, generator=g)
    if variant == "plain":
        args, expected = (a, b, panels, k, None, None, None), K.binary_gemm_reference(a, b, k)
        expected = expected.to(torch.float32)
    elif variant == "masked-affine":
        args = (a, b, panels, k, mask, scale, bias)
        expected = K.binary_gemm_affine_reference(a, b, k, mask, scale, bias)
    elif variant == "signs":
        args = (a, b, panels, k, None, scale, bias, True)
        expected = K.binary_gemm_signs_reference(a, b, k, None, scale, bias)
        assert expected.shape == (m, K.words(n))
    elif variant == "residual-clamp":
        args = (a, b, panels, k, None, scale, bias, False, residual, -1.0, 1.0)
        expected = K.binary_gemm_affine_reference(a, b, k, None, scale, bias, residual,
                                                  (-1.0, 1.0))
    else:  # a single clamp bound means no clamp
        args = (a, b, panels, k, None, scale, bias, False, residual, -1.0, None)
        expected = K.binary_gemm_affine_reference(a, b, k, None, scale, bias, residual)
    torch.library.opcheck(binary_gemm_affine_op, args)  # raises on any failed check
    got = binary_gemm_affine_op(*args)
    assert got.dtype == expected.dtype and torch.equal(got, expected)
    got = torch.ops.edgecompress.binary_gemm_affine(*args)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("m, n, k", OPCHECK_SHAPES + [(17, 33, 65)])
@pytest.mark.parametrize("affine", [False, True])
def test_w1a32_gemm_custom_op_passes_opcheck(m, n, k, affine):
    from edgecompress.kernels.ops import w1a32_gemm_op

    g = torch.Generator().manual_seed(m * 7 + n + k)
    x = torch.randn(m, k, generator=g)
    b = K.pack_signs(torch.randn(n, k, generator=g))
    scale, bias = (torch.rand(n, generator=g) + 0.1, torch.randn(n, generator=g)) if affine \
        else (None, None)
    args = (x, K.sign_panels(b, k), n, scale, bias)
    torch.library.opcheck(w1a32_gemm_op, args)
    expected = K.w1a32_gemm_reference(x, b, k, scale, bias)
    assert torch.equal(w1a32_gemm_op(*args), expected)
    assert torch.equal(torch.ops.edgecompress.w1a32_gemm(*args), expected)
