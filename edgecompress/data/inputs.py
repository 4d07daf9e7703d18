"""Input files -> model inputs, preprocessed exactly as the training data (``edgecompress
predict``): :func:`read_input`.

What each kind of file (recognised by :func:`edgecompress.files.detect_kind`) gives:

- an image (PNG, JPEG; needs pillow): converted to grayscale or RGB as the model has 1 or 3
  channels, then the model's :class:`~edgecompress.data.preprocess.Preprocessing` (``image``);
  it must already have the model's height and width (no resizing: a silent resize would change
  what the model sees);
- a WAV clip (mono 16-bit PCM at the model's sample rate): the ``log-mel`` preprocessing;
- a ``.npy`` array: floats of the model's input shape, or a batch ``(N, *shape)`` of them, are
  taken as already preprocessed inputs; raw data is preprocessed like a file: uint8 pixels
  ``(C, H, W)``, ``(H, W)`` (one channel) or a batch ``(N, C, H, W)``; int16 audio samples
  ``(n,)`` at the model's sample rate.

A file that does not fit (another kind, another shape) is a DataError naming the file, what it
holds and what the model expects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import DataError
from ..files import FileKind, detect_kind
from .audio import read_wav
from .preprocess import Preprocessing

__all__ = ["read_input", "open_image", "INPUT_KINDS"]

#: the file kinds :func:`read_input` reads
INPUT_KINDS = (FileKind.IMAGE, FileKind.NPY, FileKind.WAV)
_SAMPLE_FROM = {FileKind.IMAGE: "image", FileKind.WAV: "audio"}
_ACCEPTS = {"image": "images (PNG, JPEG) or .npy arrays", "audio": "WAV clips or .npy arrays"}


def open_image(path: str | Path) -> Any:
    """``PIL.Image.open(path)``, with a clear error when pillow is not installed or the file
    cannot be decoded."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise DataError(f"{path}: reading images needs pillow: pip install pillow") from None
    try:
        return Image.open(path)
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path}: not a readable image ({exc})") from None


def _image_pixels(path: Path, channels: int) -> np.ndarray:
    """uint8 (channels, H, W) pixels of an image file."""
    modes = {1: "L", 3: "RGB"}
    if channels not in modes:
        raise DataError(f"{path}: the model takes {channels}-channel inputs, which an image "
                        f"file cannot give; give a .npy array")
    with open_image(path) as image:
        try:
            pixels = np.array(image.convert(modes[channels]))
        except OSError as exc:  # truncated data found while decoding
            raise DataError(f"{path}: not a readable image ({exc})") from None
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def _fits(shape: Sequence[int], input_shape: tuple[int, ...]) -> bool:
    return tuple(shape) == input_shape or tuple(shape[1:]) == input_shape


def _from_array(path: Path, array: np.ndarray, input_shape: tuple[int, ...],
                preprocessing: Preprocessing | None, dtype: torch.dtype) -> Tensor:
    model_float = dtype.is_floating_point
    if (np.issubdtype(array.dtype, np.floating) == model_float) and _fits(array.shape,
                                                                          input_shape):
        x = torch.from_numpy(np.ascontiguousarray(array)).to(dtype)  # already preprocessed
        return x[None] if tuple(x.shape) == input_shape else x
    sample = preprocessing.sample if preprocessing is not None else None
    if sample == "image" and array.dtype == np.uint8 and array.ndim in (2, 3, 4):
        pixels = array[None] if array.ndim == 2 else array
        rows = pixels if pixels.ndim == 4 else pixels[None]
        return torch.stack([preprocessing.apply(torch.from_numpy(np.ascontiguousarray(r)),
                                                str(path)) for r in rows])
    if sample == "audio" and array.dtype == np.int16 and array.ndim == 1:
        rate = preprocessing.sample_rate  # type: ignore[attr-defined]
        return preprocessing.apply((array, rate), str(path))[None]
    raw = {"image": "or raw uint8 pixels (C, H, W), (H, W) or (N, C, H, W)",
           "audio": "or raw int16 samples (n,)"}.get(sample or "", "")
    raise DataError(f"{path}: array of {array.dtype} and shape {tuple(array.shape)} does not "
                    f"fit the model, which expects {str(dtype).removeprefix('torch.')} inputs of "
                    f"shape {input_shape} (or a batch (N, {', '.join(map(str, input_shape))}))"
                    f"{' ' + raw if raw else ''}")


def read_input(path: str | Path, input_shape: Sequence[int],
               preprocessing: Preprocessing | None,
               dtype: torch.dtype = torch.float32) -> Tensor:
    """The model inputs (N, *input_shape) in file ``path`` (see the module docstring):
    ``preprocessing`` is the model's (a frozen file's metadata), None if its inputs have none
    (then only preprocessed ``.npy`` arrays are read)."""
    path = Path(path)
    shape = tuple(int(d) for d in input_shape)
    kind = detect_kind(path)
    if kind is FileKind.MISSING:
        raise DataError(f"input file not found: {path}")
    if kind not in INPUT_KINDS:
        raise DataError(f"{path}: this is {kind.what}; predict reads images (PNG, JPEG), "
                        f".npy arrays and WAV clips")
    if kind is FileKind.NPY:
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise DataError(f"{path}: not a readable .npy array ({exc})") from None
        return _from_array(path, array, shape, preprocessing, dtype)
    sample = preprocessing.sample if preprocessing is not None else None
    if sample != _SAMPLE_FROM[kind]:
        accepts = _ACCEPTS.get(sample or "", "preprocessed .npy arrays")
        raise DataError(f"{path}: this is {kind.what}, but the model takes {accepts}")
    if kind is FileKind.IMAGE:
        pixels = _image_pixels(path, preprocessing.channels)  # type: ignore[union-attr]
        x = preprocessing.apply(torch.from_numpy(pixels), str(path))
    else:
        x = preprocessing.apply(read_wav(path), str(path))
    if tuple(x.shape) != shape:  # a preprocessing that does not give the model's inputs
        raise DataError(f"{path}: preprocessed to shape {tuple(x.shape)}, the model expects "
                        f"{shape}")
    return x[None].to(dtype)
