"""Fast CPU kernels for deployed low-bit models, each with a slow reference in plain PyTorch.

Binary kernels (``binary.c``, built by the package's own build and loaded with ctypes):

- :func:`pack_signs`: float rows -> 1 bit per value (bit 1 = -1, bit 0 = +1), 64 per word,
  rows padded with 0 bits to whole words;
- :func:`binary_gemm`: ``C[m, n] = valid(m) - 2 popcount((A[m] ^ B[n]) & mask[m])``, i.e. the
  dot product of +-1 rows restricted to the valid positions (all positions without a mask).

The GEMM dispatches at run time to AVX-512 VPOPCNTDQ, AVX2 or portable scalar code (force one
with ``path=``) and uses OpenMP threads. If the library was not built, every function runs its
reference implementation and a warning says so once. Packed words are stored in int64 tensors
(the same 64 bits as uint64).
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
    candidates = sorted(Path(__file__).parent.glob("_binary*.so"))
    if not candidates:
        _load_error = "the compiled library _binary*.so is not in the package (build skipped?)"
        return None
    try:
        lib = ctypes.CDLL(str(candidates[0]))
    except OSError as exc:
        _load_error = f"{candidates[0]} could not be loaded: {exc}"
        return None
    p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    lib.ec_pack_signs.argtypes = [p, i64, i64, p]
    lib.ec_pack_signs.restype = None
    lib.ec_pack_panels.argtypes = [p, i64, i64, p]
    lib.ec_pack_panels.restype = None
    lib.ec_binary_gemm.argtypes = [p, p, p, i64, i64, i64, i64, p, i32, i32]
    lib.ec_binary_gemm.restype = i32
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
    """Reference :func:`binary_gemm`: unpack to +-1 and multiply exactly in float64."""
    av, bv = unpack_signs_reference(a, k), unpack_signs_reference(b, k)
    if mask is not None:
        av = av * unpack_bits_reference(mask, k)
    return (av @ bv.T).round().to(torch.int32)


def unpack_bits_reference(packed: Tensor, k: int) -> Tensor:
    """0/1 float64 values of packed bit rows."""
    return ((packed.unsqueeze(-1) >> _SHIFTS) & 1).flatten(1)[:, :k].to(torch.float64)


# --- fast versions ------------------------------------------------------------------------------

def _check_packed(name: str, t: Tensor, cols: int) -> Tensor:
    if t.dtype != torch.int64 or t.dim() != 2 or t.shape[1] != cols:
        raise ValueError(f"{name} must be an int64 tensor of packed rows (R, {cols}), got "
                         f"{t.dtype} {tuple(t.shape)}")
    return t.contiguous()


def pack_signs(x: Tensor) -> Tensor:
    """Pack the signs of a float32 (rows, k) tensor into (rows, ceil(k / 64)) int64 words."""
    if x.dim() != 2:
        raise ValueError(f"pack_signs expects a 2-D tensor (rows, k), got shape {tuple(x.shape)}")
    lib = _library()
    if lib is None:
        return pack_signs_reference(x)
    x = x.detach().to(torch.float32).contiguous()
    out = torch.empty(x.shape[0], words(x.shape[1]), dtype=torch.int64)
    lib.ec_pack_signs(x.data_ptr(), x.shape[0], x.shape[1], out.data_ptr())
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

    a: (M, W) packed activations; b: (N, W) packed weights; k: values per row (W = ceil(k/64));
    mask: optional (M, W) packed validity bits; panels: ``pack_panels(b)`` if already computed;
    path: force "scalar", "avx2" or "avx512"; threads: OpenMP threads (default:
    torch.get_num_threads()).
    """
    kw = words(k)
    a, b = _check_packed("a", a, kw), _check_packed("b", b, kw)
    if mask is not None:
        mask = _check_packed("mask", mask, kw)
        if mask.shape[0] != a.shape[0]:
            raise ValueError(f"mask has {mask.shape[0]} rows but a has {a.shape[0]}")
    lib = _library()
    if lib is None:
        return binary_gemm_reference(a, b, k, mask)
    code = -1 if path is None else _path_code(path)
    if panels is None:
        panels = pack_panels(b)
    elif tuple(panels.shape) != (-(-b.shape[0] // PANEL), kw, PANEL):
        raise ValueError(f"panels have shape {tuple(panels.shape)}, expected "
                         f"{(-(-b.shape[0] // PANEL), kw, PANEL)} for b {tuple(b.shape)}")
    out = torch.empty(a.shape[0], b.shape[0], dtype=torch.int32)
    status = lib.ec_binary_gemm(a.data_ptr(), None if mask is None else mask.data_ptr(),
                                panels.data_ptr(), a.shape[0], b.shape[0], kw, k, out.data_ptr(),
                                code, threads or torch.get_num_threads())
    if status != 0:
        raise RuntimeError(f"binary_gemm path {path!r} is not supported on this CPU; supported: "
                           f"{supported_paths()}")
    return out


def _path_code(path: str) -> int:
    if path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}, got {path!r}")
    return PATHS.index(path)


__all__ = ["available", "supported_paths", "words", "pack_signs", "pack_panels", "binary_gemm",
           "pack_signs_reference", "unpack_signs_reference", "binary_gemm_reference"]
