"""Packed BinaryViT layers: the inference forms of :class:`~edgecompress.layers.CenteredBinaryLinear`
and :class:`~edgecompress.layers.AttentionCore` (``edgecompress.layers.transformer``).

- :class:`PackedCenteredBinaryLinear`: the signs of the mean-centred weights, 1 bit each, with the
  per-row alpha as the GEMM's per-column scale; with a learnable-threshold input quantizer it
  packs ``sign(x + b)`` (the threshold added in the packing pass, the same float sum as the
  training form's) and runs the W1A1 XOR-popcount GEMM, whose integer count times alpha is
  exactly the training form's ``A(x) F(C)^T * alpha``.
- :class:`PackedBinaryLinearBlock`: the whole :class:`~edgecompress.layers.BinaryLinearBlock`,
  its linear packed as above and the BatchNorm, shortcut addition and RPReLU after it in one
  pass over the GEMM's output (:func:`~edgecompress.kernels.block_epilogue`, the training
  form's float operations in their order: the BatchNorm not folded).
- :class:`PackedAttentionCore`: binary attention with q, k, v packed per head; ``q k^T`` on the
  W1A1 GEMM (all samples and heads in one call, times 1/sqrt(d) in its store), the softmax in
  float (torch), the {0, a} probabilities as bit masks and ``P v`` by AND-popcount
  (:func:`~edgecompress.kernels.mask_matmul`), written with the heads merged; the thresholds'
  sums, the head split, the probabilities' quantization and the values' transposition happen
  in the packing passes (:func:`~edgecompress.kernels.pack_head_signs`,
  :func:`~edgecompress.kernels.pack_prob_masks`, :func:`~edgecompress.kernels.pack_value_columns`).

- :class:`PackedPoolingBranches`: the four pooling branches in one pass over the tokens.

What stays float in a frozen BinaryViT: the patch-embedding stem, the position embeddings, the
LayerNorms and the BatchNorms after the binary linears (not folded, so the outputs stay
bit-exact), the real-valued shortcuts, RPReLU, the affine and pooling branches, the
key/value average pooling, the softmax, and the classifier head. A float attention
(``binary=False``) or float probabilities (``quantize_probs=False``) run the training form's
torch operations.

Every output equals the training form's in eval mode bit for bit (``torch.equal``): the binary
products are integer counts, exact in float32 whatever the summation order, and the training form
applies its scales after them in the same rounding steps (see the layers' forward). A
CenteredBinaryLinear without an input quantizer (W1A32) is the exception: its float sums run in
another order than torch's, so it agrees to float rounding only.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .. import kernels
import torch.nn.functional as F

from ..layers.transformer import (AttentionCore, BinaryLinearBlock, CenteredBinaryLinear,
                                  LearnableThresholdSign, PoolingBranches)
from .binary import PackedBinaryLinear
from .packed import PackedLayer, register_packed


@register_packed(CenteredBinaryLinear)
class PackedCenteredBinaryLinear(PackedBinaryLinear):
    """The packed :class:`CenteredBinaryLinear`: a :class:`PackedBinaryLinear` whose weights are
    sign(W - rowmean W), whose scale is alpha, and which adds the learnable threshold b of its
    input quantizer (``threshold=True``) before taking the sign."""

    def __init__(self, in_features: int, out_features: int, *, binary_inputs: bool,
                 threshold: bool = False, has_scale: bool = True, bias: bool = False,
                 emit_signs: bool = False,
                 fused_clamp: tuple[float, float] | None = None) -> None:
        super().__init__(in_features, out_features, binary_inputs=binary_inputs,
                         has_scale=has_scale, bias=bias, emit_signs=emit_signs,
                         fused_clamp=fused_clamp)
        self.register_buffer("threshold", torch.zeros(in_features) if threshold else None)

    @staticmethod
    def _options(layer: CenteredBinaryLinear) -> dict[str, Any]:  # type: ignore[override]
        return dict(binary_inputs=layer.input_quantizer is not None,
                    threshold=isinstance(layer.input_quantizer, LearnableThresholdSign))

    def _config(self) -> dict[str, Any]:
        return {**super()._config(), "threshold": self.threshold is not None}

    def _fill_from(self, layer: CenteredBinaryLinear) -> None:  # type: ignore[override]
        """Signs of the centred weights; alpha computed as the training form computes it."""
        with torch.no_grad():
            centered = layer.centered_weight()
            self.bits.copy_(kernels.pack_signs(layer.discrete_weight()))
            self.scale.copy_(centered.abs().mean(dim=1))
            if self.threshold is not None:
                self.threshold.copy_(layer.input_quantizer.bias)
        self.prepare()

    @property
    def signs_layout(self) -> str | None:
        """None with a threshold: the layer needs its float input, not a previous layer's signs."""
        return None if self.threshold is not None else super().signs_layout

    def _input_offset(self) -> Tensor | None:
        """The threshold, added in the packing pass (the same float sum as the training form's)."""
        return self.threshold


