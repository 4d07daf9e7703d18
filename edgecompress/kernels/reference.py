"""The packed formats and a slow, obviously correct PyTorch reference for every C kernel.

Each reference computes its kernel's result straight from the definition, with no tiling,
vectors or threads; the tests demand that every C path equals it bit for bit (the W1A32 one
follows the kernel's order of float operations so that equality is exact), and the kernel
functions in :mod:`~edgecompress.kernels.dispatch` run it when the library is not built.

Packed format: bit 1 = -1 (x < 0), bit 0 = +1; 64 values per word, value j of a row in bit
``j % 64`` of word ``j // 64``; rows padded with 0 bits to whole words (:func:`words`). Words are
stored in int64 tensors (the same 64 bits as uint64).
"""

from __future__ import annotations

import torch
from torch import Tensor

PANEL = 16  # rows of the W1A1 weights side by side in one GEMM panel (PANEL in gemm_w1a1.h)
_SHIFTS = torch.arange(64, dtype=torch.int64)


def words(k: int) -> int:
    """Number of 64-bit words holding ``k`` packed values."""
    return (k + 63) // 64


def pack_signs_reference(x: Tensor, offset: Tensor | None = None) -> Tensor:
    """Reference :func:`pack_signs`: bit j of word w is ``x[:, 64 w + j] < 0``, or with a
    per-column offset ``(x + offset)[:, 64 w + j] < 0``."""
    if offset is not None:
        x = x + offset
    rows, k = x.shape
    bits = torch.zeros(rows, words(k) * 64, dtype=torch.int64)
    bits[:, :k] = (x < 0).to(torch.int64)
    # distinct powers of two never carry, so the (wrapping) int64 sum is a bitwise OR
    return (bits.view(rows, -1, 64) << _SHIFTS).sum(dim=-1)


