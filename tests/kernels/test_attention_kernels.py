"""The binary-attention kernels: q k^T on the W1A1 GEMM per group, and the {0, a} x +-1 product
on bit masks, bit-exact on every path against their references on ragged shapes."""

from __future__ import annotations

import pytest
import torch

from edgecompress import kernels as K

PATHS = K.supported_paths()
# (groups, heads, queries, keys, head dim): keys and head dims not multiples of 64 or of the
# vector widths (4 / 8 channels), one and several words per row
SHAPES = [(1, 1, 1, 1, 1), (2, 1, 5, 7, 3), (4, 2, 9, 63, 9), (6, 3, 16, 64, 16),
          (2, 2, 33, 65, 33), (3, 1, 7, 130, 70), (2, 2, 4, 200, 64)]


def _operands(groups: int, m: int, s: int, d: int, seed: int):
    """Random 0/1 codes (G, m, s), +-1 values (G, s, d) and their packed forms."""
    g = torch.Generator().manual_seed(seed)
    codes = (torch.rand(groups, m, s, generator=g) < 0.3).float()
    values = torch.where(torch.rand(groups, s, d, generator=g) < 0.5, -1.0, 1.0)
    masks = K.pack_signs(-codes.reshape(-1, s)).view(groups, m, -1)
    vneg = K.pack_signs(values.transpose(1, 2).reshape(-1, s)).view(groups, d, -1)
    return codes, values, masks, vneg.transpose(1, 2).contiguous()


@pytest.mark.parametrize("groups, heads, m, s, d", SHAPES)
def test_mask_matmul_reference_is_codes_times_values_then_alpha(groups, heads, m, s, d):
    codes, values, masks, vneg = _operands(groups, m, s, d, seed=0)
    alpha = 0.0123
    expected = (codes @ values) * torch.tensor(alpha)  # (G, m, d), exact integers then 1 rounding
    expected = expected.view(-1, heads, m, d).transpose(1, 2).reshape(-1, m, heads * d)
    assert torch.equal(K.mask_matmul_reference(masks, vneg, heads, d, alpha), expected)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("groups, heads, m, s, d", SHAPES)
def test_mask_matmul_paths_bit_exact(path, groups, heads, m, s, d):
    _, _, masks, vneg = _operands(groups, m, s, d, seed=1)
    for threads in (1, 2):
        got = K.mask_matmul(masks, vneg, heads, 0.37, path=path, threads=threads)
        assert torch.equal(got, K.mask_matmul_reference(masks, vneg, heads, d, 0.37))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("groups, heads, m, s, d", SHAPES)
def test_binary_gemm_groups_is_the_per_group_gemm(path, groups, heads, m, s, d):
    g = torch.Generator().manual_seed(2)
    a = K.pack_signs(torch.randn(groups * m, d, generator=g)).view(groups, m, -1)
    b = K.pack_signs(torch.randn(groups * s, d, generator=g)).view(groups, s, -1)
    scale = torch.full((s,), d ** -0.5)
    for threads in (1, 2):
        got = K.binary_gemm_groups(a, b, d, scale, path=path, threads=threads)
        assert torch.equal(got, K.binary_gemm_groups_reference(a, b, d, scale))
    # and the reference is the plain dot product of the +-1 rows, scaled once
    qs = K.unpack_signs_reference(a.reshape(-1, a.shape[2]), d).float().view(groups, m, d)
    ks = K.unpack_signs_reference(b.reshape(-1, b.shape[2]), d).float().view(groups, s, d)
    assert torch.equal(K.binary_gemm_groups_reference(a, b, d, scale),
                       (qs @ ks.transpose(1, 2)) * d ** -0.5)


def test_bad_operands_are_rejected_clearly():
    masks, vneg = torch.zeros(4, 3, 2, dtype=torch.int64), torch.zeros(4, 1, 5, dtype=torch.int64)
    with pytest.raises(ValueError, match=r"mask_matmul needs int64 masks \(G, M, SW\)"):
        K.mask_matmul(masks, vneg, 2, 1.0)
    with pytest.raises(ValueError, match="multiple of heads = 3"):
        K.mask_matmul(masks, torch.zeros(4, 2, 5, dtype=torch.int64), 3, 1.0)
    a = torch.zeros(2, 3, 1, dtype=torch.int64)
    with pytest.raises(ValueError, match="binary_gemm_groups needs a"):
        K.binary_gemm_groups(a, torch.zeros(3, 3, 1, dtype=torch.int64), 10, torch.ones(3))
    with pytest.raises(ValueError, match="scale must be a vector of 4 values"):
        K.binary_gemm_groups(a, torch.zeros(2, 4, 1, dtype=torch.int64), 10, torch.ones(3))