@register_packed(BinaryLinearBlock)
class PackedBinaryLinearBlock(PackedLayer):
    """The packed :class:`BinaryLinearBlock`: ``RPReLU(BN(linear(x)) + shortcut(x))`` with the
    linear a :class:`PackedCenteredBinaryLinear` (child ``linear``) and BatchNorm, shortcut
    addition and RPReLU in one in-place pass over its output
    (:func:`~edgecompress.kernels.block_epilogue`). The BatchNorm is kept as torch's CPU kernel
    applies it, ``fma(y, a, b)`` with its own factor a and offset b (read from torch's
    BatchNorm at freeze time), not folded into the GEMM's scale: that would round differently
    from the training form. The shortcut is read from the input in place: repeated (widening)
    or the mean of its groups (narrowing), computed in the epilogue's pass in torch's order.

    With ``block_affine`` (set by :func:`~edgecompress.deploy.freeze` through
    :meth:`fuse_block_affine`) the layer also computes what follows it in a transformer block,
    ``block_input + (out * block_scale + block_bias)`` (BinaryViT's affine and residual after
    the attention's projection or the MLP), in the same pass, and takes ``block_input`` as its
    third argument."""

    def __init__(self, in_features: int, out_features: int, block_affine: bool = False) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.linear = PackedCenteredBinaryLinear(in_features, out_features, binary_inputs=True,
                                                 threshold=True)
        for name in ("bn_factor", "bn_offset", "shift_in", "slope", "shift_out"):
            self.register_buffer(name, torch.zeros(out_features))
        for name in ("block_scale", "block_bias"):
            self.register_buffer(name, torch.zeros(out_features) if block_affine else None)

    @classmethod
    def from_trained(cls, layer: BinaryLinearBlock) -> "PackedBinaryLinearBlock":
        new = cls(layer.in_features, layer.out_features)
        new.linear = PackedCenteredBinaryLinear.from_trained(layer.linear)
        bn, n = layer.norm, layer.out_features
        with torch.no_grad():  # torch's own factor and offset: BN(1) with mean 0 and bias 0, BN(0)
            new.bn_factor.copy_(F.batch_norm(torch.ones(1, n), torch.zeros(n), bn.running_var,
                                             bn.weight, torch.zeros(n), False, 0.0, bn.eps)[0])
            new.bn_offset.copy_(bn.eval()(torch.zeros(1, n))[0])
            for name in ("shift_in", "slope", "shift_out"):
                getattr(new, name).copy_(getattr(layer.act, name))
        return new

    def config(self) -> dict[str, Any]:
        return dict(in_features=self.in_features, out_features=self.out_features,
                    block_affine=self.block_scale is not None)

    def fuse_block_affine(self, scale: Tensor, bias: Tensor) -> None:
        """Compute ``block_input + (out * scale + bias)`` in the epilogue from now on."""
        with torch.no_grad():
            self.block_scale = scale.detach().float().clone()
            self.block_bias = bias.detach().float().clone()

    def encode_tensor(self, name: str, value: Tensor) -> Tensor:
        if name.startswith("linear."):
            return self.linear.encode_tensor(name[len("linear."):], value)
        return value

    def decode_tensor(self, name: str, stored: Tensor) -> Tensor:
        if name.startswith("linear."):
            return self.linear.decode_tensor(name[len("linear."):], stored)
        return stored

    def forward(self, x: Tensor, shortcut: Tensor | None = None,
                block_input: Tensor | None = None) -> Tensor:
        y = self.linear(x)
        if shortcut is None:
            shortcut = x  # repeated along the channels, or its groups averaged, by the kernel
        residual = shortcut.reshape(-1, shortcut.shape[-1])
        out = kernels.block_epilogue(
            y.reshape(-1, self.out_features), residual, self.bn_factor, self.bn_offset,
            self.shift_in, self.slope, self.shift_out,
            block_input=None if block_input is None else block_input.reshape(-1, self.out_features),
            block_scale=self.block_scale, block_bias=self.block_bias)
        return out.view(y.shape)

    def edgecompress_params(self) -> dict[int, int]:
        params = dict(self.linear.edgecompress_params())
        params[32] = params.get(32, 0) + 5 * self.out_features
        return params

    def edgecompress_macs(self, inputs: tuple, output: Tensor) -> dict[str, int]:
        return self.linear.edgecompress_macs(inputs, output)


