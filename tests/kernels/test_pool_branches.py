"""BinaryViT's pooling-branch kernel: every path equals torch's avg_pool2d expression (the
training form's) bit for bit, on ragged grids, channel counts and token slices."""

from __future__ import annotations

import pytest
import torch

from edgecompress import kernels as K

PATHS = K.supported_paths()
# (batch, grid, channels): grids smaller than the 5-wide kernels, odd channel counts
SHAPES = [(1, (1, 1), 1), (2, (2, 3), 5), (1, (4, 4), 17), (3, (7, 5), 64), (2, (8, 8), 33),
          (1, (14, 14), 128)]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("b, grid, c", SHAPES)
def test_pool_branches_paths_bit_exact(path, b, grid, c):
    g = torch.Generator().manual_seed(c)
    x = torch.randn(b, 1 + grid[0] * grid[1], c, generator=g) * 3
    scales = torch.randn(4, generator=g)
    tokens = x[:, 1:]  # a slice after a CLS token: batch stride larger than the grid
    expected = K.pool_branches_reference(tokens, grid, scales)
    for threads in (1, 2):
        assert torch.equal(K.pool_branches(tokens, grid, scales, path=path, threads=threads),
                           expected)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("b, grid, c", SHAPES)
def test_pool_branches_added_to_a_base_bit_exact(path, b, grid, c):
    """``base + branches(x)`` (a BinaryViT block's end) in the pooling pass equals torch's
    addition of the two, on every path."""
    g = torch.Generator().manual_seed(c + 1)
    tokens, base = torch.randn(2, b, grid[0] * grid[1], c, generator=g)
    scales = torch.randn(4, generator=g)
    expected = base + K.pool_branches_reference(tokens, grid, scales)
    assert torch.equal(K.pool_branches_reference(tokens, grid, scales, base), expected)
    for threads in (1, 2):
        assert torch.equal(K.pool_branches(tokens, grid, scales, base=base, path=path,
                                           threads=threads), expected)


def test_pool_branches_reference_is_a_weighted_average_of_neighbours():
    x = torch.arange(6.0).view(1, 6, 1)  # grid 2x3, one channel: [[0, 1, 2], [3, 4, 5]]
    out = K.pool_branches_reference(x, (2, 3), torch.tensor([0.0, 1.0, 0.0, 0.0]))
    # 1x3 pool (row neighbours): token 0 -> (0 + 1) / 2, token 1 -> (0 + 1 + 2) / 3
    assert out[0, :2, 0].tolist() == [0.5, 1.0]


def test_pool_branches_checks_shapes():
    with pytest.raises(ValueError, match="grid 2x3"):
        K.pool_branches(torch.zeros(1, 5, 2), (2, 3), torch.zeros(4))
    with pytest.raises(ValueError, match=r"base of the tokens' shape.*base \(1, 6, 3\)"):
        K.pool_branches(torch.zeros(1, 6, 2), (2, 3), torch.zeros(4), base=torch.zeros(1, 6, 3))