def pack_head_signs_reference(x: Tensor, offset: Tensor | None, heads: int) -> Tensor:
    """Reference :func:`pack_head_signs`: the signs of ``x + offset`` (B, T, heads d) packed
    per head, (B heads, T, ceil(d / 64)) words, as binary attention's torch form computes them
    (the sum, a head split by reshape and transpose)."""
    b, t, c = x.shape
    rows = pack_signs_reference((x if offset is None else x + offset).reshape(-1, c // heads))
    return rows.view(b, t, heads, -1).transpose(1, 2).reshape(b * heads, t, -1)


def pack_prob_masks_reference(p: Tensor, alpha: Tensor | float) -> Tensor:
    """Reference :func:`pack_prob_masks`: the {0, a} quantizer's codes
    ``round(clamp(p / alpha, 0, 1))`` of probability rows p (R, S), packed with bit 1 where the
    code is 1 (``pack_signs`` of ``-codes``)."""
    codes = torch.round(torch.clamp(p / alpha, 0.0, 1.0))
    return pack_signs_reference(-codes)


def pack_value_columns_reference(v: Tensor, offset: Tensor | None, heads: int) -> Tensor:
    """Reference :func:`pack_value_columns`: the signs of ``v + offset`` (B, S, heads d) packed
    along the S keys for every sample, head and channel, word-major: (B heads, ceil(S / 64), d)
    int64, ``out[n heads + h, w, c]`` holding keys 64 w ... of channel h d + c."""
    b, s, c = v.shape
    values = v if offset is None else v + offset
    columns = values.view(b, s, heads, c // heads).permute(0, 2, 3, 1)
    packed = pack_signs_reference(columns.reshape(-1, s)).view(b * heads, c // heads, -1)
    return packed.transpose(1, 2).contiguous()


def unpack_signs_reference(packed: Tensor, k: int) -> Tensor:
    """+-1 float64 values of packed rows (inverse of :func:`pack_signs` on signs)."""
    bits = (packed.unsqueeze(-1) >> _SHIFTS) & 1
    return (1 - 2 * bits.flatten(1)[:, :k]).to(torch.float64)


def unpack_bits_reference(packed: Tensor, k: int) -> Tensor:
    """0/1 float64 values of packed bit rows."""
    return ((packed.unsqueeze(-1) >> _SHIFTS) & 1).flatten(1)[:, :k].to(torch.float64)


def pack_panels_reference(b: Tensor) -> Tensor:
    """Reference :func:`pack_panels`: rows (N, W) -> (ceil(N / 16), W, 16), missing rows 0."""
    n, kw = b.shape
    padded = torch.zeros(-(-n // PANEL) * PANEL, kw, dtype=torch.int64)
    padded[:n] = b
    return padded.view(-1, PANEL, kw).transpose(1, 2).contiguous()


def binary_gemm_reference(a: Tensor, b: Tensor, k: int, mask: Tensor | None = None) -> Tensor:
    """Reference :func:`binary_gemm`, straight from the definition
    ``C[m, n] = valid(m) - 2 popcount((a[m] ^ b[n]) & mask[m])`` with ``valid(m) = k`` (no mask)
    or ``popcount(mask[m])``, using popcount(x ^ y) = |x| + |y| - 2 x.y on 0/1 vectors, exactly
    in float64."""
    bits = a.shape[1] * 64
    av, bv = unpack_bits_reference(a, bits), unpack_bits_reference(b, bits)
    mv = torch.ones_like(av) if mask is None else unpack_bits_reference(mask, bits)
    am = av * mv
    differ = am.sum(1, keepdim=True) + mv @ bv.T - 2 * am @ bv.T
    valid = torch.full_like(differ, float(k)) if mask is None else mv.sum(1, keepdim=True)
    return (valid - 2 * differ).round().to(torch.int32)


def _scale_bias(y: Tensor, scale: Tensor | None, bias: Tensor | None) -> Tensor:
    """The kernels' epilogue in their order: ``y * scale`` then ``+ bias`` (float32; each
    skipped when None)."""
    if scale is not None:
        y = y * scale.to(torch.float32)
    if bias is not None:
        y = y + bias.to(torch.float32)
    return y


def binary_gemm_affine_reference(a: Tensor, b: Tensor, k: int, mask: Tensor | None = None,
                                 scale: Tensor | None = None, bias: Tensor | None = None,
                                 residual: Tensor | None = None,
                                 clamp: tuple[float, float] | None = None) -> Tensor:
    """Reference :func:`binary_gemm_affine`: the reference GEMM, then torch's multiply, add,
    residual add and clamp."""
    y = binary_gemm_reference(a, b, k, mask).to(torch.float32)
    y = _scale_bias(y, scale, bias)
    if residual is not None:
        y = y + residual.to(torch.float32)
    if clamp is not None:
        y = y.clamp(*clamp)
    return y


def binary_gemm_signs_reference(a: Tensor, b: Tensor, k: int, mask: Tensor | None = None,
                                scale: Tensor | None = None,
                                bias: Tensor | None = None) -> Tensor:
    """Reference :func:`binary_gemm_signs`."""
    return pack_signs_reference(binary_gemm_affine_reference(a, b, k, mask, scale, bias))


def sign_panels_rows_reference(panels: Tensor, n: int) -> Tensor:
    """The packed weight rows (N, ceil(K / 64)) that W1A32 sign panels (ceil(N / 16), K) were
    made from (the inverse of :func:`sign_panels`)."""
    k = panels.shape[1]
    negative = (panels.to(torch.int32).unsqueeze(1) >> torch.arange(16).view(1, 16, 1)) & 1
    return pack_signs_reference(-(negative.reshape(-1, k)[:n].double() * 2 - 1))


def w1a32_gemm_reference(x: Tensor, b: Tensor, k: int, scale: Tensor | None = None,
                         bias: Tensor | None = None) -> Tensor:
    """Reference :func:`w1a32_gemm`, in its order of float operations: ``total - 2 neg`` with
    both sums accumulated over k in increasing order (float32), then ``* scale + bias``."""
    x = x.detach().to(torch.float32)
    neg = unpack_bits_reference(b, k).to(torch.float32)  # (N, k) 0/1
    total = torch.zeros(x.shape[0], 1)
    acc = torch.zeros(x.shape[0], b.shape[0])
    for t in range(k):
        column = x[:, t: t + 1]
        total = total + column
        acc = torch.where(neg[:, t].bool(), acc + column, acc)
    y = total - 2.0 * acc
    return _scale_bias(y, scale, bias)


def lowbit_lane(bits: int) -> int:
    """Bits of one code's lane in the low-bit panels: 2 for 2-bit codes, 4 for 3- and 4-bit
    ones (3-bit codes in 4-bit lanes keep the decode one shift per code)."""
    return 2 if bits == 2 else 4


def lowbit_codes_reference(panels: Tensor, n: int, k: int, bits: int) -> Tensor:
    """The uint8 codes (N, K) that low-bit panels (see :func:`lowbit_panels`) hold."""
    lane = lowbit_lane(bits)
    per = 8 // lane
    shifts = torch.arange(per, dtype=torch.int32) * lane
    fields = (panels.to(torch.int32).unsqueeze(-1) >> shifts) & (2 ** lane - 1)  # (P, G, 16, per)
    return fields.permute(0, 2, 1, 3).reshape(-1, panels.shape[1] * per)[:n, :k].to(torch.uint8)


def lowbit_gemm_reference(x: Tensor, codes: Tensor, table: Tensor, scale: Tensor | None = None,
                          bias: Tensor | None = None) -> Tensor:
    """Reference :func:`lowbit_gemm`, in its order of float operations: with the weights
    ``w = table[codes]`` (N, K), one float32 accumulator per output, ``acc = acc + x[:, t] *
    w[:, t]`` for t = 0, 1, ..., K - 1 (product rounded, then added: no fused multiply-add),
    then ``* scale`` and ``+ bias``. Equal to ``x @ w.T`` up to float rounding."""
    x = x.detach().to(torch.float32)
    w = table.to(torch.float32)[codes.long()]
    acc = torch.zeros(x.shape[0], codes.shape[0])
    for t in range(codes.shape[1]):
        acc = acc + x[:, t: t + 1] * w[:, t]
    return _scale_bias(acc, scale, bias)


def pack_pixels_reference(x: Tensor) -> Tensor:
    """Reference :func:`pack_pixels`: the channels of every pixel as one packed row."""
    n, c, h, w = x.shape
    return pack_signs_reference(x.detach().permute(0, 2, 3, 1).reshape(-1, c)).view(
        n, h, w, words(c))


def im2col_signs_reference(x: Tensor, kernel: tuple[int, int], stride: tuple[int, int],
                           padding: tuple[int, int], dilation: tuple[int, int],
                           masked: bool = True) -> tuple[Tensor, Tensor | None]:
    """Reference :func:`im2col_signs` built from F.unfold."""
    n, c, h, w = x.shape
    cw = words(c)
    signs = torch.zeros(n, cw * 64, h, w)
    signs[:, :c] = torch.where(x >= 0, 1.0, -1.0)
    cols = torch.nn.functional.unfold(signs, kernel, dilation, padding, stride)  # (n, C'*kk, L)
    kk = kernel[0] * kernel[1]
    cols = cols.view(n, cw * 64, kk, -1).permute(0, 3, 2, 1).reshape(-1, kk * cw * 64)
    rows = pack_signs_reference(cols)
    if not masked:
        return rows, None
    valid = torch.zeros(1, cw * 64, h, w)
    valid[:, :c] = 1.0
    vcols = torch.nn.functional.unfold(valid, kernel, dilation, padding, stride)
    vcols = vcols.view(1, cw * 64, kk, -1).permute(0, 3, 2, 1).reshape(-1, kk * cw * 64)
    mask = pack_signs_reference(-vcols).repeat(n, 1)
    return rows, mask


def im2col_words_reference(pixels: Tensor, channels: int, kernel: tuple[int, int],
                           stride: tuple[int, int], padding: tuple[int, int],
                           dilation: tuple[int, int],
                           masked: bool = True) -> tuple[Tensor, Tensor | None]:
    """Reference :func:`im2col_words`: the packed pixels unpacked to signs, then
    :func:`im2col_signs_reference`."""
    n, h, w, cw = pixels.shape
    signs = unpack_signs_reference(pixels.reshape(-1, cw), channels).to(torch.float32)
    x = signs.view(n, h, w, channels).permute(0, 3, 1, 2)
    return im2col_signs_reference(x, kernel, stride, padding, dilation, masked)


def binary_gemm_groups_reference(a: Tensor, b: Tensor, k: int, scale: Tensor) -> Tensor:
    """Reference :func:`binary_gemm_groups`: one :func:`binary_gemm_affine_reference` per
    group."""
    return torch.stack([binary_gemm_affine_reference(ag, bg, k, None, scale)
                        for ag, bg in zip(a, b)]) if len(a) else \
        torch.zeros(0, a.shape[1], b.shape[1])


def mask_matmul_reference(masks: Tensor, vneg: Tensor, heads: int, d: int,
                          alpha: float) -> Tensor:
    """Reference :func:`mask_matmul`, from the definition: the 0/1 codes and +-1 values
    unpacked, their product summed exactly (float64), then ``.float() * alpha``."""
    groups, m, sw = masks.shape
    codes = unpack_bits_reference(masks.reshape(-1, sw), sw * 64).view(groups, m, -1)
    columns = vneg.transpose(1, 2).reshape(-1, sw)  # (groups * d, sw): channel c's key bits
    values = unpack_signs_reference(columns, sw * 64).view(groups, d, -1)
    counts = (codes @ values.transpose(1, 2)).round().to(torch.float32)  # (groups, m, d)
    out = counts * torch.tensor(alpha, dtype=torch.float32)
    return out.view(-1, heads, m, d).transpose(1, 2).reshape(-1, m, heads * d)


def conv2d_direct_reference(x: Tensor, weight: Tensor, bias: Tensor | None = None,
                            stride: tuple[int, int] = (1, 1), padding: tuple[int, int] = (0, 0),
                            residual: Tensor | None = None,
                            clamp: tuple[float, float] | None = None, op: str = "mul") -> Tensor:
    """Reference :func:`conv2d_direct`, in its order of float operations: for every output,
    ``acc = 0``, then ``acc = acc + x * w`` (product rounded to float32, then added) over the
    taps with input channel, kernel row, kernel column ascending (zero padding adds +0); then
    ``+ bias``, ``+ residual``, clamped to ``clamp``. ``op="l1"``: ``acc = acc + |x - w|`` in
    the same order (padding taps add |w|), then ``acc = -acc`` before the bias."""
    x, weight = x.detach().to(torch.float32), weight.detach().to(torch.float32)
    n, c, h, w = x.shape
    oc, _, kh, kw = weight.shape
    (sh, sw), (ph, pw) = stride, padding
    xp = torch.nn.functional.pad(x, (pw, pw, ph, ph))
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    acc = torch.zeros(n, oc, oh, ow)
    for ic in range(c):
        for ky in range(kh):
            for kx in range(kw):
                window = xp[:, ic: ic + 1, ky: ky + sh * (oh - 1) + 1: sh,
                            kx: kx + sw * (ow - 1) + 1: sw]
                tap = weight[:, ic, ky, kx].view(1, oc, 1, 1)
                acc = acc + ((window - tap).abs() if op == "l1" else window * tap)
    if op == "l1":
        acc = -acc
    if bias is not None:
        acc = acc + bias.detach().to(torch.float32).view(1, oc, 1, 1)
    if residual is not None:
        acc = acc + residual.to(torch.float32)
    return acc if clamp is None else acc.clamp(*clamp)


def adder_input_grad_reference(x: Tensor, weight: Tensor, grad: Tensor,
                               stride: tuple[int, int] = (1, 1),
                               padding: tuple[int, int] = (0, 0)) -> Tensor:
    """Reference :func:`adder_input_grad`, in its order of float operations: AdderNet's input
    gradient ``dx = sum over taps of g * clamp(w - x, -1, 1)`` of the L1 convolution
    (``conv2d_direct(op="l1")``). For every input value ``acc = 0``, then over the taps with
    output channel, kernel row, kernel column ascending ``acc = acc + g * clamp(w - x, -1, 1)``
    (difference, then product rounded to float32, then added), g being the output gradient of
    the pixel whose patch puts the tap on that input, or 0 where there is none (adding a zero
    product leaves acc unchanged); padding gets no gradient."""
    x, weight = x.detach().to(torch.float32), weight.detach().to(torch.float32)
    grad = grad.detach().to(torch.float32)
    n, c, h, w = x.shape
    oc, _, kh, kw = weight.shape
    (sh, sw), (ph, pw) = stride, padding
    oh, ow = grad.shape[2:]
    xp = torch.nn.functional.pad(x, (pw, pw, ph, ph))
    acc = torch.zeros_like(xp)
    spread = torch.zeros(n, 1, *xp.shape[2:])  # g of one tap, on the input it reaches
    for o in range(oc):
        for ky in range(kh):
            for kx in range(kw):
                spread.zero_()
                spread[:, 0, ky: ky + sh * (oh - 1) + 1: sh,
                       kx: kx + sw * (ow - 1) + 1: sw] = grad[:, o]
                tap = weight[o, :, ky, kx].view(1, c, 1, 1)
                acc = acc + spread * (tap - xp).clamp(-1, 1)
    return acc[:, :, ph: ph + h, pw: pw + w].contiguous()


def block_epilogue_reference(y: Tensor, residual: Tensor | None, a: Tensor, b: Tensor,
                             g: Tensor, slope: Tensor, z: Tensor,
                             block_input: Tensor | None = None,
                             block_scale: Tensor | None = None,
                             block_bias: Tensor | None = None) -> Tensor:
    """Reference :func:`block_epilogue`, in torch's operations: ``fma(y, a, b)`` (computed in
    float64, where the product is exact, then rounded), ``+ residual`` repeated along the
    columns (or, when wider than y, the mean of its groups of y's width: BinaryViT's narrowing
    shortcut), then RPReLU ``where(u >= 0, u, slope u) + z`` with ``u = v - g``; with a
    ``block_input``, that plus the result times ``block_scale`` plus ``block_bias`` (the
    transformer block's ``x + A(r)``)."""
    v = torch.addcmul(b.double(), y.double(), a.double()).float()
    c = y.shape[1]
    if residual is not None and residual.shape[1] > c:
        v = v + residual.unflatten(-1, (residual.shape[1] // c, c)).mean(dim=-2)
    elif residual is not None:
        v = v + residual.repeat(1, c // residual.shape[1])
    u = v - g
    out = torch.where(u >= 0, u, slope * u) + z
    return out if block_input is None else block_input + (out * block_scale + block_bias)


POOL_BRANCH_KERNELS = ((3, 1), (1, 3), (5, 1), (1, 5))


def pool_branches_reference(x: Tensor, grid: tuple[int, int], scales: Tensor,
                            base: Tensor | None = None) -> Tensor:
    """Reference :func:`pool_branches`: BinaryViT's training-form expression,
    ``sum(s_i * avg_pool2d(image, k_i, 1, k_i // 2, count_include_pad=False))`` over the
    token grid of x (B, H W, C), back in token layout (and ``base +`` that)."""
    image = x.transpose(1, 2).reshape(x.shape[0], x.shape[2], *grid)
    out = sum(scales[i] * torch.nn.functional.avg_pool2d(
        image, k, 1, (k[0] // 2, k[1] // 2), count_include_pad=False)
        for i, k in enumerate(POOL_BRANCH_KERNELS))
    out = out.flatten(2).transpose(1, 2)
    return out if base is None else base + out


def _channel_sums(t: Tensor, groups: int, squares: bool) -> Tensor:
    """Per group of t's channels (N, C, H, W), the sum over its channels ascending from the
    first (of the squares, or of the values): (N, groups, H, W)."""
    parts = t.unflatten(1, (groups, -1))
    total = parts[:, :, 0] * parts[:, :, 0] if squares else parts[:, :, 0]
    for k in range(1, parts.shape[2]):
        total = total + (parts[:, :, k] * parts[:, :, k] if squares else parts[:, :, k])
    return total.contiguous()


def euclid_shift_reference(weight: Tensor, bias: Tensor | None,
                           half: float | Tensor) -> Tensor:
    """The per-channel shift b_j - half ||w_j||^2 (``-(half ||w_j||^2)`` without a bias) as
    :func:`euclid_patch` computes it from a convolution's weight: ||w_j||^2 summed over the
    flattened row ascending from the first square (:func:`_channel_sums`' order, the row's
    entries taken as channels)."""
    rows = weight.detach().flatten(1)  # (out, K) -> (1, K, out, 1): K "channels"
    squares = _channel_sums(rows.t().reshape(1, rows.shape[1], -1, 1), 1, squares=True).flatten()
    return -(half * squares) if bias is None else bias.detach() - half * squares


def euclid_patch_reference(y: Tensor, x: Tensor, half: float | Tensor, kernel: tuple[int, int],
                           stride: tuple[int, int], padding: tuple[int, int],
                           groups: int = 1, shift: Tensor | None = None) -> Tensor:
    """Reference :func:`euclid_patch`: ``y - half * P`` (``(y + shift) - half * P`` with a
    per-channel shift), P the window sums (torch's sum pool) of the per-group channel sums of
    x^2 (added channel by channel), a new tensor."""
    if shift is not None:
        y = y + shift.view(1, -1, 1, 1)
    s = _channel_sums(x, groups, squares=True)
    return subtract_planes(y, half * torch.nn.functional.avg_pool2d(
        s, kernel, stride, padding, divisor_override=1))


def euclid_patch_grad_reference(grad: Tensor, x: Tensor, half: float | Tensor,
                                kernel: tuple[int, int], stride: tuple[int, int],
                                padding: tuple[int, int], groups: int = 1) -> Tensor:
    """Reference :func:`euclid_patch_grad`: the output gradient summed over each group's
    channels (channel by channel), negated, times half, through avg_pool2d's backward, times
    2 x (autograd's operations for ``y - half * avg_pool2d(sum x^2)``)."""
    q = -_channel_sums(grad, groups, squares=False) * half
    s = q.new_empty(x.shape[0], groups, *x.shape[2:])  # (its shape)
    r = torch.ops.aten.avg_pool2d_backward(q, s, list(kernel), list(stride),
                                           list(padding), False, True, 1)
    return (r.unsqueeze(2) * (2 * x).unflatten(1, (groups, -1))).flatten(1, 2)


def subtract_planes(y: Tensor, planes: Tensor) -> Tensor:
    """y (N, C, Ho, Wo) minus planes (N, G, Ho, Wo), plane j from the j-th group of C / G
    channels (EuclidNet's per-patch term)."""
    groups = planes.shape[1]
    if groups == 1:
        return y - planes  # (N, 1, Ho, Wo) broadcast over the channels
    return (y.unflatten(1, (groups, -1)) - planes.unsqueeze(2)).flatten(1, 2)


def int8_conv_reference(x: Tensor, codes: Tensor, stride: tuple[int, int],
                        padding: tuple[int, int], dilation: tuple[int, int], step: Tensor,
                        q_range: tuple[int, int], scale: Tensor,
                        bias: Tensor | None = None) -> Tensor:
    """:func:`~edgecompress.kernels.int8_conv` in PyTorch: the input codes
    clamp(round(x / step), q_min, q_max) (a NaN gives q_min), their exact integer convolution
    with the weight ``codes`` (out, c, kh, kw) (in float64: every partial sum is an integer
    below 2^53), rounded to float32, then ``* scale + bias`` per output channel (two float32
    roundings). (n, out, oh, ow) float32."""
    q_min, q_max = q_range
    q = torch.round(x.to(torch.float32) / step).clamp_(q_min, q_max)
    q = torch.nan_to_num(q, nan=float(q_min))
    acc = torch.nn.functional.conv2d(q.double(), codes.double(), None, stride, padding, dilation)
    y = acc.to(torch.float32) * scale.to(torch.float32).view(1, -1, 1, 1)
    return y if bias is None else y + bias.to(torch.float32).view(1, -1, 1, 1)
