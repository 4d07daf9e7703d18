"""MNIST-format datasets (MNIST, Fashion-MNIST, KMNIST) from IDX files, raw or gzipped.

IDX is big-endian: an image file is a 16-byte header (magic 2051, N, rows, cols) followed by
N*rows*cols uint8 pixels; a label file is an 8-byte header (magic 2049, N) followed by N uint8.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from .base import ImageDataset, check_split, missing_files_error, reject_options

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049

CLASSES = {
    "mnist": [str(d) for d in range(10)],
    "fashion-mnist": ["t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                      "sneaker", "bag", "ankle boot"],
    "kmnist": ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"],
}
MEAN_STD = {"mnist": (0.1307, 0.3081), "fashion-mnist": (0.2860, 0.3530),
            "kmnist": (0.1918, 0.3483)}


def _find(root: Path, stem: str) -> Path | None:
    for candidate in (root / stem, root / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        what = "corrupt or truncated gzip file" if path.suffix == ".gz" else "unreadable file"
        raise DataError(f"{path}: {what}: {exc or type(exc).__name__}") from None


def read_idx_images(path: Path, shape: tuple[int, int] = (28, 28)) -> np.ndarray:
    """uint8 array (N, rows, cols) from an IDX image file; checks magic, length and shape."""
    raw = _read_bytes(path)
    if len(raw) < 16:
        raise DataError(f"{path}: {len(raw)} bytes is too short for an IDX image header (16)")
    magic, n, rows, cols = struct.unpack(">IIII", raw[:16])
    if magic != IMAGE_MAGIC:
        raise DataError(f"{path}: not an IDX image file (magic {magic}, expected {IMAGE_MAGIC})")
    if (rows, cols) != shape:
        raise DataError(f"{path}: images are {rows}x{cols}, expected {shape[0]}x{shape[1]}")
    expected = 16 + n * rows * cols
    if len(raw) != expected:
        raise DataError(f"{path}: truncated or corrupt: header says {n} images = {expected} "
                        f"bytes, file has {len(raw)}")
    return np.frombuffer(raw, np.uint8, offset=16).reshape(n, rows, cols)


def read_idx_labels(path: Path) -> np.ndarray:
    """uint8 array (N,) from an IDX label file; checks magic and length."""
    raw = _read_bytes(path)
    if len(raw) < 8:
        raise DataError(f"{path}: {len(raw)} bytes is too short for an IDX label header (8)")
    magic, n = struct.unpack(">II", raw[:8])
    if magic != LABEL_MAGIC:
        raise DataError(f"{path}: not an IDX label file (magic {magic}, expected {LABEL_MAGIC})")
    if len(raw) != 8 + n:
        raise DataError(f"{path}: truncated or corrupt: header says {n} labels = {8 + n} bytes, "
                        f"file has {len(raw)}")
    return np.frombuffer(raw, np.uint8, offset=8)


def load_idx_dataset(name: str, root: Path, split: str, **options: Any) -> ImageDataset:
    """The ``split`` of the MNIST-format dataset ``name`` stored in directory ``root``."""
    reject_options(name, options)
    image_stem, label_stem = FILES[check_split(split, name)]
    image_file, label_file = _find(root, image_stem), _find(root, label_stem)
    if image_file is None or label_file is None:
        raise missing_files_error(name, root, [f"{s} (or {s}.gz)" for s in FILES[split]])
    images, labels = read_idx_images(image_file), read_idx_labels(label_file)
    if len(images) != len(labels):
        raise DataError(f"{image_file} has {len(images)} images but {label_file} has "
                        f"{len(labels)} labels")
    if len(labels) and int(labels.max()) >= len(CLASSES[name]):
        raise DataError(f"{label_file}: labels must be in 0..{len(CLASSES[name]) - 1}, found "
                        f"{int(labels.max())}")
    mean, std = MEAN_STD[name]
    return ImageDataset(torch.from_numpy(images.copy()).unsqueeze(1),
                        torch.from_numpy(labels.astype(np.int64)), CLASSES[name], [mean], [std],
                        source=str(image_file))
