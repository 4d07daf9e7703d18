"""The kernel functions: check the arguments, run the C kernel, or its reference without it.

Every function here validates its tensors (clear ValueErrors naming the argument and shape),
then calls the compiled library through :mod:`._loader` on the path asked for (``path=``
"scalar", "avx2" or "avx512"; by default the best this CPU runs) and with ``threads`` OpenMP
threads; when the library is not built it returns the result of the matching function in
:mod:`.reference` instead (and the loader warns once). A kernel that fails raises the exception
of its status code: RuntimeError for a path this CPU cannot run, MemoryError when it ran out of
memory. (:mod:`.ops` wraps some of these functions as torch custom operators.)
"""

from __future__ import annotations

import ctypes
import functools

import torch
from torch import Tensor

from ._loader import (BinaryConvArgs, ConvF32Plan, PatchPlan, by_reference, check_status,
                      library, load, load_error, path_code)
from .reference import (PANEL, adder_input_grad_reference, euclid_patch_reference,
                        euclid_shift_reference, euclid_patch_grad_reference,
                        int8_conv_reference,
                        binary_gemm_affine_reference, block_epilogue_reference,
                        pool_branches_reference, binary_gemm_groups_reference,
                        binary_gemm_reference, binary_gemm_signs_reference,
                        conv2d_direct_reference, im2col_signs_reference, mask_matmul_reference,
                        im2col_words_reference, pack_panels_reference, pack_pixels_reference,
                        lowbit_codes_reference, lowbit_gemm_reference, lowbit_lane,
                        pack_head_signs_reference, pack_prob_masks_reference,
                        pack_signs_reference, pack_value_columns_reference,
                        sign_panels_rows_reference, unpack_bits_reference,
                        w1a32_gemm_reference, words)


def _set_gemm_block_bytes(size: int) -> None:
    """Cache-block size of the W1A1 GEMM's weight panels in bytes (default 256 KiB; tests use
    tiny blocks to exercise the blocking on small shapes)."""
    lib = load()
    if lib is not None:
        lib.ec_set_gemm_block_bytes(int(size))


#: where binary_conv corrects for zero padding instead of gathering the border windows
PAD_CORRECTION_MODES = {"avx512": 0, "always": 1, "never": 2}


def _set_pad_correction(mode: str) -> None:
    """Where :func:`binary_conv` corrects for zero padding ("avx512": on that path only, the
    default; "always"; "never": border windows gathered with masks): the same bits every way;
    tests run each path both ways."""
    lib = load()
    if lib is not None:
        lib.ec_set_pad_correction(PAD_CORRECTION_MODES[mode])


def _check_packed(name: str, t: Tensor, cols: int) -> Tensor:
    if t.dtype != torch.int64 or t.dim() != 2 or t.shape[1] != cols:
        raise ValueError(f"{name} must be an int64 tensor of packed rows (R, {cols}), got "
                         f"{t.dtype} {tuple(t.shape)}")
    return t.contiguous()


def _check_vectors(n: int, **vectors: Tensor | None) -> None:
    """Per-output-column vectors (scale, bias) must hold n values."""
    for name, t in vectors.items():
        if t is not None and (t.dim() != 1 or t.shape[0] != n):
            raise ValueError(f"{name} must be a vector of {n} values, got shape {tuple(t.shape)}")


def _float32(t: Tensor | None) -> Tensor | None:
    """A contiguous float32 copy (or view) for the C kernels, or None (the tensor itself when it
    already is one: this runs on every call of a layer)."""
    if t is None or (t.dtype == torch.float32 and t.is_contiguous()):
        return t
    return t.detach().to(torch.float32).contiguous()


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


# --- packing ------------------------------------------------------------------------------------

def pack_signs(x: Tensor, offset: Tensor | None = None, *, path: str | None = None) -> Tensor:
    """Pack the signs of a float32 (rows, k) tensor into (rows, ceil(k / 64)) int64 words
    (bit 1 where x < 0); with ``offset`` (k values, e.g. a learnable threshold) the signs of
    ``x + offset``, added in the packing pass (the same float sum as torch's, then compared).
    ``path`` forces "scalar", "avx2" or "avx512"."""
    if x.dim() != 2:
        raise ValueError(f"pack_signs expects a 2-D tensor (rows, k), got shape {tuple(x.shape)}")
    _check_vectors(x.shape[1], offset=offset)
    lib = library()
    if lib is None:
        return pack_signs_reference(x, offset)
    x, offset = _float32(x.detach()), _float32(offset)
    out = torch.empty(x.shape[0], words(x.shape[1]), dtype=torch.int64)
    status = lib.ec_pack_signs(x.data_ptr(), _ptr(offset), x.shape[0], x.shape[1],
                               out.data_ptr(), path_code(path))
    check_status(status, "pack_signs", path)
    return out


# --- W1A1: XOR-popcount GEMM on packed +-1 rows ---------------------------------------------------

