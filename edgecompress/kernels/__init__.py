"""Fast CPU kernels for low-bit models, each with a slow reference in plain PyTorch.

Binary kernels (``binary.c``, built by the package's own build and loaded with ctypes):

- :func:`pack_signs`: float rows -> 1 bit per value (bit 1 = -1, bit 0 = +1), 64 per word,
  rows padded with 0 bits to whole words;
- :func:`binary_gemm`: ``C[m, n] = valid(m) - 2 popcount((A[m] ^ B[n]) & mask[m])``, i.e. the
  dot product of +-1 rows restricted to the valid positions (all positions without a mask).

The GEMM dispatches at run time to AVX-512 VPOPCNTDQ, AVX2 or portable scalar code (force one
with ``path=``) and uses OpenMP threads. If the library was not built, every function runs its
reference implementation and a warning says so once. Packed words are stored in int64 tensors
(the same 64 bits as uint64).

Training kernel (``signswish.c``): :func:`signswish`, the value, bnn++ forward and gradient of
BNN+'s SignSwish in one pass each, used by the quantizers on float32 CPU tensors in eager mode
(their PyTorch formulas are the reference, and what torch.compile sees).
"""

from __future__ import annotations

import ctypes
import warnings
from pathlib import Path

import torch
from torch import Tensor

PATHS = ("scalar", "avx2", "avx512")
_lib: ctypes.CDLL | None = None
_load_error: str | None = None
_warned = False


def _load() -> ctypes.CDLL | None:
    global _lib, _load_error
    if _lib is not None or _load_error is not None:
        return _lib
    candidates = sorted(Path(__file__).parent.glob("_kernels*.so"))
    if not candidates:
        _load_error = "the compiled library _kernels*.so is not in the package (build skipped?)"
        return None
    try:
        lib = ctypes.CDLL(str(candidates[0]))
    except OSError as exc:
        _load_error = f"{candidates[0]} could not be loaded: {exc}"
        return None
    p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    lib.ec_pack_signs.argtypes = [p, i64, i64, p, i32]
    lib.ec_pack_signs.restype = i32
    lib.ec_pack_channels.argtypes = [p, i64, i64, i64, i64, p]
    lib.ec_pack_channels.restype = None
    lib.ec_im2col_words.argtypes = [p] + [i64] * 12 + [p, p]
    lib.ec_im2col_words.restype = None
    lib.ec_pack_panels.argtypes = [p, i64, i64, p]
    lib.ec_pack_panels.restype = None
    lib.ec_binary_gemm.argtypes = [p, p, p, i64, i64, i64, i64, p, p, p, p, p, p, i32,
                                   ctypes.c_float, ctypes.c_float, i32, i32]
    lib.ec_binary_gemm.restype = i32
    lib.ec_w1a32_gemm.argtypes = [p, p, i64, i64, i64, p, p, p, i32, i32]
    lib.ec_w1a32_gemm.restype = i32
    lib.ec_signswish.argtypes = [p, p, p, i64, ctypes.c_float, ctypes.c_float, i32, i32, i32]
    lib.ec_signswish.restype = i32
    lib.ec_set_gemm_block_bytes.argtypes = [i64]
    lib.ec_set_gemm_block_bytes.restype = None
    lib.ec_best_path.argtypes = []
    lib.ec_best_path.restype = i32
    _lib = lib
    return lib


def _library() -> ctypes.CDLL | None:
    global _warned
    lib = _load()
    if lib is None and not _warned:
        warnings.warn(f"edgecompress C kernels unavailable ({_load_error}); using the slower "
                      "PyTorch reference path", RuntimeWarning, stacklevel=3)
        _warned = True
    return lib


def available() -> bool:
    """True when the compiled kernels are loaded."""
    return _load() is not None


def supported_paths() -> list[str]:
    """Dispatch paths this CPU can run (always includes ``"scalar"`` when compiled)."""
    lib = _load()
    return list(PATHS[: lib.ec_best_path() + 1]) if lib is not None else []


