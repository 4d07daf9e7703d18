"""CIFAR-10 from the standard python-pickle batches or from .npz arrays.

The pickle batches are read with a restricted unpickler that only rebuilds numpy arrays, so a
tampered file cannot run code.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from .base import ImageDataset, check_split, missing_files_error

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck"]
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
BATCH_DIR = "cifar-10-batches-py"
BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("_codecs", "encode"),  # how Python 3 pickles bytes at protocol <= 2
}


class _SafeUnpickler(pickle.Unpickler):
    """Only what CIFAR batches contain: dicts, lists, bytes, numbers and numpy arrays."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a CIFAR batch")


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 32, 32, 3), labels int64) from one pickle batch."""
    try:
        with open(path, "rb") as f:
            batch = _SafeUnpickler(f, encoding="bytes").load()
    except pickle.UnpicklingError as exc:
        raise DataError(f"{path}: refused or corrupt pickle: {exc}") from None
    except (EOFError, ValueError, TypeError, OSError, IndexError) as exc:
        raise DataError(f"{path}: truncated or corrupt pickle: {exc or type(exc).__name__}") from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DataError(f"{path}: not a CIFAR batch (expected a dict with b'data' and b'labels')")
    data = np.asarray(batch[b"data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: data has shape {data.shape} ({data.dtype}), expected "
                        f"(N, 3072) uint8")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return images, np.asarray(batch[b"labels"], dtype=np.int64)


def read_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 32, 32, 3), labels int64) from an .npz with arrays ``x`` and ``y``."""
    try:
        with np.load(path, allow_pickle=False) as f:
            if "x" not in f or "y" not in f:
                raise DataError(f"{path}: expected arrays 'x' and 'y', found {sorted(f.files)}")
            x, y = f["x"], f["y"]
    except DataError:
        raise
    except Exception as exc:  # zipfile/pickle/value errors of a corrupt archive
        raise DataError(f"{path}: not a readable .npz file: {exc}") from None
    if x.dtype != np.uint8 or x.shape[1:] != (32, 32, 3):
        raise DataError(f"{path}: x has shape {x.shape} ({x.dtype}), expected (N, 32, 32, 3) uint8")
    return x, y.astype(np.int64)


def _npz_file(root: Path, split: str) -> Path | None:
    exact = root / f"{split}.npz"
    if exact.is_file():
        return exact
    matches = sorted(p for p in root.glob("*.npz") if split in p.name)
    if len(matches) > 1:
        raise DataError(f"{root}: several .npz files match split {split!r}: "
                        f"{', '.join(p.name for p in matches)}")
    return matches[0] if matches else None


def load_cifar10(root: Path, split: str) -> ImageDataset:
    """The ``split`` of CIFAR-10 from ``root``: ``cifar-10-batches-py/`` (or ``root`` being that
    folder), else ``<split>.npz`` / a single ``*<split>*.npz``."""
    check_split(split)
    folder = root / BATCH_DIR if (root / BATCH_DIR).is_dir() else root
    files = [folder / b for b in BATCHES[split]]
    if all(f.is_file() for f in files):
        parts = [read_batch(f) for f in files]
        images = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        source = str(folder)
    else:
        npz = _npz_file(root, split) if root.is_dir() else None
        if npz is None:
            raise missing_files_error("cifar10", root, [f"{BATCH_DIR}/{b}" for b in BATCHES[split]]
                                      + [f"or {split}.npz (arrays x uint8 (N,32,32,3), y)"])
        images, labels = read_npz(npz)
        source = str(npz)
    if len(images) != len(labels):
        raise DataError(f"{source}: {len(images)} images but {len(labels)} labels")
    tensor = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    return ImageDataset(tensor, torch.from_numpy(labels), CLASSES, MEAN, STD, source=source)
