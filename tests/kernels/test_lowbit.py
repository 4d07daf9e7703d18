"""Low-bit weight GEMM: every path bit-exact against its reference on ragged shapes, every width."""

from __future__ import annotations

import pytest
import torch

from edgecompress import kernels as K
from edgecompress.kernels import _loader

PATHS = K.supported_paths()
needs_library = pytest.mark.skipif(not K.available(), reason="the C kernels are not built")

# (M, N, K): M over 1..16 (every row-block split of the kernels: 8, 4, 2, 1 and two chunks),
# N odd / not a multiple of 16 or of a tile (128), K not a multiple of the 2 or 4 codes per byte
SHAPES = [(1, 1, 1), (1, 16, 64), (2, 17, 65), (3, 33, 7), (4, 129, 130), (5, 5, 3),
          (7, 131, 99), (8, 32, 63), (9, 300, 17), (12, 19, 258), (15, 64, 5), (16, 257, 201)]


def _operands(m: int, n: int, k: int, bits: int, seed: int,
              table_kind: str = "float") -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 2 ** bits, (n, k), generator=g)
    # a table of arbitrary floats (not powers of two): a fused multiply-add in any path would
    # round differently from the reference's product-then-sum, so equality checks the order.
    # "bf16": values with 8 significant bits (the low 16 bits of each float zero), which the
    # AVX2 path decodes by byte shuffles instead of a permute
    table = torch.randn(2 ** bits, generator=g)
    if table_kind == "bf16":
        table = table.to(torch.bfloat16).float()
        assert not (table.view(torch.int32) & 0xFFFF).any()
    x = torch.randn(m, k, generator=g)
    scale, bias = torch.rand(n, generator=g) + 0.5, torch.randn(n, generator=g)
    return codes, table, x, scale, bias


