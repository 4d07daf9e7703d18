"""BinaryViT's binary-block epilogue (BatchNorm + shortcut + RPReLU in one pass): its reference
is the training form's torch operations, and every path equals the reference bit for bit."""

from __future__ import annotations

import pytest
import torch

from edgecompress import kernels as K
from edgecompress.layers.transformer import BinaryLinearBlock, RPReLU
from edgecompress.models.vit import Affine

PATHS = K.supported_paths()

# (rows, channels, shortcut width): vector-width tails, one row, repeated shortcuts, and
# narrowing ones (k C wide: the mean of k groups; odd widths, k = 3 / 4 / 8)
EPILOGUE_SHAPES = [(1, 1, 1), (3, 7, 7), (5, 17, None), (9, 64, 64), (4, 96, 32),
                   (2, 130, 65), (33, 512, 64), (1, 20, 4), (3, 7, 28), (5, 17, 68),
                   (33, 64, 512), (2, 130, 260), (1, 5, 15)]


def _block_parts(m: int, c: int, rc: int | None, seed: int):
    g = torch.Generator().manual_seed(seed)
    y = torch.randn(m, c, generator=g) * 20
    y[0, 0] = 0.0
    residual = None if rc is None else torch.randn(m, rc, generator=g)
    bn = torch.nn.BatchNorm1d(c).eval()
    with torch.no_grad():
        bn.running_mean.normal_(generator=g)
        bn.running_var.uniform_(0.1, 3.0, generator=g)
        bn.weight.normal_(generator=g)
        bn.bias.normal_(generator=g)
    rprelu = [torch.randn(c, generator=g) for _ in range(3)]
    return y, residual, bn, rprelu


def _bn_factors(bn: torch.nn.BatchNorm1d) -> tuple[torch.Tensor, torch.Tensor]:
    c = bn.num_features
    a = torch.nn.functional.batch_norm(torch.ones(1, c), torch.zeros(c), bn.running_var,
                                       bn.weight, torch.zeros(c), False, 0.0, bn.eps)[0]
    return a, bn(torch.zeros(1, c))[0]


@pytest.mark.parametrize("m, c, rc", EPILOGUE_SHAPES)
def test_block_epilogue_reference_is_the_training_forms_torch_operations(m, c, rc):
    y, residual, bn, (g, slope, z) = _block_parts(m, c, rc, seed=3)
    act = RPReLU(c)
    with torch.no_grad():
        act.shift_in.copy_(g), act.slope.copy_(slope), act.shift_out.copy_(z)
        if residual is None:
            shortcut = 0.0
        elif rc <= c:
            shortcut = residual.repeat(1, c // rc)
        else:  # BinaryLinearBlock's narrowing shortcut
            block = BinaryLinearBlock(rc, c)
            shortcut = block.shortcut(residual)
        expected = act(bn(y) + shortcut)
    a, b = _bn_factors(bn)
    assert torch.equal(K.block_epilogue_reference(y, residual, a, b, g, slope, z), expected)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("m, c, rc", EPILOGUE_SHAPES)
def test_block_epilogue_paths_bit_exact(path, m, c, rc):
    y, residual, bn, (g, slope, z) = _block_parts(m, c, rc, seed=4)
    a, b = _bn_factors(bn)
    expected = K.block_epilogue_reference(y, residual, a, b, g, slope, z)
    for threads in (1, 2):
        out = y.clone()
        got = K.block_epilogue(out, residual, a, b, g, slope, z, path=path, threads=threads)
        assert got.data_ptr() == out.data_ptr() and torch.equal(got, expected)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("m, c, rc", EPILOGUE_SHAPES)
def test_block_epilogue_with_the_block_affine_and_residual(path, m, c, rc):
    """``x + (epilogue * s + t)``, a transformer block's affine and residual (BinaryViT's Affine
    after the attention or MLP): the reference is the training form's expression, and every
    path equals it bit for bit."""
    y, residual, bn, (g, slope, z) = _block_parts(m, c, rc, seed=5)
    a, b = _bn_factors(bn)
    gen = torch.Generator().manual_seed(6)
    block_input, scale, bias = torch.randn(m, c, generator=gen), *torch.randn(2, c, generator=gen)
    affine = Affine(c)
    with torch.no_grad():
        affine.weight.copy_(scale), affine.bias.copy_(bias)
        expected = block_input + affine(K.block_epilogue_reference(y, residual, a, b, g, slope, z))
    assert torch.equal(K.block_epilogue_reference(y, residual, a, b, g, slope, z, block_input,
                                                  scale, bias), expected)
    for threads in (1, 2):
        got = K.block_epilogue(y.clone(), residual, a, b, g, slope, z, block_input=block_input,
                               block_scale=scale, block_bias=bias, path=path, threads=threads)
        assert torch.equal(got, expected)


def test_block_epilogue_checks_shapes():
    y = torch.zeros(4, 6)
    vectors = [torch.zeros(6)] * 5
    for width in (4, 9):
        with pytest.raises(ValueError, match="residual"):
            K.block_epilogue(y, torch.zeros(4, width), *vectors)
    with pytest.raises(ValueError, match="6 values"):
        K.block_epilogue(y, None, *vectors[:4], torch.zeros(5))
    with pytest.raises(ValueError, match="together or none"):
        K.block_epilogue(y, None, *vectors, block_input=torch.zeros(4, 6),
                         block_scale=torch.zeros(6))
    with pytest.raises(ValueError, match=r"block_input \(M, C\) = \(4, 6\)"):
        K.block_epilogue(y, None, *vectors, block_input=torch.zeros(4, 5),
                         block_scale=torch.zeros(6), block_bias=torch.zeros(6))
