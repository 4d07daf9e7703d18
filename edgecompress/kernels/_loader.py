"""Finding and loading the compiled C kernels, and the Python side of their calling conventions.

The kernels are one plain C shared library, ``_kernels*.so`` next to this file, built by
setup.py from the ``.c`` files here (see ``kernels.h``) and loaded with ctypes; nothing else in
the package touches ctypes. :func:`load` returns it, or None when it was not built or cannot be
loaded (remembering why); :func:`library` is what the kernel functions call: the same, but the
first time the library is missing it warns once that the PyTorch reference path is used.

Also here: the dispatch path names (``path=`` of the kernel functions) and their codes, and
:func:`check_status`, which turns a kernel's status code (``EC_*`` in ``kernels.h``) into the
Python exception that says what went wrong.
"""

from __future__ import annotations

import ctypes
import warnings
from pathlib import Path

PATHS = ("scalar", "avx2", "avx512")  # index = the C path code (EC_PATH_* in kernels.h)

_p, _i64, _i32, _f32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_float

# exported C function -> (argument types, result type)
_SIGNATURES: dict[str, tuple[list, type | None]] = {
    "ec_best_path": ([], _i32),
    "ec_pack_signs": ([_p, _p, _i64, _i64, _p, _i32], _i32),
    "ec_pack_head_signs": ([_p, _p, _i64, _i64, _i64, _i64, _p, _i32], _i32),
    "ec_pack_prob_masks": ([_p, _f32, _i64, _i64, _p, _i32, _i32], _i32),
    "ec_pack_value_columns": ([_p, _p, _i64, _i64, _i64, _i64, _p, _i32], _i32),
    "ec_pack_pixels": ([_p, _i32] + [_i64] * 8 + [_p, _i32, _i32], _i32),
    "ec_im2col_words": ([_p] + [_i64] * 12 + [_p, _p], None),
    "ec_pack_panels": ([_p, _i64, _i64, _p], None),
    "ec_set_gemm_block_bytes": ([_i64], None),
    "ec_set_pad_correction": ([_i32], None),
    "ec_binary_gemm": ([_p, _p, _p, _i64, _i64, _i64, _i64, _p, _p, _p, _p, _p, _p, _i32, _f32,
                        _f32, _i32, _i32], _i32),
    "ec_binary_conv": ([_p, _p, _p, _i64, _p, _p, _p, _p, _p, _p, _i32, _f32, _f32, _i32, _i32,
                        _p], _i32),
    "ec_conv_tap_popcounts": ([_p, _i64, _i64, _i64, _p], None),
    "ec_binary_gemm_groups": ([_p, _p, _i64, _i64, _i64, _i64, _i64, _p, _p, _i32, _i32], _i32),
    "ec_mask_matmul": ([_p, _p, _i64, _i64, _i64, _i64, _i64, _f32, _p, _i32, _i32], _i32),
    "ec_w1a32_gemm": ([_p, _p, _i64, _i64, _i64, _p, _p, _p, _i32, _i32], _i32),
    "ec_lowbit_gemm": ([_p, _p, _p, _i32, _i64, _i64, _i64, _p, _p, _p, _i32, _i32], _i32),
    "ec_signswish": ([_p, _p, _p, _i64, _f32, _f32, _i32, _i32, _i32], _i32),
    "ec_block_epilogue": ([_p, _p, _i64, _i64, _i64, _p, _p, _p, _p, _p, _p, _p, _p, _i32, _i32],
                          _i32),
    "ec_pool_branches": ([_p, _i64, _i64, _i64, _i64, _i64, _p, _p, _p, _i64, _i32, _i32], _i32),
    "ec_max_pool2d": ([_p, _i64, _p, _p, _i32, _i32], _i32),
    "ec_int8_conv_vnni": ([], _i32),
    "ec_int8_conv": ([_p, _i32, _p, _f32, _i32, _i32, _p, _p, _i64, _p, _p, _p, _i32, _i32],
                     _i32),
    "ec_conv2d_f32": ([_p] + [_i64] * 4 + [_p] + [_i64] * 7 + [_i32, _p, _p, _i32, _f32, _f32,
                                                             _p, _i32, _i32], _i32),
    "ec_conv2d_f32_planned": ([_p, _p, _p, _p], _i32),
    "ec_adder_input_grad": ([_p] + [_i64] * 4 + [_p] + [_i64] * 7 + [_p, _p, _i32, _i32], _i32),
    "ec_binary_conv_planned": ([_p, _p, _p, _p], _i32),
    "ec_euclid_patch_planned": ([_p, _p, _p, _p, _p, _p, _f32], _i32),
    "ec_euclid_patch_grad_planned": ([_p, _p, _p, _p, _i32, _f32], _i32),
}



