"""Binary attention's packing passes (q / k per head, the {0, a} probability masks, the values
along the keys): every path equals its reference bit for bit on ragged shapes, and each
reference is the training form's torch expression."""

from __future__ import annotations

import pytest
import torch

from edgecompress import kernels as K
from edgecompress.layers.transformer import ZeroOrAlpha

PATHS = K.supported_paths()
# (samples, tokens, heads, head dim): head dims and token counts below, at and past a 64-bit
# word and the vector widths, odd ones included
HEAD_SHAPES = [(1, 1, 1, 1), (2, 5, 3, 3), (1, 9, 2, 17), (2, 7, 1, 64), (1, 65, 2, 33),
               (3, 4, 1, 130), (1, 130, 4, 70)]
# (rows, keys)
MASK_SHAPES = [(1, 1), (3, 7), (5, 63), (4, 64), (2, 65), (6, 130), (3, 200)]


def _floats(*shape: int, seed: int) -> torch.Tensor:
    """Random floats with exact zeros and negative zeros mixed in."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g)
    x.view(-1)[::7] = 0.0
    x.view(-1)[3::11] = -0.0
    return x


def _offset_cancelling(x: torch.Tensor, seed: int) -> torch.Tensor:
    """A per-channel offset that makes some sums exactly 0 (their sign bit must be 0)."""
    offset = _floats(x.shape[-1], seed=seed)
    x.view(-1, x.shape[-1])[0] = -offset
    return offset


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("b, t, heads, d", HEAD_SHAPES)
@pytest.mark.parametrize("with_offset", [True, False])
def test_pack_head_signs_paths_bit_exact(path, b, t, heads, d, with_offset):
    x = _floats(b, t, heads * d, seed=1)
    offset = _offset_cancelling(x, seed=2) if with_offset else None
    expected = K.pack_head_signs_reference(x, offset, heads)
    assert torch.equal(K.pack_head_signs(x, offset, heads, path=path), expected)
    # the reference: per head, the rows of pack_signs of the training form's sum
    summed = x if offset is None else x + offset
    for h in range(heads):
        rows = K.pack_signs_reference(summed[:, :, h * d:(h + 1) * d].reshape(-1, d))
        assert torch.equal(expected.view(b, heads, t, -1)[:, h].reshape(b * t, -1), rows)


def _probabilities(rows: int, keys: int, alpha: float, seed: int) -> torch.Tensor:
    """Softmax rows with values at and one float step around alpha / 2 (the rounding edge),
    0, alpha, above alpha and NaN mixed in."""
    g = torch.Generator().manual_seed(seed)
    p = torch.softmax(torch.randn(rows, keys, generator=g) * 3, dim=-1)
    half = torch.tensor(alpha / 2)
    edge = torch.stack([half, torch.nextafter(half, torch.tensor(1.0)),
                        torch.nextafter(half, torch.tensor(0.0)), torch.tensor(0.0),
                        torch.tensor(alpha), torch.tensor(2 * alpha + 0.1),
                        torch.tensor(float("nan"))])
    flat = p.view(-1)
    picks = torch.randint(0, flat.numel(), (min(flat.numel(), 3 * len(edge)),), generator=g)
    flat[picks] = edge.repeat(3)[:len(picks)]
    return p


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("rows, keys", MASK_SHAPES)
@pytest.mark.parametrize("alpha", [0.3, 0.0123, 1.0])
def test_pack_prob_masks_paths_bit_exact(path, rows, keys, alpha):
    p = _probabilities(rows, keys, alpha, seed=rows * keys)
    quantizer = ZeroOrAlpha(alpha)
    with torch.no_grad():
        expected = K.pack_signs_reference(-quantizer.codes(p))
    a = quantizer.alpha.detach()
    assert torch.equal(K.pack_prob_masks_reference(p, a), expected)
    for threads in (1, 2):
        assert torch.equal(K.pack_prob_masks(p, a, path=path, threads=threads), expected)


@pytest.mark.parametrize("b, s, heads, d", HEAD_SHAPES)
@pytest.mark.parametrize("with_offset", [True, False])
def test_pack_value_columns_bit_exact(b, s, heads, d, with_offset):
    v = _floats(b, s, heads * d, seed=5)
    offset = _offset_cancelling(v, seed=6) if with_offset else None
    expected = K.pack_value_columns_reference(v, offset, heads)
    for threads in (1, 2):
        assert torch.equal(K.pack_value_columns(v, offset, heads, threads=threads), expected)
    # the reference: channel h d + c of key j is bit j % 64 of word j // 64 of (n heads + h, c)
    summed = v if offset is None else v + offset
    n, j, h, c = b - 1, s - 1, heads - 1, d - 1
    word = int(expected[n * heads + h, j // 64, c])
    assert bool((word >> (j % 64)) & 1) == bool(summed[n, j, h * d + c] < 0)


def test_bad_operands_are_rejected_clearly():
    with pytest.raises(ValueError, match=r"pack_head_signs needs a \(B, T, heads \* d\)"):
        K.pack_head_signs(torch.zeros(2, 3, 5), None, 2)
    with pytest.raises(ValueError, match="offset must be a vector of 6 values"):
        K.pack_value_columns(torch.zeros(2, 3, 6), torch.zeros(5), 2)
    with pytest.raises(ValueError, match="pack_prob_masks expects a 2-D tensor"):
        K.pack_prob_masks(torch.zeros(2, 3, 4), 0.5)
