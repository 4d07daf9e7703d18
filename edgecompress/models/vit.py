"""Vision transformers: the float DeiT (Touvron et al. 2021), the binary DeiT baseline and
BinaryViT (Le & Li, CVPR 2023 Workshops, arXiv 2306.16678), one class with switches.

A model is a float patch-embedding conv stem, learned position embeddings (and a CLS token when
``pool="cls"``), one or more stages of pre-norm blocks ``x + A(attention(LN(x)))``,
``x + A(mlp(LN(x)))``, a final LayerNorm, token pooling and a float Linear classifier.
``binary=True`` makes every q/k/v/projection/MLP linear a :class:`BinaryLinearBlock` (binary
weights and inputs, BatchNorm, real shortcut, RPReLU) and the attention products binary
(:class:`AttentionCore`); the stem, norms, position embeddings and classifier stay float.

BinaryViT's four changes, each a switch (the binary DeiT has all four off):

1. ``pool="avg"``: mean over all tokens instead of the CLS token;
2. ``pooling_branches``: four stride-1 average pools of the block input over the token grid,
   kernels 3x1, 1x3, 5x1, 1x5, each times a learnable scalar starting at 0, added to the block
   output (which tensor is pooled is our reading: the block input);
3. ``affine``: per-channel ``x * a + b`` (a = 0.1, b = 0 at start) on the attention and MLP
   outputs right before each residual add;
4. ``pyramid``: stages at halving token grids and growing widths; keys and values of the early
   stages come from average-pooled tokens (kernel = stride = r); stages are joined by a 2x2
   stride-2 patch merging (a binary linear over each 2x2 group of tokens, the same operation as
   the paper's binary 2x2 stride-2 conv), whose shortcut is the 2x2 average pool with channels
   repeated. Needs ``pool="avg"``.

Sizes (``size``; default by image side: "tiny" / "paper" at >= 224, "mini" below):

| pyramid | size  | stem patch   | dims               | depths       | heads      | MLP x | kv r        |
|---------|-------|--------------|--------------------|--------------|------------|-------|-------------|
| no      | tiny  | 16 (4 small) | 192                | 12           | 3          | 4     | -           |
| no      | small | 16 (4 small) | 384                | 12           | 6          | 4     | -           |
| no      | mini  | 16 (4 small) | 64                 | 6            | 2          | 4     | -           |
| yes     | paper | 4 (2 small)  | 64/128/256/512     | 3/4/8/4      | 1/2/4/8    | 8/8/4/4 | 8/4/1/1   |
| yes     | mini  | 4 (2 small)  | 32/64/128/128      | 1/1/2/1      | 1/2/4/4    | 4     | 4/2/1/1     |

``dim``, ``depth`` and ``heads`` override a flat size (e.g. ``size="mini", depth=2`` for tests).
``weight_method`` names the weights' binarization method (``"bnn"``: sign with the clip
straight-through, the spec's; ``"bnn++"`` or any method of
:func:`edgecompress.quantizers.method_pair`, or a mapping with its options such as
``{"name": "pc", "mu": 0.5}``: :func:`edgecompress.layers.transformer.weight_pair`);
``quantize_probs=False`` keeps the attention probabilities float (our switch, to measure the
{0, a} quantizer). The binary DeiT uses the same binary blocks as BinaryViT (our reading: the
ablation rows then differ by one change each).
"paper" is the spec's 224x224 configuration (tokens 56/28/14/7, MLP widths 512/1024/1024/2048).
Small images (side < 224: 28x28 MNIST, 32x32 CIFAR) use a patch of 4 (flat: 7x7 or 8x8 tokens)
or 2 (pyramid: 14x14 or 16x16 tokens). A pyramid keeps as many stages as the grid halves
evenly (56 -> 4 stages, 16 -> 4 stages: 16/8/4/2, 14 -> 2 stages: 14/7), and each stage's kv
reduction r is lowered to gcd(r, grid side) so that the pooling tiles the grid.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.fx
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ModelConfigError
from ..layers.transformer import AttentionCore, BinaryLinearBlock, PoolingBranches, WeightMethod


@dataclass(frozen=True)
class Stage:
    """One stage: width, number of blocks, heads, MLP width factor, key/value pooling r."""

    dim: int
    depth: int
    heads: int
    mlp_ratio: int = 4
    kv_reduction: int = 1


FLAT_SIZES = {"tiny": Stage(192, 12, 3), "small": Stage(384, 12, 6), "mini": Stage(64, 6, 2)}
PYRAMID_SIZES = {
    "paper": (Stage(64, 3, 1, 8, 8), Stage(128, 4, 2, 8, 4), Stage(256, 8, 4, 4),
              Stage(512, 4, 8, 4)),
    "mini": (Stage(32, 1, 1, 4, 4), Stage(64, 1, 2, 4, 2), Stage(128, 2, 4, 4),
             Stage(128, 1, 4, 4)),
}
POOLS = ("cls", "avg")
LARGE_SIDE = 224  # images at least this large get the papers' configurations


def _linear(in_features: int, out_features: int, binary: bool,
            weight_method: WeightMethod) -> nn.Module:
    if binary:
        return BinaryLinearBlock(in_features, out_features, weight_method)
    return nn.Linear(in_features, out_features)


class Affine(nn.Module):
    """Per-channel ``x * a + b`` (a starts at ``scale``, b at 0): BinaryViT's change 3."""

    def __init__(self, dim: int, scale: float = 0.1) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((dim,), scale))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.weight + self.bias