@register_packed(PoolingBranches)
class PackedPoolingBranches(PackedLayer):
    """The packed :class:`PoolingBranches`: the four scaled pools in one pass over the
    channel-last tokens (:func:`~edgecompress.kernels.pool_branches`), bit for bit the training
    form's avg_pool2d expression; a CLS token (first) gets 0. With a second argument ``base``
    (set up by :func:`~edgecompress.deploy.freeze` for the block's ``y + branches(x)``) it
    returns ``base + branches(x)``, added in the same pass."""

    def __init__(self, grid: tuple[int, int], cls_token: bool) -> None:
        super().__init__()
        self.grid, self.skip = tuple(grid), int(cls_token)
        self.register_buffer("scales", torch.zeros(len(PoolingBranches.KERNELS)))

    @classmethod
    def from_trained(cls, layer: PoolingBranches) -> "PackedPoolingBranches":
        new = cls(layer.grid, bool(layer.skip))
        with torch.no_grad():
            new.scales.copy_(layer.scales)
        return new

    def config(self) -> dict[str, Any]:
        return dict(grid=list(self.grid), cls_token=bool(self.skip))

    def forward(self, x: Tensor, base: Tensor | None = None) -> Tensor:
        if not self.skip:
            return kernels.pool_branches(x, self.grid, self.scales, base=base)
        out = F.pad(kernels.pool_branches(x[:, self.skip:], self.grid, self.scales),
                    (0, 0, self.skip, 0))
        return out if base is None else base + out


@register_packed(AttentionCore)
class PackedAttentionCore(PackedLayer):
    """The packed :class:`AttentionCore` (see the module docstring); q (B, N, C), k and v
    (B, S, C) -> (B, N, C). Buffers: the q / k / v thresholds (binary) and a (``quantize_probs``).
    It reports the training form's products (:meth:`AttentionCore.edgecompress_macs`)."""

    def __init__(self, dim: int, heads: int, binary: bool, quantize_probs: bool) -> None:
        super().__init__()
        self.dim, self.heads, self.binary = dim, heads, binary
        self.quantize_probs = binary and quantize_probs
        self.head_dim = dim // heads
        self.scale = self.head_dim ** -0.5
        for name in ("q_threshold", "k_threshold", "v_threshold"):
            self.register_buffer(name, torch.zeros(dim) if binary else None)
        self.register_buffer("alpha", torch.tensor(0.0) if self.quantize_probs else None)

    @classmethod
    def from_trained(cls, layer: AttentionCore) -> "PackedAttentionCore":
        new = cls(layer.dim, layer.heads, layer.binary, layer.quantize_probs)
        with torch.no_grad():
            if layer.binary:
                for name in ("q", "k", "v"):
                    getattr(new, f"{name}_threshold").copy_(getattr(layer, f"{name}_sign").bias)
            if new.quantize_probs:
                new.alpha.copy_(layer.probs_quantizer.alpha)
        return new

    def config(self) -> dict[str, Any]:
        return dict(dim=self.dim, heads=self.heads, binary=self.binary,
                    quantize_probs=self.quantize_probs)

    edgecompress_macs = AttentionCore.edgecompress_macs

    def _split(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], x.shape[1], self.heads, -1).transpose(1, 2)

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        if not self.binary:  # the training form's float attention
            q, k, v = self._split(q), self._split(k), self._split(v)
            out = torch.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1) @ v
            return out.transpose(1, 2).reshape(out.shape[0], out.shape[2], -1)
        b, n, s = q.shape[0], q.shape[1], k.shape[1]
        scale = torch.full((s,), self.scale)
        scores = kernels.binary_gemm_groups(
            kernels.pack_head_signs(q, self.q_threshold, self.heads),
            kernels.pack_head_signs(k, self.k_threshold, self.heads), self.head_dim, scale)
        probs = torch.softmax(scores.view(b, self.heads, n, s), dim=-1)
        if not self.quantize_probs:  # float probabilities times +-1 values, in torch
            signs = torch.where(v + self.v_threshold >= 0, 1.0, -1.0)
            out = probs @ self._split(signs)
            return out.transpose(1, 2).reshape(b, n, -1)
        alpha = float(self.alpha)  # the float32 value, read once
        masks = kernels.pack_prob_masks(probs.view(-1, s), alpha).view(b * self.heads, n, -1)
        vneg = kernels.pack_value_columns(v, self.v_threshold, self.heads)
        return kernels.mask_matmul(masks, vneg, self.heads, alpha)

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, heads={self.heads}, binary={self.binary}, "
                f"quantize_probs={self.quantize_probs}")