class ConvF32Plan(ctypes.Structure):
    """``ec_conv_f32_plan`` of conv_f32.c: the fixed arguments of one direct float convolution
    (one layer, one input shape), passed to ``ec_conv2d_f32_planned`` as one pointer."""

    _fields_ = [(name, _i64) for name in ("n", "c", "h", "w", "oc", "kh", "kw", "sh", "sw",
                                          "ph", "pw")] + [
        ("weight", _p), ("bias", _p), ("lo", _f32), ("hi", _f32), ("clamp", ctypes.c_int32),
        ("op", ctypes.c_int32), ("path", ctypes.c_int32), ("threads", ctypes.c_int32)]


class BinaryConvArgs(ctypes.Structure):
    """``ec_binary_conv_plan`` of gemm_w1a1.c: the fixed arguments of one frozen binary
    convolution for one input (geometry, weight panels, epilogue, input kind, path, threads),
    passed to ``ec_binary_conv_planned`` as one pointer."""

    _fields_ = [("geometry", _i64 * 12), ("bp", _p), ("tap_pop", _p), ("scale", _p),
                ("bias", _p),
                ("n_out", _i64), ("k", _i64), ("lo", _f32), ("hi", _f32)] + [
        (name, ctypes.c_int32) for name in ("clamp", "signs", "implicit", "masked", "input",
                                            "path", "threads")]


class PatchPlan(ctypes.Structure):
    """``ec_patch_plan`` of euclid_patch.c: the geometry of EuclidNet's per-patch term for one
    layer and input shape (n, c, g, h, w, c_out / g, oh, ow, kh, kw, sh, sw, ph, pw), the
    layouts of y (or its gradient) and x, path and threads, passed to ``ec_euclid_patch_planned``
    / ``ec_euclid_patch_grad_planned`` as one pointer."""

    _fields_ = [(name, _i64) for name in ("n", "c", "g", "h", "w", "co", "oh", "ow", "kh", "kw",
                                          "sh", "sw", "ph", "pw")] + [
        (name, ctypes.c_int32) for name in ("y_last", "x_last", "path", "threads")]


def by_reference(struct: ctypes.Structure) -> ctypes.c_void_p:
    """A pointer argument to ``struct`` (kept alive by the caller)."""
    return ctypes.c_void_p(ctypes.addressof(struct))


_lib: ctypes.CDLL | None = None
_load_error: str | None = None
_warned = False


def load() -> ctypes.CDLL | None:
    """The loaded library, or None (then :func:`load_error` says why). Loads it on first use."""
    global _lib, _load_error
    if _lib is not None or _load_error is not None:
        return _lib
    candidates = sorted(Path(__file__).parent.glob("_kernels*.so"))
    if not candidates:
        _load_error = "the compiled library _kernels*.so is not in the package (build skipped?)"
        return None
    try:
        lib = ctypes.CDLL(str(candidates[0]))
        for name, (argtypes, restype) in _SIGNATURES.items():
            function = getattr(lib, name)
            function.argtypes, function.restype = argtypes, restype
    except (OSError, AttributeError) as exc:  # unloadable, or built from other sources
        _load_error = f"{candidates[0]} could not be loaded: {exc}"
        return None
    _lib = lib
    return lib


def load_error() -> str | None:
    """Why the library is not loaded (None while it is, or before the first attempt)."""
    return _load_error


def library() -> ctypes.CDLL | None:
    """:func:`load`, and when the library is missing a warning, the first time only, that the
    slower PyTorch reference path runs instead (pointing at the caller of the kernel function)."""
    global _warned
    lib = load()
    if lib is None and not _warned:
        warnings.warn(f"edgecompress C kernels unavailable ({_load_error}); using the slower "
                      "PyTorch reference path", RuntimeWarning, stacklevel=3)
        _warned = True
    return lib


def available() -> bool:
    """True when the compiled kernels are loaded."""
    return load() is not None


def supported_paths() -> list[str]:
    """Dispatch paths this CPU can run (always includes ``"scalar"`` when compiled)."""
    lib = load()
    return list(PATHS[: lib.ec_best_path() + 1]) if lib is not None else []


def path_code(path: str | None) -> int:
    """The C code of a path name; None -> -1, the best path this CPU runs."""
    if path is None:
        return -1
    if path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}, got {path!r}")
    return PATHS.index(path)


# C status (EC_* in kernels.h) -> (exception, message); the message may use {kernel}, {path}
_STATUS: dict[int, tuple[type[Exception], str]] = {
    -1: (RuntimeError, "{kernel}: path {path!r} is not supported on this CPU; supported: "
                       "{supported}"),
    -2: (MemoryError, "{kernel}: out of memory (the C kernel could not allocate its work "
                      "buffers)"),
    -3: (RuntimeError, "{kernel}: the C kernel rejected an argument the Python wrapper should "
                       "have checked (a bug in edgecompress)"),
}


def check_status(status: int, kernel: str, path: str | None) -> None:
    """Raise the exception of a kernel's non-zero status (``kernel``: the Python function's
    name, for the message)."""
    if status == 0:
        return
    error, message = _STATUS.get(status, (RuntimeError, f"{{kernel}}: unknown status {status}"))
    raise error(message.format(kernel=kernel, path=path, supported=supported_paths()))