@pytest.mark.parametrize("bits", K.LOWBIT_BITS)
def test_panels_round_trip_and_layout(bits):
    codes = torch.randint(0, 2 ** bits, (18, 11), generator=torch.Generator().manual_seed(bits))
    panels = K.lowbit_panels(codes, bits)
    per = 4 if bits == 2 else 2
    assert panels.dtype == torch.uint8 and panels.shape == (2, -(-11 // per), 16)
    assert torch.equal(K.lowbit_codes_reference(panels, 18, 11, bits), codes.to(torch.uint8))
    lane = 8 // per
    # output 17 (panel 1, position 1), k = per + 1 (group 1, field 1)
    assert (int(panels[1, 1, 1]) >> lane) & (2 ** lane - 1) == int(codes[17, per + 1])
    assert int(panels[1, 0, 5]) == 0  # output 21 does not exist: code 0


def test_reference_is_the_matrix_product():
    codes, table, x, scale, bias = _operands(3, 9, 50, 3, 0)
    expected = (x.double() @ table.double()[codes].T) * scale.double() + bias.double()
    got = K.lowbit_gemm_reference(x, codes, table, scale, bias)
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=1e-5)


@needs_library
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("bits", K.LOWBIT_BITS)
@pytest.mark.parametrize("m, n, k", SHAPES)
@pytest.mark.parametrize("table_kind", ["float", "bf16"])
def test_lowbit_gemm_paths_bit_exact(path, bits, m, n, k, table_kind):
    codes, table, x, scale, bias = _operands(m, n, k, bits, m * 1000 + n * 10 + k + bits,
                                             table_kind)
    panels = K.lowbit_panels(codes, bits)
    for affine in ((None, None), (scale, None), (None, bias), (scale, bias)):
        expected = K.lowbit_gemm_reference(x, codes, table, *affine)
        for threads in (1, 2):
            got = K.lowbit_gemm(x, panels, table, n, bits, *affine, path=path, threads=threads)
            assert torch.equal(got, expected), (affine[0] is not None, affine[1] is not None)


@needs_library
def test_lowbit_gemm_power_of_two_table_and_extreme_inputs():
    """Shift layers' tables (0 and +-2^e) and inputs with zeros, infinities and NaN propagate as
    in the reference."""
    table = torch.tensor([-1.0, -0.25, -2.0 ** -6, 0.0, 2.0 ** -6, 0.25, 1.0, 4.0])
    codes = torch.randint(0, 8, (21, 37), generator=torch.Generator().manual_seed(1))
    x = torch.randn(4, 37)
    x[1, 3], x[2, 0], x[3, 36] = float("inf"), float("nan"), 0.0
    expected = K.lowbit_gemm_reference(x, codes, table)
    for path in PATHS:
        got = K.lowbit_gemm(x, K.lowbit_panels(codes, 3), table, 21, 3, path=path)
        assert torch.equal(got.isnan(), expected.isnan())
        assert torch.equal(got.nan_to_num(), expected.nan_to_num())


def test_lowbit_gemm_reference_fallback_without_library(monkeypatch):
    """Without the library the kernel function returns the reference (the loader warns once)."""
    codes, table, x, scale, bias = _operands(2, 20, 9, 4, 3)
    monkeypatch.setattr(_loader, "_lib", None)
    monkeypatch.setattr(_loader, "_load_error", "not built (test)")
    monkeypatch.setattr(_loader, "_warned", True)
    got = K.lowbit_gemm(x, K.lowbit_panels(codes, 4), table, 20, 4, scale, bias)
    assert torch.equal(got, K.lowbit_gemm_reference(x, codes, table, scale, bias))


def test_lowbit_gemm_rejects_bad_inputs():
    codes = torch.randint(0, 8, (20, 10))
    panels, table, x = K.lowbit_panels(codes, 3), torch.randn(8), torch.randn(2, 10)
    with pytest.raises(ValueError, match="codes of \\(2, 3, 4\\) bits, got bits=5"):
        K.lowbit_gemm(x, panels, torch.randn(32), 20, 5)
    with pytest.raises(ValueError, match="float rows x"):
        K.lowbit_gemm(x.to(torch.int32), panels, table, 20, 3)
    with pytest.raises(ValueError, match="float rows x"):
        K.lowbit_gemm(x[0], panels, table, 20, 3)
    with pytest.raises(ValueError, match="uint8 low-bit panels \\(2, 6, 16\\)"):
        K.lowbit_gemm(torch.randn(2, 11), panels, table, 20, 3)  # K does not match
    with pytest.raises(ValueError, match="uint8 low-bit panels"):
        K.lowbit_gemm(x, panels.to(torch.int16), table, 20, 3)
    with pytest.raises(ValueError, match="uint8 low-bit panels"):
        K.lowbit_gemm(x, panels, table, 40, 3)  # N does not match
    with pytest.raises(ValueError, match="float table of 8 values"):
        K.lowbit_gemm(x, panels, torch.randn(16), 20, 3)
    with pytest.raises(ValueError, match="bias must be a vector of 20"):
        K.lowbit_gemm(x, panels, table, 20, 3, bias=torch.zeros(3))
    with pytest.raises(ValueError, match="codes must lie in \\[0, 4\\)"):
        K.lowbit_panels(codes, 2)
    with pytest.raises(ValueError, match="integer codes"):
        K.lowbit_panels(codes.float(), 3)


@needs_library
def test_lowbit_gemm_refuses_a_path_the_cpu_cannot_run_and_bad_bits_in_c():
    if "avx512" not in PATHS:
        with pytest.raises(RuntimeError, match="not supported on this CPU"):
            K.lowbit_gemm(torch.randn(1, 4), K.lowbit_panels(torch.zeros(3, 4, dtype=torch.int64),
                                                             2), torch.randn(4), 3, 2,
                          path="avx512")
    status = _loader.load().ec_lowbit_gemm(None, None, None, 5, 1, 1, 1, None, None, None, -1, 1)
    with pytest.raises(RuntimeError, match="rejected an argument"):
        _loader.check_status(status, "lowbit_gemm", None)