class Attention(nn.Module):
    """q/k/v projections, :class:`AttentionCore`, output projection. With ``kv_reduction`` r > 1
    keys and values are computed from the grid's tokens average-pooled r x r."""

    def __init__(self, dim: int, heads: int, grid: tuple[int, int], kv_reduction: int,
                 binary: bool, weight_method: WeightMethod, quantize_probs: bool) -> None:
        super().__init__()
        self.grid, self.kv_reduction = grid, kv_reduction
        self.q, self.k, self.v, self.proj = (_linear(dim, dim, binary, weight_method)
                                             for _ in range(4))
        self.core = AttentionCore(dim, heads, binary, quantize_probs)

    def forward(self, x: Tensor) -> Tensor:
        kv = x
        if self.kv_reduction > 1:
            image = x.transpose(1, 2).reshape(x.shape[0], x.shape[2], *self.grid)
            kv = F.avg_pool2d(image, self.kv_reduction).flatten(2).transpose(1, 2)
        return self.proj(self.core(self.q(x), self.k(kv), self.v(kv)))


class MLP(nn.Module):
    """Float: Linear -> GELU -> Linear. Binary: two :class:`BinaryLinearBlock` (their RPReLU is
    the nonlinearity)."""

    def __init__(self, dim: int, hidden: int, binary: bool, weight_method: WeightMethod) -> None:
        super().__init__()
        self.fc1 = _linear(dim, hidden, binary, weight_method)
        self.act = nn.Identity() if binary else nn.GELU()
        self.fc2 = _linear(hidden, dim, binary, weight_method)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """``y = x + A1(attn(LN(x)))``, ``y = y + A2(mlp(LN(y)))`` (+ pooling branches of x)."""

    def __init__(self, stage: Stage, grid: tuple[int, int], cls_token: bool, binary: bool,
                 affine: bool, pooling_branches: bool, weight_method: WeightMethod,
                 quantize_probs: bool) -> None:
        super().__init__()
        dim = stage.dim
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, stage.heads, grid, stage.kv_reduction, binary, weight_method,
                              quantize_probs)
        self.mlp = MLP(dim, dim * stage.mlp_ratio, binary, weight_method)
        self.affine1 = Affine(dim) if affine else nn.Identity()
        self.affine2 = Affine(dim) if affine else nn.Identity()
        self.branches = PoolingBranches(grid, cls_token) if pooling_branches else None

    def forward(self, x: Tensor) -> Tensor:
        y = x + self.affine1(self.attn(self.norm1(x)))
        y = y + self.affine2(self.mlp(self.norm2(y)))
        return y if self.branches is None else y + self.branches(x)