def _set_gemm_block_bytes(size: int) -> None:
    """Cache-block size of the W1A1 GEMM's weight panels in bytes (default 256 KiB; tests use
    tiny blocks to exercise the blocking on small shapes)."""
    lib = _load()
    if lib is not None:
        lib.ec_set_gemm_block_bytes(int(size))


def words(k: int) -> int:
    """Number of 64-bit words holding ``k`` packed values."""
    return (k + 63) // 64


# --- references ---------------------------------------------------------------------------------

_SHIFTS = torch.arange(64, dtype=torch.int64)


def pack_signs_reference(x: Tensor) -> Tensor:
    """Reference :func:`pack_signs`: bit j of word w is ``x[:, 64 w + j] < 0``."""
    rows, k = x.shape
    bits = torch.zeros(rows, words(k) * 64, dtype=torch.int64)
    bits[:, :k] = (x < 0).to(torch.int64)
    # distinct powers of two never carry, so the (wrapping) int64 sum is a bitwise OR
    return (bits.view(rows, -1, 64) << _SHIFTS).sum(dim=-1)


def unpack_signs_reference(packed: Tensor, k: int) -> Tensor:
    """+-1 float64 values of packed rows (inverse of :func:`pack_signs` on signs)."""
    bits = (packed.unsqueeze(-1) >> _SHIFTS) & 1
    return (1 - 2 * bits.flatten(1)[:, :k]).to(torch.float64)


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


def unpack_bits_reference(packed: Tensor, k: int) -> Tensor:
    """0/1 float64 values of packed bit rows."""
    return ((packed.unsqueeze(-1) >> _SHIFTS) & 1).flatten(1)[:, :k].to(torch.float64)


# --- fast versions ------------------------------------------------------------------------------

def _check_packed(name: str, t: Tensor, cols: int) -> Tensor:
    if t.dtype != torch.int64 or t.dim() != 2 or t.shape[1] != cols:
        raise ValueError(f"{name} must be an int64 tensor of packed rows (R, {cols}), got "
                         f"{t.dtype} {tuple(t.shape)}")
    return t.contiguous()


def pack_signs(x: Tensor, *, path: str | None = None) -> Tensor:
    """Pack the signs of a float32 (rows, k) tensor into (rows, ceil(k / 64)) int64 words
    (bit 1 where x < 0). ``path`` forces "scalar", "avx2" or "avx512"."""
    if x.dim() != 2:
        raise ValueError(f"pack_signs expects a 2-D tensor (rows, k), got shape {tuple(x.shape)}")
    lib = _library()
    if lib is None:
        return pack_signs_reference(x)
    x = x.detach().to(torch.float32).contiguous()
    out = torch.empty(x.shape[0], words(x.shape[1]), dtype=torch.int64)
    code = -1 if path is None else _path_code(path)
    if lib.ec_pack_signs(x.data_ptr(), x.shape[0], x.shape[1], out.data_ptr(), code) != 0:
        raise RuntimeError(f"pack_signs path {path!r} is not supported on this CPU; supported: "
                           f"{supported_paths()}")
    return out


PANEL = 16