def pack_panels(b: Tensor) -> Tensor:
    """Row-packed weights (N, W) -> the GEMM's panel layout (ceil(N / 16), W, 16): the words of
    16 consecutive rows side by side, missing rows zero. Do it once per layer (freeze time)."""
    lib = load()
    if lib is None:
        return pack_panels_reference(b)
    n, kw = b.shape
    b = b.contiguous()
    out = torch.empty(-(-n // PANEL), kw, PANEL, dtype=torch.int64)
    lib.ec_pack_panels(b.data_ptr(), n, kw, out.data_ptr())
    return out


def binary_gemm(a: Tensor, b: Tensor, k: int, mask: Tensor | None = None, *,
                panels: Tensor | None = None, path: str | None = None,
                threads: int | None = None) -> Tensor:
    """``C[m, n] = sum over valid j of a[m, j] * b[n, j]`` for packed +-1 rows; int32 (M, N).

    a: (M, W) packed activations; b: (N, W) packed weights; k: number of real values per row
    (bits beyond them must be 0 in both a and b; unused when a mask is given); mask: optional
    (M, W) packed validity bits; panels: ``pack_panels(b)`` if already computed;
    path: force "scalar", "avx2" or "avx512"; threads: OpenMP threads (default:
    torch.get_num_threads()).
    """
    return _gemm(a, b, k, mask, panels, path, threads, "int32")


def binary_gemm_affine(a: Tensor, b: Tensor, k: int, mask: Tensor | None = None,
                       scale: Tensor | None = None, bias: Tensor | None = None, *,
                       residual: Tensor | None = None, clamp: tuple[float, float] | None = None,
                       panels: Tensor | None = None, path: str | None = None,
                       threads: int | None = None) -> Tensor:
    """float32 (M, N) ``binary_gemm(a, b, k, mask).float() * scale + bias`` (per output column;
    either may be None), then ``+ residual`` (M, N) and ``.clamp(*clamp)`` if given (a residual
    addition and a hardtanh or ReLU), all computed in the GEMM's store loop instead of separate
    passes over memory."""
    return _gemm(a, b, k, mask, panels, path, threads, "float32", scale, bias, residual, clamp)


def binary_gemm_signs(a: Tensor, b: Tensor, k: int, mask: Tensor | None = None,
                      scale: Tensor | None = None, bias: Tensor | None = None, *,
                      panels: Tensor | None = None, path: str | None = None,
                      threads: int | None = None) -> Tensor:
    """``pack_signs(binary_gemm_affine(a, b, k, mask, scale, bias))`` without the float tensor:
    (M, ceil(N / 64)) int64 words, bit 1 where the affine value is < 0. This is the input a
    following binary layer needs when only the sign of this layer's output is used (BatchNorm
    folded into scale and bias, then a sign-preserving activation such as hardtanh)."""
    return _gemm(a, b, k, mask, panels, path, threads, "signs", scale, bias)


# output form of the W1A1 GEMM -> (dtype, columns of the result for N outputs); in the order of
# ec_binary_gemm's output pointers (c, cf, cs)
_GEMM_OUTPUTS = {"int32": (torch.int32, lambda n: n), "float32": (torch.float32, lambda n: n),
                 "signs": (torch.int64, words)}


def _gemm(a: Tensor, b: Tensor, k: int, mask: Tensor | None, panels: Tensor | None,
          path: str | None, threads: int | None, output: str, scale: Tensor | None = None,
          bias: Tensor | None = None, residual: Tensor | None = None,
          clamp: tuple[float, float] | None = None) -> Tensor:
    """The GEMM with its output form: "int32" dot products, "float32" affine values, or the
    "signs" of the affine values, packed."""
    kw = a.shape[1] if a.dim() == 2 else -1
    if kw * 64 < k:
        raise ValueError(f"k = {k} values do not fit in rows of {kw} words")
    a = _check_packed("a", a, kw)
    m = a.shape[0]
    if mask is not None:
        mask = _check_packed("mask", mask, kw)
        if mask.shape[0] != m:
            raise ValueError(f"mask has {mask.shape[0]} rows but a has {m}")
    b = _check_epilogue(m, kw, b, scale, bias, residual, clamp)
    lib = library()
    if lib is None:
        return _gemm_reference(output, a, b, k, mask, scale, bias, residual, clamp)
    out, args, _operands = _gemm_arguments(m, b, panels, output, scale, bias, residual, clamp)
    bp, *epilogue = args
    status = lib.ec_binary_gemm(a.data_ptr(), _ptr(mask), bp, m, b.shape[0], kw, k, *epilogue,
                                path_code(path), threads or torch.get_num_threads())
    check_status(status, f"binary_gemm ({output} output)", path)
    return out


def _check_epilogue(m: int, kw: int, b: Tensor, scale: Tensor | None, bias: Tensor | None,
                    residual: Tensor | None, clamp: tuple[float, float] | None) -> Tensor:
    """Check the weights (N, kw) and the epilogue's operands of an M-row GEMM; the weights,
    contiguous."""
    b = _check_packed("b", b, kw)
    n = b.shape[0]
    _check_vectors(n, scale=scale, bias=bias)
    if residual is not None and tuple(residual.shape) != (m, n):
        raise ValueError(f"residual must have shape {(m, n)}, got {tuple(residual.shape)}")
    if clamp is not None and not clamp[0] <= clamp[1]:
        raise ValueError(f"clamp needs lo <= hi, got {clamp}")
    return b


def _gemm_reference(output: str, a: Tensor, b: Tensor, k: int, mask: Tensor | None,
                    scale: Tensor | None, bias: Tensor | None, residual: Tensor | None,
                    clamp: tuple[float, float] | None) -> Tensor:
    if output == "int32":
        return binary_gemm_reference(a, b, k, mask)
    if output == "float32":
        return binary_gemm_affine_reference(a, b, k, mask, scale, bias, residual, clamp)
    return binary_gemm_signs_reference(a, b, k, mask, scale, bias)


def _gemm_arguments(m: int, b: Tensor, panels: Tensor | None, output: str,
                    scale: Tensor | None, bias: Tensor | None, residual: Tensor | None,
                    clamp: tuple[float, float] | None) -> tuple[Tensor, list, tuple]:
    """The output tensor of an M-row GEMM and the C arguments from the weight panels on
    (bp, then c, cf, cs, scale, bias, res, clamp, lo, hi), and the tensors those pointers point
    into, which the caller holds until the call returns."""
    n, kw = b.shape
    if panels is None:
        panels = pack_panels(b)
    elif tuple(panels.shape) != (-(-n // PANEL), kw, PANEL):
        raise ValueError(f"panels have shape {tuple(panels.shape)}, expected "
                         f"{(-(-n // PANEL), kw, PANEL)} for b {tuple(b.shape)}")
    scale, bias, residual = _float32(scale), _float32(bias), _float32(residual)
    dtype, columns = _GEMM_OUTPUTS[output]
    out = torch.empty(m, columns(n), dtype=dtype)
    targets = [out.data_ptr() if output == form else None for form in _GEMM_OUTPUTS]
    return out, [panels.data_ptr(), *targets, _ptr(scale), _ptr(bias), _ptr(residual),
                 int(clamp is not None), *(clamp or (0.0, 0.0))], (panels, scale, bias, residual)


# --- binary attention: batches of q k^T and the {0, a} x +-1 product ----------------------------

def binary_gemm_groups(a: Tensor, b: Tensor, k: int, scale: Tensor, *, path: str | None = None,
                       threads: int | None = None) -> Tensor:
    """A batch of W1A1 GEMMs: float32 (G, M, N), group g being
    ``binary_gemm_affine(a[g], b[g], k, scale=scale)`` (e.g. q k^T * 1/sqrt(d) of every sample and
    head of binary attention). a: (G, M, W), b: (G, N, W) packed rows (bits beyond k zero);
    scale: N values. Threads take whole groups."""
    if a.dim() != 3 or b.dim() != 3 or a.shape[0] != b.shape[0] or a.shape[2] != b.shape[2]:
        raise ValueError(f"binary_gemm_groups needs a (G, M, W) and b (G, N, W), got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    groups, m, kw = a.shape
    n = b.shape[1]
    if a.dtype != torch.int64 or b.dtype != torch.int64 or kw * 64 < k:
        raise ValueError(f"a and b must be int64 packed rows of {words(k)} words for k = {k}, "
                         f"got {a.dtype} and {b.dtype} with {kw} words")
    _check_vectors(n, scale=scale)
    lib = library()
    if lib is None:
        return binary_gemm_groups_reference(a, b, k, scale)
    a, b, scale = a.contiguous(), b.contiguous(), _float32(scale)
    out = torch.empty(groups, m, n, dtype=torch.float32)
    status = lib.ec_binary_gemm_groups(a.data_ptr(), b.data_ptr(), groups, m, n, kw, k,
                                       out.data_ptr(), scale.data_ptr(), path_code(path),
                                       threads or torch.get_num_threads())
    check_status(status, "binary_gemm_groups", path)
    return out


def _check_heads(name: str, x: Tensor, offset: Tensor | None, heads: int) -> tuple[int, int, int]:
    """(B, T, C) of a (B, T, heads d) float tensor with an optional C-value offset."""
    if x.dim() != 3 or heads < 1 or x.shape[2] % heads:
        raise ValueError(f"{name} needs a (B, T, heads * d) tensor with heads = {heads} "
                         f"dividing its last size, got shape {tuple(x.shape)}")
    _check_vectors(x.shape[2], offset=offset)
    return x.shape[0], x.shape[1], x.shape[2]


def pack_head_signs(x: Tensor, offset: Tensor | None, heads: int, *,
                    path: str | None = None) -> Tensor:
    """Binary attention's q / k operand: the signs of ``x + offset`` (B, T, heads d), each
    head's d values of a token packed as one row, (B heads, T, ceil(d / 64)) int64 words. The
    sum and compare are :func:`pack_signs`'s (the training form's float sum, then ``< 0``), and
    the head split is read in place instead of a transposed copy. Bit-exact against
    :func:`~.reference.pack_head_signs_reference`."""
    b, t, c = _check_heads("pack_head_signs", x, offset, heads)
    lib = library()
    if lib is None:
        return pack_head_signs_reference(x, offset, heads)
    x, offset = _float32(x.detach()), _float32(offset)
    out = torch.empty(b * heads, t, words(c // heads), dtype=torch.int64)
    status = lib.ec_pack_head_signs(x.data_ptr(), _ptr(offset), b, t, heads, c // heads,
                                    out.data_ptr(), path_code(path))
    check_status(status, "pack_head_signs", path)
    return out


def pack_prob_masks(p: Tensor, alpha: Tensor | float, *, path: str | None = None,
                    threads: int | None = None) -> Tensor:
    """The bit masks of binary attention's {0, alpha} probabilities: float32 rows p (R, S) ->
    (R, ceil(S / 64)) int64, bit j of row i set where the quantizer's code
    ``round(clamp(p / alpha, 0, 1))`` is 1. Computed as ``p / alpha > 0.5`` (the same float
    division; torch's round takes 0.5 to 0, half to even) without the intermediate tensors.
    Bit-exact against :func:`~.reference.pack_prob_masks_reference`."""
    if p.dim() != 2:
        raise ValueError(f"pack_prob_masks expects a 2-D tensor (rows, keys), got shape "
                         f"{tuple(p.shape)}")
    lib = library()
    if lib is None:
        return pack_prob_masks_reference(p, alpha)
    p = _float32(p.detach())
    out = torch.empty(p.shape[0], words(p.shape[1]), dtype=torch.int64)
    status = lib.ec_pack_prob_masks(p.data_ptr(), float(alpha), p.shape[0], p.shape[1],
                                    out.data_ptr(), path_code(path),
                                    threads or torch.get_num_threads())
    check_status(status, "pack_prob_masks", path)
    return out


def pack_value_columns(v: Tensor, offset: Tensor | None, heads: int, *,
                       threads: int | None = None) -> Tensor:
    """Binary attention's value operand of :func:`mask_matmul`: the signs of ``v + offset``
    (B, S, heads d) packed along the S keys, (B heads, ceil(S / 64), d) int64 words, in one pass
    over v (no permuted copy); the same sum and compare as :func:`pack_signs`. Bit-exact against
    :func:`~.reference.pack_value_columns_reference`."""
    b, s, c = _check_heads("pack_value_columns", v, offset, heads)
    lib = library()
    if lib is None:
        return pack_value_columns_reference(v, offset, heads)
    v, offset = _float32(v.detach()), _float32(offset)
    out = torch.empty(b * heads, words(s), c // heads, dtype=torch.int64)
    status = lib.ec_pack_value_columns(v.data_ptr(), _ptr(offset), b, s, heads, c // heads,
                                       out.data_ptr(), threads or torch.get_num_threads())
    check_status(status, "pack_value_columns", None)
    return out


def mask_matmul(masks: Tensor, vneg: Tensor, heads: int, alpha: float, *,
                path: str | None = None, threads: int | None = None) -> Tensor:
    """Binary attention's ``P v`` for P in {0, alpha} and v in {-1, +1}, heads merged:
    float32 (B, M, heads * d) with ``out[b, i, h d + c] = (popcount(mask_i) - 2 popcount(mask_i
    & vneg_c)).float() * alpha`` for group g = b heads + h.

    masks: (G, M, SW) int64, bit j of row i set where P[i, j] = alpha (pack_signs of -codes);
    vneg: (G, SW, d) int64, word w of every channel c side by side, bit j set where v[j, c] = -1
    (bits past the S keys are 0 in masks, so any value there is ignored); G = B * heads."""
    if (masks.dim() != 3 or vneg.dim() != 3 or masks.shape[0] != vneg.shape[0]
            or masks.shape[2] != vneg.shape[1] or masks.dtype != torch.int64
            or vneg.dtype != torch.int64 or heads < 1 or masks.shape[0] % heads):
        raise ValueError(f"mask_matmul needs int64 masks (G, M, SW) and vneg (G, SW, d) with G "
                         f"a multiple of heads = {heads}, got masks {masks.dtype} "
                         f"{tuple(masks.shape)} and vneg {vneg.dtype} {tuple(vneg.shape)}")
    groups, m, sw = masks.shape
    d = vneg.shape[2]
    lib = library()
    if lib is None:
        return mask_matmul_reference(masks, vneg, heads, d, alpha)
    masks, vneg = masks.contiguous(), vneg.contiguous()
    out = torch.empty(groups // heads, m, heads * d, dtype=torch.float32)
    status = lib.ec_mask_matmul(masks.data_ptr(), vneg.data_ptr(), groups // heads, heads, m, d,
                                sw, float(alpha), out.data_ptr(), path_code(path),
                                threads or torch.get_num_threads())
    check_status(status, "mask_matmul", path)
    return out


# --- the float epilogue of a binary linear block (BinaryViT) ------------------------------------

def block_epilogue(y: Tensor, residual: Tensor | None, a: Tensor, b: Tensor, g: Tensor,
                   slope: Tensor, z: Tensor, *, block_input: Tensor | None = None,
                   block_scale: Tensor | None = None, block_bias: Tensor | None = None,
                   path: str | None = None, threads: int | None = None) -> Tensor:
    """``RPReLU(BN(y) + residual)`` of float32 rows y (M, C), returned; the C kernel writes it
    in place when y is a contiguous float32 tensor (the reference returns a new one): ``v = fma(y, a, b) + residual[:, c % R]`` then
    ``u = v - g``, ``where(u >= 0, u, slope * u) + z``, one pass over memory (``block_epilogue.c``).

    a, b: the BatchNorm's per-channel factor and offset as torch's CPU BatchNorm computes them
    (it applies them with one fused multiply-add); residual: (M, R) with R dividing C (the input
    repeated C / R times: BinaryViT's widening shortcut), or None; g, slope, z: RPReLU's
    parameters (C values each). A residual (M, k C) is a narrowing block's input: its
    shortcut, the mean of the k groups of C columns, is computed in the same pass (the sum in
    torch's order, from 0 group by group, then divided by k). With ``block_input`` (M, C) and
    ``block_scale``, ``block_bias`` (C values each) the result r continues as a transformer
    block's ``block_input + (r * block_scale + block_bias)`` (BinaryViT's affine and residual
    after the attention or MLP, torch's three operations), in the same pass. Bit-exact against
    :func:`~.reference.block_epilogue_reference` on every path."""
    if y.dim() != 2 or (residual is not None and (
            residual.dim() != 2 or residual.shape[0] != y.shape[0] or residual.shape[1] < 1
            or (y.shape[1] % residual.shape[1] and residual.shape[1] % y.shape[1]))):
        raise ValueError(f"block_epilogue needs y (M, C) and a residual (M, R) with R dividing C"
                         f" or C dividing R, got y {tuple(y.shape)} and residual "
                         f"{None if residual is None else tuple(residual.shape)}")
    m, c = y.shape
    _check_vectors(c, a=a, b=b, g=g, slope=slope, z=z, block_scale=block_scale,
                   block_bias=block_bias)
    if (block_input is None) != (block_scale is None) or (block_input is None) != (
            block_bias is None) or (block_input is not None and block_input.shape != y.shape):
        raise ValueError(f"block_epilogue needs block_input (M, C) = {tuple(y.shape)}, "
                         f"block_scale and block_bias together or none of them, got "
                         f"block_input {None if block_input is None else tuple(block_input.shape)}"
                         f" with{'out' if block_scale is None else ''} block_scale and "
                         f"with{'out' if block_bias is None else ''} block_bias")
    lib = library()
    if lib is None:
        return block_epilogue_reference(y, residual, a, b, g, slope, z, block_input,
                                        block_scale, block_bias)
    y, residual, block_input = _float32(y), _float32(residual), _float32(block_input)
    a, b, g, slope, z, block_scale, block_bias = (
        _float32(t) for t in (a, b, g, slope, z, block_scale, block_bias))
    status = lib.ec_block_epilogue(y.data_ptr(), _ptr(residual), m, c,
                                   c if residual is None else residual.shape[1], a.data_ptr(),
                                   b.data_ptr(), g.data_ptr(), slope.data_ptr(), z.data_ptr(),
                                   _ptr(block_input), _ptr(block_scale), _ptr(block_bias),
                                   path_code(path), threads or torch.get_num_threads())
    check_status(status, "block_epilogue", path)
    return y


def pool_branches(x: Tensor, grid: tuple[int, int], scales: Tensor, *,
                  base: Tensor | None = None, path: str | None = None,
                  threads: int | None = None) -> Tensor:
    """BinaryViT's pooling branches of tokens x (B, H W, C) on an H x W grid: float32
    (B, H W, C), ``sum_i scales[i] * avgpool_i`` for the stride-1 average pools 3x1, 1x3, 5x1,
    1x5 (zero padding not counted), in one pass over channel-last memory (``pool_branches.c``)
    instead of four pools of a transposed image; bit-exact against
    :func:`~.reference.pool_branches_reference` (torch's avg_pool2d) on every path. x may be a
    slice of a larger token tensor (rows contiguous, any batch stride). With ``base`` (x's
    shape) the result is ``base + branches`` (a transformer block's ``y + branches(x)``), added
    in the same pass."""
    h, w = grid
    if (x.dim() != 3 or x.shape[1] != h * w or scales.shape != (4,)
            or (base is not None and base.shape != x.shape)):
        raise ValueError(f"pool_branches needs tokens (B, {h * w}, C) for the grid {h}x{w}, "
                         f"4 scales and a base of the tokens' shape, got x {tuple(x.shape)}, "
                         f"scales {tuple(scales.shape)} and base "
                         f"{None if base is None else tuple(base.shape)}")
    lib = library()
    if lib is None:
        return pool_branches_reference(x, grid, scales, base)
    c = x.shape[2]
    if x.dtype != torch.float32 or x.stride(2) != 1 or x.stride(1) != c:
        x = x.to(torch.float32).contiguous()
    scales = scales.detach().to(torch.float32).contiguous()
    base = _float32(base)
    out = torch.empty(x.shape, dtype=torch.float32)
    status = lib.ec_pool_branches(x.data_ptr(), x.stride(0), x.shape[0], h, w, c,
                                  scales.data_ptr(), _ptr(base), out.data_ptr(), h * w * c,
                                  path_code(path),
                                  threads or torch.get_num_threads())
    check_status(status, "pool_branches", path)
    return out


class EuclidPatchPlan:
    """:func:`euclid_patch` / :func:`euclid_patch_grad` for one geometry: the shapes of x and y
    (n, c, g, h, w, c_out / g, oh, ow, kh, kw, sh, sw, ph, pw, checked once), their layouts
    (``y_last``: y's, or its gradient's; ``x_last``: x's and the input gradient's; 1 for
    channels-last), path and threads, handed to the C kernel as one pointer (a ctypes call
    converting twenty arguments costs as much as the term itself at batch 4 on small maps).
    :meth:`forward` and :meth:`backward` call the kernel without checking their tensors: the
    caller passes float32 CPU tensors of the plan's shapes and layouts (``shift``, ``weight``,
    ``bias`` contiguous float32 or None), with the library loaded. Made by :func:`euclid_patch`
    and its gradient (cached per geometry), and by layers that call the kernel on every
    forward (:class:`~edgecompress.layers.euclid.EuclidConvPlan`)."""

    def __init__(self, x: torch.Size, y: torch.Size, kernel: tuple[int, int],
                 stride: tuple[int, int], padding: tuple[int, int], groups: int = 1,
                 y_last: int = 0, x_last: int = 0, path: str | None = None,
                 threads: int | None = None, *, name: str = "euclid_patch") -> None:
        if (len(x) != 4 or len(y) != 4 or x[0] != y[0] or groups < 1 or x[1] % groups
                or y[1] % groups):
            raise ValueError(f"{name} needs x (N, C, H, W) and y (N, C_out, Ho, Wo) with "
                             f"{groups} group(s) dividing C and C_out, got x {tuple(x)} and y "
                             f"{tuple(y)}")
        out = tuple(conv_output_size(x[2 + d], kernel[d], stride[d], padding[d], 1)
                    for d in range(2))
        if (any(p > k // 2 or p < 0 for p, k in zip(padding, kernel)) or min(stride) < 1
                or tuple(y[2:]) != out):
            raise ValueError(f"{name}: kernel {kernel}, stride {stride} and padding {padding} "
                             f"(at most half the kernel) give an output {out} from x "
                             f"{tuple(x)}, y is {tuple(y)}")
        n, c, h, w = x
        self.path, self.threads = path, threads or torch.get_num_threads()
        self._args = PatchPlan(n, c, groups, h, w, y[1] // groups, *out, *kernel, *stride,
                               *padding, y_last, x_last, path_code(path), self.threads)
        self._ptr = by_reference(self._args)

    def forward(self, y: Tensor, x: Tensor, half: float, shift: Tensor | None = None,
                weight: Tensor | None = None, bias: Tensor | None = None) -> Tensor:
        """y rewritten in place: ``(y + shift) - half * P`` (see :func:`euclid_patch`)."""
        status = load().ec_euclid_patch_planned(self._ptr, y.data_ptr(), x.data_ptr(),
                                                _ptr(shift), _ptr(weight), _ptr(bias), half)
        if status:
            check_status(status, "euclid_patch", self.path)
        return y

    def backward(self, grad: Tensor, x: Tensor, out: Tensor, add: bool, half: float) -> Tensor:
        """``out`` written (or, with ``add``, added to) with the term's input gradient (see
        :func:`euclid_patch_grad`)."""
        status = load().ec_euclid_patch_grad_planned(self._ptr, grad.data_ptr(), x.data_ptr(),
                                                     out.data_ptr(), add, half)
        if status:
            check_status(status, "euclid_patch_grad", self.path)
        return out


@functools.lru_cache(maxsize=256)
def _patch_plan(name: str, x: torch.Size, y: torch.Size, kernel: tuple[int, int],
                stride: tuple[int, int], padding: tuple[int, int], groups: int, y_last: int,
                x_last: int, path: str | None, threads: int) -> EuclidPatchPlan:
    """The :class:`EuclidPatchPlan` of a geometry (cached: a layer asks with the same
    arguments on every call; ``name`` is the function named in errors)."""
    return EuclidPatchPlan(x, y, kernel, stride, padding, groups, y_last, x_last, path, threads,
                           name=name)


def _layout(t: Tensor) -> int | None:
    """0 contiguous, 1 channels-last (and not contiguous), None: neither, or not float32 CPU."""
    if t.dtype != torch.float32 or not t.is_cpu:
        return None
    if t.is_contiguous():
        return 0
    return 1 if t.is_contiguous(memory_format=torch.channels_last) else None


def _float_value(half: float | Tensor) -> float:
    """half for a float32 argument of a kernel: a float32 tensor's value, or a Python number,
    which ctypes rounds to float32 as torch rounds a scalar factor of a float32 tensor."""
    if isinstance(half, Tensor):
        return half.item() if half.dtype == torch.float32 else float(half.float())
    return float(half)


def euclid_patch(y: Tensor, x: Tensor, half: float | Tensor, kernel: tuple[int, int],
                 stride: tuple[int, int], padding: tuple[int, int], groups: int = 1, *,
                 shift: Tensor | None = None, weight: Tensor | None = None,
                 bias: Tensor | None = None, path: str | None = None,
                 threads: int | None = None) -> Tensor:
    """EuclidNet's per-patch term of a convolution with input x (N, C, H, W) and output y (N,
    C_out, Ho, Wo): ``y - half * P``, P the sum over every kernel window (zero padding) of the
    group's channel sum of x^2, each group's P subtracted from its C_out / groups channels.
    With a per-channel ``shift`` (C_out values), ``(y + shift) - half * P``: the GEMM form's
    b - theta/2 ||w||^2, so the convolution runs without a bias; or, without a shift, with the
    convolution's ``weight`` (and ``bias`` or None) the kernel computes that shift itself (a
    forward pass then costs one call after the convolution; see
    :func:`~.reference.euclid_shift_reference` for its order).
    The C kernel (``euclid_patch.c``: one pass over x, one over y) writes y in place when x and
    y are float32 CPU tensors held contiguous or channels-last; else, or without the library,
    :func:`~.reference.euclid_patch_reference` returns a new tensor; the two agree bit for bit.
    Padding at most half the kernel, dilation 1; y's size must be the convolution's."""
    kernel, stride, padding = tuple(kernel), tuple(stride), tuple(padding)
    y_last, x_last = _layout(y), _layout(x)
    plan = _patch_plan("euclid_patch", x.shape, y.shape, kernel, stride, padding, groups,
                       y_last or 0, x_last or 0, path, threads or torch.get_num_threads())
    channels = y.shape[1]
    if shift is not None and shift.shape != (channels,):
        raise ValueError(f"euclid_patch: shift needs one value per output channel "
                         f"({channels},), got {tuple(shift.shape)}")
    if shift is None and weight is not None and (
            weight.shape != (channels, x.shape[1] // groups, *kernel)
            or (bias is not None and bias.shape != (channels,))):
        raise ValueError(f"euclid_patch: weight needs the shape "
                         f"{(channels, x.shape[1] // groups, *kernel)} and bias ({channels},), "
                         f"got {tuple(weight.shape)} and "
                         f"{None if bias is None else tuple(bias.shape)}")
    if y_last is None or x_last is None or library() is None:
        if shift is None and weight is not None:
            shift = euclid_shift_reference(weight, bias, half)
        return euclid_patch_reference(y, x, half, kernel, stride, padding, groups, shift)
    if shift is not None:
        weight = bias = None
    shift, weight, bias = _float32(shift), _float32(weight), _float32(bias)
    return plan.forward(y, x, _float_value(half), shift, weight, bias)


def euclid_patch_grad(grad: Tensor, x: Tensor, half: float | Tensor, kernel: tuple[int, int],
                      stride: tuple[int, int], padding: tuple[int, int], groups: int = 1, *,
                      add_to: Tensor | None = None, path: str | None = None,
                      threads: int | None = None) -> Tensor:
    """The input gradient of :func:`euclid_patch`'s term from the output's gradient ``grad``
    (y's shape): the gradient summed over each group's channels, negated, times half, spread
    back over every window (avg_pool2d's backward), times 2 x; a new tensor in x's layout, by
    the C kernel (one pass over grad, one over x) or
    :func:`~.reference.euclid_patch_grad_reference`, bit for bit the same. With ``add_to``
    (x's shape, e.g. the convolution's own input gradient) the result is ``add_to + term``,
    written into ``add_to`` when it is float32 in x's layout (no second pass, no new tensor)."""
    kernel, stride, padding = tuple(kernel), tuple(stride), tuple(padding)
    g_last, x_last = _layout(grad), _layout(x)
    plan = _patch_plan("euclid_patch_grad", x.shape, grad.shape, kernel, stride, padding,
                       groups, g_last or 0, x_last or 0, path,
                       threads or torch.get_num_threads())
    if add_to is not None and add_to.shape != x.shape:
        raise ValueError(f"euclid_patch_grad: add_to needs x's shape {tuple(x.shape)}, got "
                         f"{tuple(add_to.shape)}")
    if g_last is None or x_last is None or library() is None or (
            add_to is not None and _layout(add_to) != x_last):
        term = euclid_patch_grad_reference(grad, x, half, kernel, stride, padding, groups)
        return term if add_to is None else add_to + term
    out = add_to if add_to is not None else torch.empty_like(
        x, memory_format=torch.channels_last if x_last else torch.contiguous_format)
    return plan.backward(grad, x, out, add_to is not None, _float_value(half))


# --- W1A32: binary weights, float activations ----------------------------------------------------

def sign_panels(b: Tensor, k: int) -> Tensor:
    """Row-packed weights (N, W) -> the W1A32 GEMM's "sign panels": int16 (ceil(N / 16), k),
    entry [p, t] with bit j set when weight (16 p + j, t) is -1."""
    n = b.shape[0]
    neg = unpack_bits_reference(b, k).to(torch.int32)  # (N, k), 1 where -1
    padded = torch.zeros(-(-n // 16) * 16, k, dtype=torch.int32)
    padded[:n] = neg
    masks = (padded.view(-1, 16, k) << torch.arange(16, dtype=torch.int32).view(1, 16, 1)).sum(1)
    return masks.to(torch.int16)


def w1a32_gemm(x: Tensor, panels: Tensor, n: int, scale: Tensor | None = None,
               bias: Tensor | None = None, *, path: str | None = None,
               threads: int | None = None) -> Tensor:
    """``x @ S.T * scale + bias`` for float x (M, K) and +-1 weights S (N, K) given as
    ``panels = sign_panels(b, K)``: the sign-select W1A32 product, 1 bit per weight read.
    float32 (M, N). ``path`` forces "scalar", "avx2" or "avx512"."""
    if x.dim() != 2 or panels.dim() != 2 or panels.dtype != torch.int16 \
            or panels.shape != (-(-n // 16), x.shape[1]):
        raise ValueError(f"w1a32_gemm needs x (M, K) and int16 sign panels ({-(-n // 16)}, K), "
                         f"got x {tuple(x.shape)} and panels {panels.dtype} "
                         f"{tuple(panels.shape)}")
    _check_vectors(n, scale=scale, bias=bias)
    lib = library()
    m, k = x.shape
    if lib is None:
        return w1a32_gemm_reference(x, sign_panels_rows_reference(panels, n), k, scale, bias)
    x, scale, bias = _float32(x), _float32(scale), _float32(bias)
    panels = panels.contiguous()  # kept alive through the call
    out = torch.empty(m, n, dtype=torch.float32)
    status = lib.ec_w1a32_gemm(x.data_ptr(), panels.data_ptr(), m, n, k,
                               _ptr(scale), _ptr(bias), out.data_ptr(), path_code(path),
                               threads or torch.get_num_threads())
    check_status(status, "w1a32_gemm", path)
    return out


# --- low-bit weights: 2-4-bit codes decoded through a value table ---------------------------------

LOWBIT_BITS = (2, 3, 4)  # code widths the low-bit GEMM takes
LOWBIT_MAX_ROWS = 16  # the batch up to which a layer runs it (beyond, the decoded float weights)


def _check_lowbit_bits(bits: int) -> None:
    if bits not in LOWBIT_BITS:
        raise ValueError(f"the low-bit GEMM takes codes of {LOWBIT_BITS} bits, got bits={bits}")


def lowbit_panels(codes: Tensor, bits: int) -> Tensor:
    """Weight codes (N, K) (integers in [0, 2^bits)) -> the low-bit GEMM's panels: uint8
    (ceil(N / 16), ceil(K / per), 16), byte [p, g, j] holding the codes of output 16 p + j
    for k = per g + i in bits [lane i, lane (i + 1)), with lane = 2 bits for 2-bit codes and 4
    for 3- and 4-bit ones and per = 8 / lane; missing outputs and k code 0. Do it once per
    layer (freeze or load time)."""
    _check_lowbit_bits(bits)
    if codes.dim() != 2 or codes.is_floating_point() or codes.is_complex():
        raise ValueError(f"lowbit_panels needs integer codes (N, K), got {codes.dtype} "
                         f"{tuple(codes.shape)}")
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= 2 ** bits):
        raise ValueError(f"lowbit_panels: codes must lie in [0, {2 ** bits}) for {bits} bits, got "
                         f"[{int(codes.min())}, {int(codes.max())}]")
    n, k = codes.shape
    lane = lowbit_lane(bits)
    per = 8 // lane
    groups = -(-k // per)
    padded = torch.zeros(-(-n // 16) * 16, groups * per, dtype=torch.int32)
    padded[:n, :k] = codes.to(torch.int32)
    fields = padded.view(-1, 16, groups, per) << (torch.arange(per, dtype=torch.int32) * lane)
    return fields.sum(-1).permute(0, 2, 1).to(torch.uint8).contiguous()


def lowbit_gemm(x: Tensor, panels: Tensor, table: Tensor, n: int, bits: int,
                scale: Tensor | None = None, bias: Tensor | None = None, *,
                path: str | None = None, threads: int | None = None) -> Tensor:
    """``x @ W.T * scale + bias`` for float rows x (M, K) and weights ``W = table[codes]``
    (N, K) given as ``panels = lowbit_panels(codes, bits)`` (2, 3 or 4 bits; ``table``: the
    2^bits float values): float32 (M, N), the codes decoded in registers (``gemm_lowbit.c``).
    Bit-exact with :func:`~.reference.lowbit_gemm_reference` on every path (one accumulator
    per output over k in order, unfused); meant for small M (a layer uses it up to
    ``LOWBIT_MAX_ROWS`` rows). ``path`` forces "scalar", "avx2" or "avx512"."""
    _check_lowbit_bits(bits)
    if x.dim() != 2 or not x.is_floating_point():
        raise ValueError(f"lowbit_gemm needs float rows x (M, K), got {x.dtype} "
                         f"{tuple(x.shape)}")
    m, k = x.shape
    per = 8 // lowbit_lane(bits)
    expected = (-(-n // 16), -(-k // per), 16)
    if panels.dtype != torch.uint8 or tuple(panels.shape) != expected:
        raise ValueError(f"lowbit_gemm needs uint8 low-bit panels {expected} for {n} outputs, "
                         f"K = {k} and {bits} bits, got panels {panels.dtype} "
                         f"{tuple(panels.shape)}")
    if table.dim() != 1 or table.shape[0] != 2 ** bits or not table.is_floating_point():
        raise ValueError(f"lowbit_gemm needs a float table of {2 ** bits} values for {bits} bits,"
                         f" got {table.dtype} {tuple(table.shape)}")
    _check_vectors(n, scale=scale, bias=bias)
    lib = library()
    if lib is None:
        return lowbit_gemm_reference(x, lowbit_codes_reference(panels, n, k, bits), table, scale,
                                     bias)
    x, table, scale, bias = _float32(x), _float32(table), _float32(scale), _float32(bias)
    panels = panels.contiguous()  # kept alive through the call
    out = torch.empty(m, n, dtype=torch.float32)
    status = lib.ec_lowbit_gemm(x.data_ptr(), panels.data_ptr(), table.data_ptr(),
                                bits, m, n, k, _ptr(scale), _ptr(bias), out.data_ptr(),
                                path_code(path), threads or torch.get_num_threads())
    check_status(status, "lowbit_gemm", path)
    return out


# --- binary convolution operands -----------------------------------------------------------------

def conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """Output length of a convolution along one dimension (as torch computes it)."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def pack_conv_weights(weight: Tensor) -> Tensor:
    """(N, C, kh, kw) float -> (N, kh * kw * ceil(C / 64)) words in the im2col order of
    :func:`im2col_signs` (kernel row, kernel column, channel; channels padded per pixel)."""
    n, c, kh, kw = weight.shape
    cw = words(c)
    padded = torch.ones(n, kh, kw, cw * 64)
    padded[..., :c] = weight.detach().permute(0, 2, 3, 1)
    return pack_signs(padded.reshape(n, -1))[:, : kh * kw * cw].contiguous()


def pack_pixels(x: Tensor) -> Tensor:
    """Signs of the channels of every pixel of x (n, c, h, w), packed: (n, h, w, ceil(c / 64))
    int64 words, by the C kernel from x held channels-last (a pixel's channels contiguous) or
    contiguous (other layouts are made contiguous first)."""
    n, c, h, w = x.shape
    lib = library()
    if lib is None:
        return pack_pixels_reference(x)
    x = x.detach().to(torch.float32)
    last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    if not last:
        x = x.contiguous()
    pixels = torch.empty(n, h, w, words(c), dtype=torch.int64)
    status = lib.ec_pack_pixels(x.data_ptr(), int(last), n, c, h, w, 1, 1, h, w,
                                pixels.data_ptr(), path_code(None), 0)
    check_status(status, "pack_pixels", None)
    return pixels


def im2col_signs(x: Tensor, kernel: tuple[int, int], stride: tuple[int, int],
                 padding: tuple[int, int], dilation: tuple[int, int],
                 masked: bool = True) -> tuple[Tensor, Tensor | None]:
    """Packed im2col rows of sign(x) for a binary convolution, and their validity mask.

    x: (n, c, h, w) float, any memory format (channels-last is fastest). Rows:
    (n * oh * ow, kh * kw * ceil(c / 64)) words in (kernel row, kernel column, channel) order;
    the mask marks the channel bits of pixels inside the image (``masked=False`` skips it, which
    is exact when there is no padding).
    """
    if library() is None:
        return im2col_signs_reference(x, kernel, stride, padding, dilation, masked)
    return im2col_words(pack_pixels(x), x.shape[1], kernel, stride, padding, dilation, masked)


def im2col_words(pixels: Tensor, channels: int, kernel: tuple[int, int],
                 stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int],
                 masked: bool = True) -> tuple[Tensor, Tensor | None]:
    """:func:`im2col_signs` from already packed pixels (n, h, w, ceil(channels / 64)), as
    :func:`pack_pixels` or a binary layer's sign output produce them. An unmasked 1x1
    convolution with stride 1 needs no gathering: its rows are the pixels themselves."""
    n, h, w, cw = pixels.shape
    if pixels.dtype != torch.int64 or cw != words(channels):
        raise ValueError(f"packed pixels must be int64 (n, h, w, {words(channels)}) for "
                         f"{channels} channels, got {pixels.dtype} {tuple(pixels.shape)}")
    lib = library()
    if lib is None:
        return im2col_words_reference(pixels, channels, kernel, stride, padding, dilation, masked)
    pixels = pixels.contiguous()
    if not masked and tuple(kernel) == (1, 1) and tuple(stride) == (1, 1):
        return pixels.view(n * h * w, cw), None
    oh = conv_output_size(h, kernel[0], stride[0], padding[0], dilation[0])
    ow = conv_output_size(w, kernel[1], stride[1], padding[1], dilation[1])
    rows = torch.empty(n * oh * ow, kernel[0] * kernel[1] * cw, dtype=torch.int64)
    mask = torch.empty_like(rows) if masked else None
    lib.ec_im2col_words(pixels.data_ptr(), n, channels, h, w, kernel[0], kernel[1], stride[0],
                        stride[1], padding[0], padding[1], dilation[0], dilation[1],
                        rows.data_ptr(), _ptr(mask))
    return rows, mask


def _binary_conv_output(h: int, w: int, kernel: tuple[int, int], stride: tuple[int, int],
                        padding: tuple[int, int],
                        dilation: tuple[int, int]) -> tuple[int, int]:
    """The checked output size (oh, ow) of a binary convolution of an h x w input."""
    geometry = (*kernel, *stride, *padding, *dilation)
    if len(geometry) != 8 or min(geometry) < 0 or 0 in (*kernel, *stride, *dilation):
        raise ValueError(f"kernel, stride, padding, dilation must be pairs of positive ints "
                         f"(padding >= 0), got {kernel}, {stride}, {padding}, {dilation}")
    oh = conv_output_size(h, kernel[0], stride[0], padding[0], dilation[0])
    ow = conv_output_size(w, kernel[1], stride[1], padding[1], dilation[1])
    if oh < 1 or ow < 1:
        raise ValueError(f"a {kernel} window (padding {padding}, dilation {dilation}) does not "
                         f"fit the {h}x{w} input")
    return oh, ow


def conv_tap_popcounts(panels: Tensor, n_out: int, kernel: tuple[int, int],
                       channels: int) -> Tensor | None:
    """Per kernel tap and output column, the number of -1 weights there: (kh kw, n_out) int64
    from a convolution's GEMM panels (:func:`pack_panels` of :func:`pack_conv_weights`), what a
    padding tap adds to a column's XOR count in :func:`binary_conv`'s padding correction, which
    takes it as ``tap_pop`` (a layer computes it once instead of at every call). None where the
    correction does not run (no C library, a kernel of more than 64 rows or columns)."""
    lib = library()
    taps = kernel[0] * kernel[1]
    if lib is None or max(kernel) > 64:
        return None
    if panels.dtype != torch.int64 or tuple(panels.shape) != (-(-n_out // PANEL),
                                                              taps * words(channels), PANEL):
        raise ValueError(f"panels of shape {tuple(panels.shape)} do not hold {n_out} columns of "
                         f"{kernel} taps of {channels} channels")
    out = torch.empty(taps, n_out, dtype=torch.int64)
    panels = panels.contiguous()  # kept alive through the call
    lib.ec_conv_tap_popcounts(panels.data_ptr(), n_out, taps, words(channels), out.data_ptr())
    return out


def binary_conv(pixels: Tensor, channels: int, b: Tensor, kernel: tuple[int, int],
                stride: tuple[int, int], padding: tuple[int, int],
                dilation: tuple[int, int] = (1, 1), *, output: str = "float32",
                scale: Tensor | None = None, bias: Tensor | None = None,
                residual: Tensor | None = None, clamp: tuple[float, float] | None = None,
                panels: Tensor | None = None, path: str | None = None,
                threads: int | None = None, tap_pop: Tensor | None = None) -> Tensor:
    """A binary convolution's W1A1 GEMM as an implicit GEMM: the windows are read from the
    packed pixels (n, h, w, ceil(channels / 64)) instead of from im2col rows written first.
    ``tap_pop``: :func:`conv_tap_popcounts` of the weights, if known (else found here).

    Equal bit for bit to :func:`binary_gemm` (``output="int32"``), :func:`binary_gemm_affine`
    ("float32": ``* scale + bias``, ``+ residual``, clamped) or :func:`binary_gemm_signs`
    ("signs") on ``im2col_words(pixels, channels, kernel, stride, padding, dilation)``, masked
    when there is padding; b: the weights from :func:`pack_conv_weights`, panels: their
    :func:`pack_panels`. Rows: (n * oh * ow) output pixels. Windows are read in place; with
    padding, on the AVX-512 path, from a copy of the pixels with a border of zero words, each
    output's sum then corrected by what its padding taps added (kernels up to 64 x 64); else
    the row blocks that touch the padding are gathered, with their masks."""
    if output not in _GEMM_OUTPUTS:
        raise ValueError(f"output must be one of {tuple(_GEMM_OUTPUTS)}, got {output!r}")
    if pixels.dtype != torch.int64 or pixels.dim() != 4 or pixels.shape[3] != words(channels):
        raise ValueError(f"packed pixels must be int64 (n, h, w, {words(channels)}) for "
                         f"{channels} channels, got {pixels.dtype} {tuple(pixels.shape)}")
    n, h, w, cw = pixels.shape
    geometry = (*kernel, *stride, *padding, *dilation)
    oh, ow = _binary_conv_output(h, w, kernel, stride, padding, dilation)
    m, kw, k = n * oh * ow, kernel[0] * kernel[1] * cw, kernel[0] * kernel[1] * channels
    b = _check_epilogue(m, kw, b, scale, bias, residual, clamp)
    lib = library()
    if lib is None:
        rows, mask = im2col_words_reference(pixels, channels, kernel, stride, padding, dilation,
                                            masked=tuple(padding) != (0, 0))
        return _gemm_reference(output, rows, b, k, mask, scale, bias, residual, clamp)
    pixels = pixels.contiguous()
    shape = torch.tensor([n, channels, h, w, *geometry], dtype=torch.int64)
    out, args, _operands = _gemm_arguments(m, b, panels, output, scale, bias, residual, clamp)
    bp, *epilogue = args
    if tap_pop is not None and (tap_pop.dtype != torch.int64 or not tap_pop.is_contiguous()
                                or tuple(tap_pop.shape) != (kernel[0] * kernel[1], b.shape[0])):
        raise ValueError(f"tap_pop must be contiguous int64 {(kernel[0] * kernel[1], b.shape[0])}"
                         f" (conv_tap_popcounts), got {tap_pop.dtype} {tuple(tap_pop.shape)}")
    status = lib.ec_binary_conv(pixels.data_ptr(), shape.data_ptr(), bp, b.shape[0], *epilogue,
                                path_code(path), threads or torch.get_num_threads(),
                                _ptr(tap_pop))
    check_status(status, f"binary_conv ({output} output)", path)
    return out


class BinaryConvPlan:
    """One frozen W1A1 convolution's call for one input, planned: the input packed (unless it
    is already packed pixels), then :func:`binary_conv`'s implicit GEMM or :func:`im2col_words`
    and :func:`binary_gemm_affine` / :func:`binary_gemm_signs`, in one C call whose fixed
    arguments were checked and converted once (a frozen layer calls it on every forward; at
    batch 1 the three calls' argument conversions and checks cost as much as a small layer's
    GEMM). The same kernels in the same order, so the same bits as those calls one by one.

    ``x``: the input it is planned for: packed pixels (n, h, w, ceil(channels / 64)) int64, or
    float32 (n, channels, h, w) held contiguous or channels-last; ``b``, ``panels``: the
    weights (:func:`pack_conv_weights`, :func:`pack_panels`); ``implicit``: the implicit GEMM
    (else im2col rows, ``masked`` when there is padding); ``output``: "float32" or "signs".
    Holds references to the weight tensors: a layer whose tensors change makes a new plan.
    :meth:`takes` says whether a call may use it."""

    def __init__(self, x: Tensor, channels: int, b: Tensor, panels: Tensor,
                 kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int],
                 dilation: tuple[int, int], *, implicit: bool, output: str = "float32",
                 scale: Tensor | None = None, bias: Tensor | None = None,
                 clamp: tuple[float, float] | None = None, path: str | None = None,
                 threads: int | None = None) -> None:
        if output not in ("float32", "signs"):
            raise ValueError(f"output must be 'float32' or 'signs', got {output!r}")
        if x.dtype == torch.int64:
            if x.dim() != 4 or x.shape[3] != words(channels) or not x.is_contiguous():
                raise ValueError(f"packed pixels must be contiguous int64 (n, h, w, "
                                 f"{words(channels)}), got {tuple(x.shape)}")
            n, h, w, _ = x.shape
            self.input = 0
        elif x.dtype == torch.float32 and x.dim() == 4 and x.shape[1] == channels:
            n, _, h, w = x.shape
            self.input = 1 if x.is_contiguous(memory_format=torch.channels_last) \
                and not x.is_contiguous() else 2
            if self.input == 2 and not x.is_contiguous():
                raise ValueError("a float input must be held contiguous or channels-last")
        else:
            raise ValueError(f"the input must be packed pixels or float32 (n, {channels}, h, "
                             f"w), got {x.dtype} {tuple(x.shape)}")
        oh, ow = _binary_conv_output(h, w, kernel, stride, padding, dilation)
        m, kw = n * oh * ow, kernel[0] * kernel[1] * words(channels)
        b = _check_epilogue(m, kw, b, scale, bias, None, clamp)
        n_out = b.shape[0]
        if tuple(panels.shape) != (-(-n_out // PANEL), kw, PANEL):
            raise ValueError(f"panels have shape {tuple(panels.shape)}, expected "
                             f"{(-(-n_out // PANEL), kw, PANEL)} for b {tuple(b.shape)}")
        self.x_shape, self.x_dtype, self.implicit = x.shape, x.dtype, bool(implicit)
        self.threads = threads or torch.get_num_threads()
        self._follows_torch = threads is None  # then a change of torch's threads voids it
        self.sources = (b, panels, scale, bias)  # the caller's tensors
        panels = panels.contiguous()
        # a padded implicit GEMM subtracts what its padding taps add (gemm_w1a1.c, pad_fix):
        # the weights' popcount per tap and column, found once here instead of at every call
        tap_pop = conv_tap_popcounts(panels, n_out, kernel, channels) \
            if implicit and tuple(padding) != (0, 0) else None
        self._tensors = (panels, _float32(scale), _float32(bias), tap_pop)  # kept alive
        self.out_shape = (m, n_out if output == "float32" else words(n_out))
        self.out_dtype = torch.float32 if output == "float32" else torch.int64
        #: the output as an image (:meth:`image`): (n, N, oh, ow) float32 held channels-last,
        #: or (n, oh, ow, ceil(N / 64)) packed signs
        self.image_shape = torch.Size((n, n_out, oh, ow) if output == "float32"
                                      else (n, oh, ow, words(n_out)))
        self.path = path
        lo, hi = clamp if clamp is not None else (0.0, 0.0)
        self._args = BinaryConvArgs(
            (ctypes.c_int64 * 12)(n, channels, h, w, *kernel, *stride, *padding, *dilation),
            self._tensors[0].data_ptr(), _ptr(tap_pop), _ptr(self._tensors[1]),
            _ptr(self._tensors[2]),
            n_out, kernel[0] * kernel[1] * channels, lo, hi, int(clamp is not None),
            int(output == "signs"), int(implicit), int(tuple(padding) != (0, 0)), self.input,
            path_code(path), self.threads)
        self._ptr = by_reference(self._args)

    def takes(self, x: Tensor) -> bool:
        """Whether a call with input ``x`` may run on this plan: its shape, dtype and layout,
        and (a plan made without ``threads``) torch's thread count when it was made."""
        if x.shape != self.x_shape or x.dtype != self.x_dtype or (
                self._follows_torch and self.threads != torch.get_num_threads()):
            return False
        if self.input == 1:
            return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        return x.is_contiguous()

    def __call__(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        """The (M, N) float32 values or (M, ceil(N / 64)) packed signs for an input the plan
        :meth:`takes`; ``residual`` (M, N) added before the clamp (float32 output only)."""
        if residual is not None:
            if tuple(residual.shape) != self.out_shape or self.out_dtype != torch.float32:
                raise ValueError(f"residual must have shape {self.out_shape} (float32 output), "
                                 f"got {tuple(residual.shape)}")
            residual = _float32(residual)
        return self._run(x, residual, torch.empty(self.out_shape, dtype=self.out_dtype))

    def image(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        """:meth:`__call__` with the output as an image (:attr:`image_shape`; the same memory,
        (n, oh, ow, N) row-major) and ``residual`` one too, (n, N, oh, ow) (a copy unless it is
        float32 held channels-last): a frozen layer's call, with no reshaping around it."""
        if residual is not None:
            if residual.shape != self.image_shape or self.out_dtype != torch.float32:
                raise ValueError(f"residual must have shape {tuple(self.image_shape)} (float32 "
                                 f"output), got {tuple(residual.shape)}")
            residual = residual.to(torch.float32).contiguous(memory_format=torch.channels_last)
        if self.out_dtype == torch.int64:
            return self._run(x, residual, torch.empty(self.image_shape, dtype=torch.int64))
        return self._run(x, residual, torch.empty(self.image_shape, dtype=torch.float32,
                                                  memory_format=torch.channels_last))

    def _run(self, x: Tensor, residual: Tensor | None, out: Tensor) -> Tensor:
        status = load().ec_binary_conv_planned(self._ptr, x.data_ptr(), _ptr(residual),
                                               out.data_ptr())
        if status:
            check_status(status, "binary_conv (planned)", self.path)
        return out


# --- max-pooling ---------------------------------------------------------------------------------

def max_pool2d_usable(x: Tensor) -> bool:
    """True when :func:`max_pool2d` runs its C kernel on ``x`` without a copy: a 4-D float32
    CPU tensor held channels-last, and the library loaded (else a warning, once)."""
    return (x.dtype == torch.float32 and x.dim() == 4 and x.is_cpu
            and x.is_contiguous(memory_format=torch.channels_last) and library() is not None)


def max_pool2d(x: Tensor, kernel: tuple[int, int], stride: tuple[int, int],
               padding: tuple[int, int], *, path: str | None = None,
               threads: int | None = None) -> Tensor:
    """``torch.nn.functional.max_pool2d(x, kernel, stride, padding)`` (dilation 1, no ceil
    mode) of a float (n, c, h, w) map, bit for bit on every path (``max_pool.c``: NaN
    propagates, the first of equal values is kept), as a float32 channels-last tensor. The
    kernel reads channels-last memory; another layout or dtype is converted first (a copy).
    Without the C library: torch's max_pool2d."""
    kernel, stride, padding = tuple(kernel), tuple(stride), tuple(padding)
    if x.dim() != 4 or not x.is_floating_point():
        raise ValueError(f"max_pool2d needs a float (n, c, h, w) map, got {x.dtype} "
                         f"{tuple(x.shape)}")
    if (min(kernel) < 1 or min(stride) < 1 or min(padding) < 0
            or any(2 * p > k for p, k in zip(padding, kernel))):
        raise ValueError(f"max_pool2d needs kernel and stride >= 1 and padding at most half "
                         f"the kernel, got kernel {kernel}, stride {stride}, padding {padding}")
    n, c, h, w = x.shape
    oh, ow = (conv_output_size(size, k, s, p, 1) for size, k, s, p in zip((h, w), kernel, stride,
                                                                            padding))
    if oh < 1 or ow < 1:
        raise ValueError(f"max_pool2d: a {kernel} window with padding {padding} does not fit "
                         f"the {h}x{w} map")
    lib = library()
    if lib is None:
        y = torch.nn.functional.max_pool2d(x.to(torch.float32), kernel, stride, padding)
        return y.contiguous(memory_format=torch.channels_last)
    x = x.to(torch.float32).contiguous(memory_format=torch.channels_last)
    shape = (ctypes.c_int64 * 11)(h, w, c, *kernel, *stride, *padding, oh, ow)
    out = torch.empty((n, c, oh, ow), dtype=torch.float32, memory_format=torch.channels_last)
    status = lib.ec_max_pool2d(x.data_ptr(), n, shape, out.data_ptr(), path_code(path),
                               threads or torch.get_num_threads())
    check_status(status, "max_pool2d", path)
    return out


# --- integer convolution of <= 8-bit codes -----------------------------------------------------

#: the largest window (kh kw c) :func:`int8_conv` takes: its int32 sums stay exact up to it
INT8_CONV_MAX_K = 65536


def int8_conv_vnni() -> bool:
    """True when :func:`int8_conv` multiplies with AVX-512 VNNI on this CPU (on a Zen 5 it ran
    1.6-3x faster than torch's float convolution there); its AVX2 and scalar paths give the
    same bits, slower than torch's float convolution. False without the C library."""
    lib = library()
    return lib is not None and bool(lib.ec_int8_conv_vnni())


def _int8_runs(kernel: tuple[int, int], channels: int, dilation: tuple[int, int]
               ) -> tuple[int, int]:
    """(runs, bytes per run) of a window as ``int8_conv.c`` reads it: kh runs of kw c bytes, or
    kh kw runs of c bytes when dilated along the width."""
    if dilation[1] > 1:
        return kernel[0] * kernel[1], channels
    return kernel[0], kernel[1] * channels


def int8_conv_panels(codes: Tensor, dilation: tuple[int, int] = (1, 1)
                     ) -> tuple[Tensor, Tensor]:
    """A convolution's weight codes (out, c, kh, kw) (integers in -128..127) as
    :func:`int8_conv` reads them for that ``dilation``: int8 panels (ceil(out / 16), groups,
    64) (a 3-D tensor: a model's ``to(memory_format=torch.channels_last)`` leaves it as it is),
    and each output's sum of codes (int32). The window, in (ky, kx, c) order, is cut
    into runs of contiguous input bytes (a kernel row, or one tap when dilated along the width),
    each padded with zeros to a multiple of 4 and cut into groups of 4; panel p, group g,
    bytes 4 j .. 4 j + 3 hold the codes of output 16 p + j there (zero past out)."""
    if codes.dim() != 4 or codes.is_floating_point() or codes.is_complex():
        raise ValueError(f"int8_conv_panels needs integer codes (out, c, kh, kw), got "
                         f"{codes.dtype} {tuple(codes.shape)}")
    if codes.numel() and (int(codes.min()) < -128 or int(codes.max()) > 127):
        raise ValueError("int8_conv_panels: codes must lie in -128..127")
    out, c, kh, kw = codes.shape
    runs, run_len = _int8_runs((kh, kw), c, tuple(dilation))
    run_groups = -(-run_len // 4)
    flat = codes.permute(0, 2, 3, 1).reshape(out, runs, run_len).to(torch.int8)
    p = -(-out // 16)
    padded = torch.zeros(p * 16, runs, run_groups * 4, dtype=torch.int8)
    padded[:out, :, :run_len] = flat
    panels = padded.view(p, 16, runs * run_groups, 4).permute(0, 2, 1, 3).reshape(p, -1, 64)
    return panels.contiguous(), flat.reshape(out, -1).sum(1, dtype=torch.int32)


def int8_conv(x: Tensor, panels: Tensor, wsum: Tensor, n_out: int, kernel: tuple[int, int],
              stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int],
              *, step: Tensor | float, q_range: tuple[int, int], scale: Tensor,
              bias: Tensor | None = None, path: str | None = None,
              threads: int | None = None) -> Tensor:
    """The integer convolution of a uniform layer with quantized inputs (``int8_conv.c``, an
    implicit GEMM: the windows are read in place from the quantized bytes): the input codes
    q = clamp(round(x / step), q_min, q_max) of a float (n, c, h, w) input (channels-last or
    contiguous; a NaN gives q_min), their exact int32 sums with the weight codes (``panels``,
    ``wsum``: :func:`int8_conv_panels` for this ``dilation``), then ``acc * scale + bias`` per
    output channel in float32 (``scale``: weight step times input step). Every path (AVX-512
    VNNI, AVX2, scalar) gives the same bits, those of :func:`int8_conv_reference`; (n, n_out,
    oh, ow) float32 held channels-last. ``q_max - q_min`` <= 255 (codes of at most 8 bits),
    q_min <= 0 <= q_max, windows of at most :data:`INT8_CONV_MAX_K` values."""
    kernel, stride, padding, dilation = (tuple(int(v) for v in t)
                                         for t in (kernel, stride, padding, dilation))
    if x.dim() != 4 or not x.is_floating_point():
        raise ValueError(f"int8_conv needs a float (n, c, h, w) input, got {x.dtype} "
                         f"{tuple(x.shape)}")
    n, c, h, w = x.shape
    k = kernel[0] * kernel[1] * c
    q_min, q_max = (int(v) for v in q_range)
    if not q_min <= 0 <= q_max or q_max - q_min > 255:
        raise ValueError(f"int8_conv needs a code range of at most 8 bits around 0 "
                         f"(q_min <= 0 <= q_max, q_max - q_min <= 255), got {q_range}")
    step = torch.as_tensor(step, dtype=torch.float32)
    if step.numel() != 1 or not float(step) > 0:
        raise ValueError(f"int8_conv needs one input step > 0, got {step}")
    if k > INT8_CONV_MAX_K:
        raise ValueError(f"int8_conv: a window of {k} values exceeds {INT8_CONV_MAX_K} (its "
                         f"int32 sums could overflow)")
    runs, run_len = _int8_runs(kernel, c, dilation)
    expected = (-(-n_out // 16), runs * -(-run_len // 4), 64)
    if panels.dtype != torch.int8 or tuple(panels.shape) != expected:
        raise ValueError(f"int8_conv: panels must be int8 {expected} for {n_out} outputs of "
                         f"{kernel} windows of {c} channels (int8_conv_panels), got "
                         f"{panels.dtype} {tuple(panels.shape)}")
    for name, t in (("wsum", wsum), ("scale", scale), ("bias", bias)):
        if t is not None and tuple(t.shape) != (n_out,):
            raise ValueError(f"int8_conv: {name} must have shape ({n_out},), got "
                             f"{tuple(t.shape)}")
    oh, ow = _binary_conv_output(h, w, kernel, stride, padding, dilation)
    lib = library()
    if lib is None:
        codes = panels.view(*expected[:2], 16, 4).permute(0, 2, 1, 3)
        codes = codes.reshape(expected[0] * 16, runs, -1)
        codes = codes[:n_out, :, :run_len].reshape(n_out, kernel[0], kernel[1], c)
        codes = codes.permute(0, 3, 1, 2)
        y = int8_conv_reference(x, codes, stride, padding, dilation, step, (q_min, q_max),
                                scale, bias)
        return y.contiguous(memory_format=torch.channels_last)
    x = x.to(torch.float32)
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    if not channels_last:
        x = x.contiguous()
    wsum, scale = wsum.to(torch.int32).contiguous(), _float32(scale)
    bias, panels = _float32(bias), panels.contiguous()  # panels kept alive through the call
    out = torch.empty((n, n_out, oh, ow), dtype=torch.float32,
                      memory_format=torch.channels_last)
    geometry = (ctypes.c_int64 * 12)(n, c, h, w, *kernel, *stride, *padding, *dilation)
    status = lib.ec_int8_conv(x.data_ptr(), int(channels_last), geometry, float(step), q_min,
                              q_max, panels.data_ptr(), wsum.data_ptr(), n_out,
                              scale.data_ptr(), _ptr(bias), out.data_ptr(), path_code(path),
                              threads or torch.get_num_threads())
    check_status(status, "int8_conv", path)
    return out


# --- SignSwish (training) -------------------------------------------------------------------------

SIGNSWISH_OPS = ("value", "prox", "grad")  # index = the op code of ec_signswish


def signswish_usable(x: Tensor) -> bool:
    """True when :func:`signswish` can run on ``x``: the library is loaded (else a warning, once),
    ``x`` is a float32 CPU tensor, and no torch.compile / export trace is running (those see the
    PyTorch formulas, which they fuse themselves)."""
    if x.dtype != torch.float32 or x.device.type != "cpu":
        return False
    if torch.compiler.is_compiling() or torch.compiler.is_exporting():
        return False
    return library() is not None


def signswish(x: Tensor, beta: float, op: str = "value", *, grad: Tensor | None = None,
              mu: float = 0.0, path: str | None = None, threads: int | None = None) -> Tensor:
    """SignSwish of BNN+ in one pass over memory (``signswish.c``); float32 CPU tensors.

    With z = beta x, s = sigmoid(z):

    - ``op="value"``: ``2 s (1 + z (1 - s)) - 1``, the value of
      :class:`~edgecompress.quantizers.elementary.SignSwish`;
    - ``op="prox"``: ``clip(v + mu sign(v), -1, 1)`` of that value v (ProxConnect's P after
      SignSwish: the forward of bnn++);
    - ``op="grad"``: ``grad * 2 beta s (1 - s) (2 + z (1 - 2 s))``, the backward.

    Agrees with the PyTorch formulas to float rounding (the vector paths use a polynomial exp).
    Its reference is the quantizers' PyTorch formulas, so unlike the other kernel functions it
    has no fallback: it raises RuntimeError if the compiled library is unavailable (check
    :func:`signswish_usable`), like a path this CPU cannot run.
    """
    if op not in SIGNSWISH_OPS:
        raise ValueError(f"op must be one of {SIGNSWISH_OPS}, got {op!r}")
    if x.dtype != torch.float32 or x.device.type != "cpu":
        raise TypeError(f"signswish needs a float32 CPU tensor, got {x.dtype} on {x.device}")
    if (op == "grad") != (grad is not None):
        raise ValueError("grad is needed for op='grad' and only for it")
    code = path_code(path)
    lib = library()
    if lib is None:
        raise RuntimeError(f"edgecompress C kernels unavailable ({load_error()})")
    x = x.contiguous()
    if grad is not None:
        if grad.shape != x.shape:
            raise ValueError(f"grad has shape {tuple(grad.shape)}, x has {tuple(x.shape)}")
        grad = grad.to(torch.float32).contiguous()
    out = torch.empty_like(x)
    status = lib.ec_signswish(x.data_ptr(), _ptr(grad), out.data_ptr(), x.numel(), float(beta),
                              float(mu), SIGNSWISH_OPS.index(op), code,
                              threads or torch.get_num_threads())
    check_status(status, "signswish", path)
    return out


# --- float direct convolution ---------------------------------------------------------------------

def conv2d_direct_supports(weight_shape: tuple[int, ...], stride: tuple[int, int],
                           padding: tuple[int, int], dilation: tuple[int, int] = (1, 1),
                           groups: int = 1) -> bool:
    """Whether :func:`conv2d_direct` takes a convolution of this geometry: groups 1, no
    dilation, a 1x1 or 3x3 kernel, stride 1 or 2 and padding 0 or 1 (the shapes of ResNet-like
    networks; the C kernel is general, the limits keep what is tested)."""
    # plain comparisons, no generators: this runs on every call of a layer
    return (len(weight_shape) == 4 and groups == 1 and tuple(dilation) == (1, 1)
            and weight_shape[2] == weight_shape[3] and weight_shape[2] in (1, 3)
            and stride[0] in (1, 2) and stride[1] in (1, 2)
            and padding[0] in (0, 1) and padding[1] in (0, 1))


def conv2d_direct_usable(x: Tensor) -> bool:
    """True when :func:`conv2d_direct` runs its C kernel on ``x``: a float32 CPU tensor and the
    library loaded (else a warning, once; a layer then runs torch's convolution, not the slow
    reference)."""
    return x.dtype == torch.float32 and x.is_cpu and library() is not None


def recording() -> bool:
    """True while torch.compile, torch.export or a tracer (torch.jit.trace, the ONNX exporters)
    records the model (a layer then runs a custom op or torch operations; :func:`exporting`
    says which), False when it runs eagerly. The one check of a frozen layer's eager path."""
    return torch.compiler.is_compiling() or torch.jit.is_tracing()


def exporting() -> bool:
    """True while torch.export or a tracer (torch.jit.trace, the ONNX exporters) records the
    model: a layer then runs torch operations, which they can record, instead of a ctypes call
    into the C kernels (cheap enough for every call of a layer)."""
    return torch.compiler.is_exporting() or torch.jit.is_tracing()


def conv2d_torch(x: Tensor, weight: Tensor, bias: Tensor | None, stride: tuple[int, int],
                 padding: tuple[int, int], residual: Tensor | None = None,
                 clamp: tuple[float, float] | None = None) -> Tensor:
    """What :func:`conv2d_direct` computes, by torch's convolution (equal to float rounding):
    where torch is faster (large batch) or the library is missing."""
    y = torch.nn.functional.conv2d(x, weight, bias, stride, padding)
    if residual is not None:
        y = y + residual
    return y if clamp is None else y.clamp_(*clamp)


CONV_OPS = ("mul", "l1")  # index = the op code of ec_conv2d_f32


def conv2d_direct(x: Tensor, weight: Tensor, bias: Tensor | None = None,
                  stride: tuple[int, int] = (1, 1), padding: tuple[int, int] = (0, 0), *,
                  residual: Tensor | None = None, clamp: tuple[float, float] | None = None,
                  op: str = "mul", path: str | None = None,
                  threads: int | None = None) -> Tensor:
    """Float32 convolution ``clamp(conv2d(x, weight) + bias + residual)`` by the direct C kernel
    (``conv_f32.c``: vectorized along output pixels, so its cost scales with the channel
    counts, with bias, residual addition and clamp, e.g. a ReLU as (0, inf), in its store).
    ``op="l1"`` puts AdderNet's L1 form in place of the convolution: per output,
    ``-sum over the patch of |x - w|`` (zero padding included, as a padded distance counts it).

    x: (n, c, h, w); weight: (oc, c, kh, kw); bias: (oc,) or None; residual: the output's shape
    (n, oc, oh, ow) or None. Geometry: what :func:`conv2d_direct_supports` accepts. Returns a
    contiguous (NCHW) float32 tensor; inputs in another layout are copied to NCHW first.
    Agrees with ``torch.nn.functional.conv2d`` to float rounding and with
    :func:`~.reference.conv2d_direct_reference` bit for bit (every path). A layer that runs
    many calls of one shape keeps a :class:`DirectConvPlan` instead (the checks done once)."""
    if x.dim() != 4:
        raise ValueError(f"conv2d_direct needs x (n, c, h, w), got x {tuple(x.shape)}")
    return DirectConvPlan(tuple(x.shape), weight, bias, stride, padding, clamp=clamp, op=op,
                          path=path, threads=threads)(x, residual)


class DirectConvPlan:
    """:func:`conv2d_direct` of fixed weights for one input shape: the arguments are checked and
    converted once, and each call passes them to the C kernel as one pointer (at batch 1 on
    small maps, checking and converting twenty ctypes arguments cost as much as the
    convolution). Holds references to ``weight`` and ``bias``: a caller whose tensors change
    (e.g. a state_dict loaded into new tensors) makes a new plan."""

    def __init__(self, x_shape: tuple[int, ...], weight: Tensor, bias: Tensor | None = None,
                 stride: tuple[int, int] = (1, 1), padding: tuple[int, int] = (0, 0), *,
                 clamp: tuple[float, float] | None = None, op: str = "mul",
                 path: str | None = None, threads: int | None = None) -> None:
        if op not in CONV_OPS:
            raise ValueError(f"conv2d_direct: op must be one of {CONV_OPS}, got {op!r}")
        if len(x_shape) != 4 or weight.dim() != 4 or weight.shape[1] != x_shape[1]:
            raise ValueError(f"conv2d_direct needs x (n, c, h, w) and weight (oc, c, kh, kw), got "
                             f"x {tuple(x_shape)} and weight {tuple(weight.shape)}")
        stride, padding = tuple(stride), tuple(padding)
        if not conv2d_direct_supports(weight.shape, stride, padding):
            raise ValueError(f"conv2d_direct takes 1x1 / 3x3 kernels, stride 1 / 2 and padding 0 "
                             f"/ 1, got kernel {tuple(weight.shape[2:])}, stride {stride}, "
                             f"padding {padding}")
        n, c, h, w = x_shape
        oc, _, kh, kw = weight.shape
        oh = (h + 2 * padding[0] - kh) // stride[0] + 1
        ow = (w + 2 * padding[1] - kw) // stride[1] + 1
        if oh < 1 or ow < 1:
            raise ValueError(f"conv2d_direct: input {tuple(x_shape)} is smaller than the kernel "
                             f"{tuple(weight.shape[2:])} with padding {padding}")
        if bias is not None and tuple(bias.shape) != (oc,):
            _check_vectors(oc, bias=bias)  # raises
        if clamp is not None and not clamp[0] <= clamp[1]:
            raise ValueError(f"clamp needs lo <= hi, got {clamp}")
        self.x_shape, self.out_shape = torch.Size(x_shape), (n, oc, oh, ow)
        self.sources = (weight, bias)  # the caller's tensors (the ones used may be copies)
        self.threads = threads or torch.get_num_threads()
        self.weight, self.bias = _float32(weight.detach()), _float32(
            None if bias is None else bias.detach())
        self.stride, self.padding, self.clamp, self.path = stride, padding, clamp, path
        self.op = op
        lib = library()
        self._run = None if lib is None else lib.ec_conv2d_f32_planned
        lo, hi = clamp if clamp is not None else (0.0, 0.0)
        self._args = ConvF32Plan(n, c, h, w, oc, kh, kw, *stride, *padding,
                                 self.weight.data_ptr(), _ptr(self.bias), lo, hi,
                                 int(clamp is not None), CONV_OPS.index(op), path_code(path),
                                 self.threads)
        self._args_ptr = by_reference(self._args)

    def _shape_error(self, x: Tensor, residual: Tensor | None) -> None:
        """Raise the error of an input or residual of another shape than the plan's."""
        if x.shape != self.x_shape:
            raise ValueError(f"this conv2d_direct plan takes inputs {tuple(self.x_shape)}, got "
                             f"{tuple(x.shape)}")
        raise ValueError(f"residual must have shape {self.out_shape}, got "
                         f"{tuple(residual.shape)}")

    def __call__(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        # (a frozen layer calls this at every forward: the common case takes the fewest calls)
        if x.shape != self.x_shape or (residual is not None
                                       and residual.shape != self.out_shape):
            self._shape_error(x, residual)
        if self._run is None:
            return conv2d_direct_reference(x, self.weight, self.bias, self.stride, self.padding,
                                           residual, self.clamp, self.op)
        x, residual = _float32(x), _float32(residual)
        out = torch.empty(*self.out_shape, dtype=torch.float32)  # (unpacked: parsed faster)
        status = self._run(self._args_ptr, x.data_ptr(),
                           None if residual is None else residual.data_ptr(), out.data_ptr())
        if status:
            check_status(status, "conv2d_direct", self.path)
        return out


def l1_linear(x: Tensor, weight: Tensor, bias: Tensor | None = None, *, path: str | None = None,
              threads: int | None = None) -> Tensor:
    """AdderNet's linear form ``y[r, o] = -sum_k |x[r, k] - weight[o, k]| + bias[o]`` for float32
    rows x (rows, k) and weight (out, k): :func:`conv2d_direct` with ``op="l1"`` as a 1x1
    convolution of one image whose pixels are the rows (vectorized along the rows; the
    transposes are two copies of x and y). Bit-exact with the same reference."""
    if x.dim() != 2 or weight.dim() != 2 or weight.shape[1] != x.shape[1]:
        raise ValueError(f"l1_linear needs x (rows, k) and weight (out, k), got x "
                         f"{tuple(x.shape)} and weight {tuple(weight.shape)}")
    rows, k = x.shape
    image = x.t().reshape(1, k, 1, rows)
    y = conv2d_direct(image, weight.reshape(*weight.shape, 1, 1), bias, op="l1", path=path,
                      threads=threads)
    return y.reshape(weight.shape[0], rows).t()


def adder_input_grad(x: Tensor, weight: Tensor, grad: Tensor, stride: tuple[int, int] = (1, 1),
                     padding: tuple[int, int] = (0, 0), *, path: str | None = None,
                     threads: int | None = None) -> Tensor:
    """AdderNet's input gradient of ``conv2d_direct(x, weight, stride=stride, padding=padding,
    op="l1")`` given its output's gradient ``grad``: the published rule
    ``dx = sum over taps of grad * clamp(w - x, -1, 1)`` (HardTanh of the difference, not the
    sign of the L1 derivative), by the C kernel ``adder_grad.c`` (vectorized along input pixels;
    the differences are never stored). Same geometry as :func:`conv2d_direct`; returns a
    contiguous float32 (n, c, h, w) tensor, bit for bit
    :func:`~.reference.adder_input_grad_reference` on every path."""
    stride, padding = tuple(stride), tuple(padding)
    if x.dim() != 4 or weight.dim() != 4 or weight.shape[1] != x.shape[1]:
        raise ValueError(f"adder_input_grad needs x (n, c, h, w) and weight (oc, c, kh, kw), "
                         f"got x {tuple(x.shape)} and weight {tuple(weight.shape)}")
    if not conv2d_direct_supports(weight.shape, stride, padding):
        raise ValueError(f"adder_input_grad takes 1x1 / 3x3 kernels, stride 1 / 2 and padding "
                         f"0 / 1, got kernel {tuple(weight.shape[2:])}, stride {stride}, "
                         f"padding {padding}")
    n, c, h, w = x.shape
    oc, _, kh, kw = weight.shape
    out_shape = (n, oc, conv_output_size(h, kh, stride[0], padding[0], 1),
                 conv_output_size(w, kw, stride[1], padding[1], 1))
    if min(out_shape[2:]) < 1 or tuple(grad.shape) != out_shape:
        raise ValueError(f"adder_input_grad: grad must have the output's shape {out_shape} "
                         f"(positive), got {tuple(grad.shape)}")
    lib = library()
    if lib is None:
        return adder_input_grad_reference(x, weight, grad, stride, padding)
    x, weight, grad = _float32(x.detach()), _float32(weight.detach()), _float32(grad.detach())
    out = torch.empty(n, c, h, w, dtype=torch.float32)
    status = lib.ec_adder_input_grad(x.data_ptr(), n, c, h, w, weight.data_ptr(), oc, kh, kw,
                                     *stride, *padding, grad.data_ptr(), out.data_ptr(),
                                     path_code(path), threads or torch.get_num_threads())
    check_status(status, "adder_input_grad", path)
    return out