class PatchMerging(nn.Module):
    """2x2 stride-2 downsampling of the token grid: each 2x2 group of C-channel tokens becomes
    one 4C vector mapped to ``out_dim``. Binary: a :class:`BinaryLinearBlock` whose shortcut is
    the 2x2 average pool with channels repeated out_dim / C times; float: Linear + LayerNorm."""

    def __init__(self, in_dim: int, out_dim: int, grid: tuple[int, int], binary: bool,
                 weight_method: WeightMethod) -> None:
        super().__init__()
        if out_dim % in_dim:
            raise ModelConfigError(f"pyramid: stage width {out_dim} is not a multiple of the "
                                   f"previous width {in_dim}")
        self.grid, self.binary, self.in_dim = grid, binary, in_dim
        self.reduce = _linear(4 * in_dim, out_dim, binary, weight_method)
        self.norm = nn.Identity() if binary else nn.LayerNorm(out_dim)

    def forward(self, x: Tensor) -> Tensor:
        b, c, (h, w) = x.shape[0], self.in_dim, self.grid
        groups = x.reshape(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 2, 4, 5)
        merged = groups.reshape(b, (h // 2) * (w // 2), 4 * c)
        if not self.binary:
            return self.norm(self.reduce(merged))
        pooled = merged.reshape(b, -1, 4, c).mean(dim=2)
        shortcut = pooled.repeat(1, 1, self.reduce.out_features // c)
        return self.reduce(merged, shortcut)


class VisionTransformer(nn.Module):
    """DeiT / binary DeiT / BinaryViT; see the module docstring for the switches and sizes."""

    def __init__(self, num_classes: int = 10, input_shape: Sequence[int] = (3, 224, 224),
                 size: str | None = None, patch_size: int | None = None, binary: bool = False,
                 pool: str = "cls", pooling_branches: bool = False, affine: bool = False,
                 pyramid: bool = False, weight_method: WeightMethod = "bnn",
                 quantize_probs: bool = True, dim: int | None = None, depth: int | None = None,
                 heads: int | None = None) -> None:
        super().__init__()
        self.input_shape = tuple(input_shape)
        if len(self.input_shape) != 3:
            raise ModelConfigError(f"input_shape must be (channels, height, width), got "
                                   f"{list(input_shape)}")
        channels, height, width = self.input_shape
        large = min(height, width) >= LARGE_SIDE
        if pool not in POOLS:
            raise ModelConfigError(f"pool must be one of {', '.join(POOLS)}, got {pool!r}")
        if pyramid and pool != "avg":
            raise ModelConfigError("pyramid=True needs pool='avg' (tokens are merged between "
                                   f"stages; a CLS token has no place on the grid), got {pool!r}")
        sizes = PYRAMID_SIZES if pyramid else FLAT_SIZES
        size = size if size is not None else ("paper" if pyramid else "tiny") if large else "mini"
        if size not in sizes:
            raise ModelConfigError(f"size {size!r} is not a {'pyramid' if pyramid else 'flat'} "
                                   f"size; with pyramid={pyramid} use one of {', '.join(sizes)}")
        if patch_size is None:
            patch_size = (4 if large else 2) if pyramid else (16 if large else 4)
        if patch_size < 1 or height % patch_size or width % patch_size:
            raise ModelConfigError(f"image size {height}x{width} (input_shape) is not divisible "
                                   f"by patch_size {patch_size}")
        grid = (height // patch_size, width // patch_size)
        overrides = {k: v for k, v in (("dim", dim), ("depth", depth), ("heads", heads))
                     if v is not None}
        if pyramid and overrides:
            raise ModelConfigError(f"{', '.join(overrides)} override a flat size; pyramid sizes "
                                   f"are fixed presets ({', '.join(PYRAMID_SIZES)})")
        for key, value in overrides.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ModelConfigError(f"{key} must be a positive integer, got {value!r}")
        stages = _fit_stages(sizes[size] if pyramid else
                             (dataclasses.replace(sizes[size], **overrides),), grid)
        for stage in stages:
            if stage.dim % stage.heads:
                raise ModelConfigError(f"heads {stage.heads} does not divide the width dim "
                                       f"{stage.dim} (size {size!r}, options heads / dim)")
        self.pool, cls_token = pool, pool == "cls"
        dim0 = stages[0].dim
        self.stem = nn.Conv2d(channels, dim0, patch_size, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim0)) if cls_token else None
        self.pos_embed = nn.Parameter(torch.zeros(1, grid[0] * grid[1] + int(cls_token), dim0))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)
        layers: list[nn.Module] = []
        for i, stage in enumerate(stages):
            if i:
                layers.append(PatchMerging(stages[i - 1].dim, stage.dim, grid, binary,
                                           weight_method))
                grid = (grid[0] // 2, grid[1] // 2)
            layers += [Block(stage, grid, cls_token, binary, affine, pooling_branches,
                             weight_method, quantize_probs) for _ in range(stage.depth)]
        self.blocks = nn.Sequential(*layers)
        self.norm = nn.LayerNorm(stages[-1].dim)
        self.head = nn.Linear(stages[-1].dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits of images x (batch, *input_shape). (The input check runs in eager mode; a
        traced, e.g. frozen and saved, model's graph does not hold it.)"""
        if not isinstance(x, torch.fx.Proxy) and tuple(x.shape[1:]) != self.input_shape:
            raise ModelConfigError(f"{type(self).__name__} was built for inputs "
                                   f"{self.input_shape}, got {tuple(x.shape[1:])}")
        tokens = self.stem(x).flatten(2).transpose(1, 2)
        if self.cls_token is not None:
            tokens = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), tokens], dim=1)
        tokens = self.norm(self.blocks(tokens + self.pos_embed))
        return self.head(tokens[:, 0] if self.pool == "cls" else tokens.mean(dim=1))


def _fit_stages(stages: Sequence[Stage], grid: tuple[int, int]) -> list[Stage]:
    """The stages a grid allows: one more each time both sides halve evenly; kv reduction r
    lowered to gcd(r, side) so the pooling tiles the grid."""
    out, (h, w) = [], grid
    for i, stage in enumerate(stages):
        if i and (h % 2 or w % 2):
            break
        if i:
            h, w = h // 2, w // 2
        r = math.gcd(stage.kv_reduction, math.gcd(h, w))
        out.append(Stage(stage.dim, stage.depth, stage.heads, stage.mlp_ratio, r))
    return out


def deit(num_classes: int = 10, input_shape: Sequence[int] = (3, 224, 224),
         size: str | None = None, patch_size: int | None = None, pool: str = "cls",
         pooling_branches: bool = False, affine: bool = False,
         pyramid: bool = False, dim: int | None = None, depth: int | None = None,
         heads: int | None = None) -> VisionTransformer:
    """Float DeiT (the teacher): CLS token, flat, no BinaryViT changes by default."""
    return VisionTransformer(num_classes, input_shape, size, patch_size, False, pool,
                             pooling_branches, affine, pyramid, dim=dim, depth=depth, heads=heads)


def binary_deit(num_classes: int = 10, input_shape: Sequence[int] = (3, 224, 224),
                size: str | None = None, patch_size: int | None = None, pool: str = "cls",
                pooling_branches: bool = False, affine: bool = False, pyramid: bool = False,
                weight_method: WeightMethod = "bnn", quantize_probs: bool = True,
                dim: int | None = None, depth: int | None = None,
                heads: int | None = None) -> VisionTransformer:
    """The binary DeiT baseline: binary blocks, the four BinaryViT changes off."""
    return VisionTransformer(num_classes, input_shape, size, patch_size, True, pool,
                             pooling_branches, affine, pyramid, weight_method, quantize_probs,
                             dim, depth, heads)


def binaryvit(num_classes: int = 10, input_shape: Sequence[int] = (3, 224, 224),
              size: str | None = None, patch_size: int | None = None, pool: str = "avg",
              pooling_branches: bool = True, affine: bool = True, pyramid: bool = True,
              weight_method: WeightMethod = "bnn", quantize_probs: bool = True,
              dim: int | None = None, depth: int | None = None,
              heads: int | None = None) -> VisionTransformer:
    """BinaryViT: the binary DeiT with all four changes on (each can be switched off; dim /
    depth / heads override a flat size, i.e. with ``pyramid=False``)."""
    return VisionTransformer(num_classes, input_shape, size, patch_size, True, pool,
                             pooling_branches, affine, pyramid, weight_method, quantize_probs,
                             dim, depth, heads)