def pack_panels(b: Tensor) -> Tensor:
    """Row-packed weights (N, W) -> the GEMM's panel layout (ceil(N / 16), W, 16): the words of
    16 consecutive rows side by side, missing rows zero. Do it once per layer (freeze time)."""
    n, kw = b.shape
    lib = _load()
    if lib is None:
        padded = torch.zeros(-(-n // PANEL) * PANEL, kw, dtype=torch.int64)
        padded[:n] = b
        return padded.view(-1, PANEL, kw).transpose(1, 2).contiguous()
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


def binary_gemm_signs_reference(a: Tensor, b: Tensor, k: int, mask: Tensor | None = None,
                                scale: Tensor | None = None,
                                bias: Tensor | None = None) -> Tensor:
    """Reference :func:`binary_gemm_signs`."""
    return pack_signs_reference(binary_gemm_affine_reference(a, b, k, mask, scale, bias))


def binary_gemm_affine_reference(a: Tensor, b: Tensor, k: int, mask: Tensor | None = None,
                                 scale: Tensor | None = None, bias: Tensor | None = None,
                                 residual: Tensor | None = None,
                                 clamp: tuple[float, float] | None = None) -> Tensor:
    """Reference :func:`binary_gemm_affine`: the reference GEMM, then torch's multiply, add,
    residual add and clamp."""
    y = binary_gemm_reference(a, b, k, mask).to(torch.float32)
    if scale is not None:
        y = y * scale.to(torch.float32)
    if bias is not None:
        y = y + bias.to(torch.float32)
    if residual is not None:
        y = y + residual.to(torch.float32)
    if clamp is not None:
        y = y.clamp(*clamp)
    return y


def _gemm(a: Tensor, b: Tensor, k: int, mask: Tensor | None, panels: Tensor | None,
          path: str | None, threads: int | None, output: str, scale: Tensor | None = None,
          bias: Tensor | None = None, residual: Tensor | None = None,
          clamp: tuple[float, float] | None = None) -> Tensor:
    """The GEMM with its output form: "int32" dot products, "float32" affine values, or the
    "signs" of the affine values, packed."""
    kw = a.shape[1] if a.dim() == 2 else -1
    if kw * 64 < k:
        raise ValueError(f"k = {k} values do not fit in rows of {kw} words")
    a, b = _check_packed("a", a, kw), _check_packed("b", b, kw)
    m, n = a.shape[0], b.shape[0]
    if mask is not None:
        mask = _check_packed("mask", mask, kw)
        if mask.shape[0] != m:
            raise ValueError(f"mask has {mask.shape[0]} rows but a has {m}")
    for name, t in (("scale", scale), ("bias", bias)):
        if t is not None and (t.dim() != 1 or t.shape[0] != n):
            raise ValueError(f"{name} must be a vector of {n} values, got shape {tuple(t.shape)}")
    if residual is not None and tuple(residual.shape) != (m, n):
        raise ValueError(f"residual must have shape {(m, n)}, got {tuple(residual.shape)}")
    if clamp is not None and not clamp[0] <= clamp[1]:
        raise ValueError(f"clamp needs lo <= hi, got {clamp}")
    lib = _library()
    if lib is None:
        if output == "int32":
            return binary_gemm_reference(a, b, k, mask)
        if output == "float32":
            return binary_gemm_affine_reference(a, b, k, mask, scale, bias, residual, clamp)
        return binary_gemm_signs_reference(a, b, k, mask, scale, bias)
    code = -1 if path is None else _path_code(path)
    if panels is None:
        panels = pack_panels(b)
    elif tuple(panels.shape) != (-(-n // PANEL), kw, PANEL):
        raise ValueError(f"panels have shape {tuple(panels.shape)}, expected "
                         f"{(-(-n // PANEL), kw, PANEL)} for b {tuple(b.shape)}")
    scale, bias, residual = (None if t is None else t.detach().to(torch.float32).contiguous()
                             for t in (scale, bias, residual))
    if output == "int32":
        out = torch.empty(m, n, dtype=torch.int32)
    elif output == "float32":
        out = torch.empty(m, n, dtype=torch.float32)
    else:
        out = torch.empty(m, words(n), dtype=torch.int64)
    targets = [out.data_ptr() if output == form else None for form in ("int32", "float32", "signs")]
    status = lib.ec_binary_gemm(a.data_ptr(), None if mask is None else mask.data_ptr(),
                                panels.data_ptr(), m, n, kw, k, *targets,
                                None if scale is None else scale.data_ptr(),
                                None if bias is None else bias.data_ptr(),
                                None if residual is None else residual.data_ptr(),
                                int(clamp is not None), *(clamp or (0.0, 0.0)), code,
                                threads or torch.get_num_threads())
    if status != 0:
        raise RuntimeError(f"binary_gemm path {path!r} is not supported on this CPU; supported: "
                           f"{supported_paths()}")
    return out


# --- W1A32: binary weights, float activations ----------------------------------------------------

def sign_panels(b: Tensor, k: int) -> Tensor:
    """Row-packed weights (N, W) -> the W1A32 GEMM's "sign panels": int16 (ceil(N / 16), k),
    entry [p, t] with bit j set when weight (16 p + j, t) is -1."""
    n = b.shape[0]
    neg = unpack_bits_reference(b, k).to(torch.int32)  # (N, k), 1 where -1
    padded = torch.zeros(-(-n // 16) * 16, k, dtype=torch.int32)
    padded[:n] = neg
    masks = (padded.view(-1, 16, k) << torch.arange(16, dtype=torch.int32).view(1, 16, 1)).sum(1)
    return masks.to(torch.int16) if k else masks.to(torch.int16)


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
    if scale is not None:
        y = y * scale.to(torch.float32)
    if bias is not None:
        y = y + bias.to(torch.float32)
    return y


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
    for name, t in (("scale", scale), ("bias", bias)):
        if t is not None and (t.dim() != 1 or t.shape[0] != n):
            raise ValueError(f"{name} must be a vector of {n} values, got shape {tuple(t.shape)}")
    lib = _library()
    m, k = x.shape
    if lib is None:
        signs = ((panels.to(torch.int32).unsqueeze(1) >> torch.arange(16).view(1, 16, 1)) & 1)
        b = pack_signs_reference(-(signs.reshape(-1, k)[:n].double() * 2 - 1))
        return w1a32_gemm_reference(x, b, k, scale, bias)
    x = x.detach().to(torch.float32).contiguous()
    scale, bias = (None if t is None else t.detach().to(torch.float32).contiguous()
                   for t in (scale, bias))
    out = torch.empty(m, n, dtype=torch.float32)
    code = -1 if path is None else _path_code(path)
    status = lib.ec_w1a32_gemm(x.data_ptr(), panels.contiguous().data_ptr(), m, n, k,
                               None if scale is None else scale.data_ptr(),
                               None if bias is None else bias.data_ptr(), out.data_ptr(), code,
                               threads or torch.get_num_threads())
    if status != 0:
        raise RuntimeError(f"w1a32_gemm path {path!r} is not supported on this CPU; supported: "
                           f"{supported_paths()}")
    return out


def conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def pack_conv_weights(weight: Tensor) -> Tensor:
    """(N, C, kh, kw) float -> (N, kh * kw * ceil(C / 64)) words in the im2col order of
    :func:`im2col_signs` (kernel row, kernel column, channel; channels padded per pixel)."""
    n, c, kh, kw = weight.shape
    cw = words(c)
    padded = torch.ones(n, kh, kw, cw * 64)
    padded[..., :c] = weight.detach().permute(0, 2, 3, 1)
    return pack_signs(padded.reshape(n, -1))[:, : kh * kw * cw].contiguous()


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


def pack_pixels(x: Tensor) -> Tensor:
    """Signs of the channels of every pixel of x (n, c, h, w), packed: (n, h, w, ceil(c / 64))
    int64 words. A channels-last input is packed row by row (its channels are contiguous);
    any other layout goes through the plane-by-plane C kernel."""
    n, c, h, w = x.shape
    lib = _library()
    if lib is None:
        return pack_signs_reference(x.detach().permute(0, 2, 3, 1).reshape(-1, c)).view(
            n, h, w, words(c))
    x = x.detach().to(torch.float32)
    if x.is_contiguous(memory_format=torch.channels_last):
        return pack_signs(x.permute(0, 2, 3, 1).reshape(n * h * w, c)).view(n, h, w, words(c))
    x = x.contiguous()
    pixels = torch.empty(n, h, w, words(c), dtype=torch.int64)
    lib.ec_pack_channels(x.data_ptr(), n, c, h, w, pixels.data_ptr())
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
    if _library() is None:
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
    lib = _library()
    if lib is None:
        signs = unpack_signs_reference(pixels.reshape(-1, cw), channels).to(torch.float32)
        x = signs.view(n, h, w, channels).permute(0, 3, 1, 2)
        return im2col_signs_reference(x, kernel, stride, padding, dilation, masked)
    pixels = pixels.contiguous()
    if not masked and tuple(kernel) == (1, 1) and tuple(stride) == (1, 1):
        return pixels.view(n * h * w, cw), None
    oh = conv_output_size(h, kernel[0], stride[0], padding[0], dilation[0])
    ow = conv_output_size(w, kernel[1], stride[1], padding[1], dilation[1])
    rows = torch.empty(n * oh * ow, kernel[0] * kernel[1] * cw, dtype=torch.int64)
    mask = torch.empty_like(rows) if masked else None
    lib.ec_im2col_words(pixels.data_ptr(), n, channels, h, w, kernel[0], kernel[1], stride[0],
                        stride[1], padding[0], padding[1], dilation[0], dilation[1],
                        rows.data_ptr(), None if mask is None else mask.data_ptr())
    return rows, mask


# --- SignSwish (training) -------------------------------------------------------------------------

SIGNSWISH_OPS = ("value", "prox", "grad")


def signswish_usable(x: Tensor) -> bool:
    """True when :func:`signswish` can run on ``x``: the library is loaded (else a warning, once),
    ``x`` is a float32 CPU tensor, and no torch.compile / export trace is running (those see the
    PyTorch formulas, which they fuse themselves)."""
    if x.dtype != torch.float32 or x.device.type != "cpu":
        return False
    if torch.compiler.is_compiling() or torch.compiler.is_exporting():
        return False
    return _library() is not None


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
    Raises RuntimeError if the compiled library is unavailable (check :func:`signswish_usable`).
    """
    if op not in SIGNSWISH_OPS:
        raise ValueError(f"op must be one of {SIGNSWISH_OPS}, got {op!r}")
    if x.dtype != torch.float32 or x.device.type != "cpu":
        raise TypeError(f"signswish needs a float32 CPU tensor, got {x.dtype} on {x.device}")
    if (op == "grad") != (grad is not None):
        raise ValueError("grad is needed for op='grad' and only for it")
    lib = _library()
    if lib is None:
        raise RuntimeError(f"edgecompress C kernels unavailable ({_load_error})")
    x = x.contiguous()
    if grad is not None:
        if grad.shape != x.shape:
            raise ValueError(f"grad has shape {tuple(grad.shape)}, x has {tuple(x.shape)}")
        grad = grad.to(torch.float32).contiguous()
    out = torch.empty_like(x)
    code = lib.ec_best_path() if path is None else _path_code(path)
    status = lib.ec_signswish(x.data_ptr(), None if grad is None else grad.data_ptr(),
                              out.data_ptr(), x.numel(), float(beta), float(mu),
                              SIGNSWISH_OPS.index(op), code, threads or torch.get_num_threads())
    if status != 0:
        raise ValueError(f"path {path!r} is not supported by this build")
    return out


def _path_code(path: str) -> int:
    if path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}, got {path!r}")
    return PATHS.index(path)


__all__ = ["available", "supported_paths", "words", "signswish", "signswish_usable",
           "pack_signs", "pack_panels", "binary_gemm",
           "binary_gemm_affine", "binary_gemm_affine_reference", "binary_gemm_signs",
           "binary_gemm_signs_reference", "pack_pixels", "im2col_words", "sign_panels",
           "w1a32_gemm", "w1a32_gemm_reference",
           "pack_conv_weights", "im2col_signs", "im2col_signs_reference", "conv_output_size",
           "pack_signs_reference", "unpack_signs_reference", "binary_gemm_reference"]
