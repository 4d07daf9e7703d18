"""CIFAR-10 from the standard python-pickle batches or from .npz arrays.

The pickle batches are read with a restricted unpickler that can only rebuild numpy arrays (plus
the dicts, lists, bytes and ints pickle builds natively), so a tampered file cannot run code.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from .base import ImageDataset, check_split, missing_files_error, reject_options

NAME = "cifar10"
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck"]
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
BATCH_DIR = "cifar-10-batches-py"
BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
CROP_PAD = 4

# Every global a CIFAR batch may reference. The official batches (written by Python 2) need only
# the first three pairs; `_frombuffer` is how numpy pickles arrays at protocol 5, and
# `_codecs.encode` is how Python 3 writes bytes at protocol <= 2 (batches re-saved by Python 3).
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
}


class _RefusedGlobal(Exception):
    """A pickle referenced a global outside :data:`_ALLOWED` (never imported, never called)."""


class _SafeUnpickler(pickle.Unpickler):
    """Unpickler whose ``find_class`` only resolves the numpy array machinery in ``_ALLOWED``."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise _RefusedGlobal(f"{module}.{name}")


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 32, 32, 3), labels int64 (N,)) from one pickle batch file."""
    try:
        with open(path, "rb") as f:
            batch = _SafeUnpickler(f, encoding="bytes").load()
    except _RefusedGlobal as exc:
        raise DataError(f"{path}: refused to unpickle: global '{exc}' is not allowed in a CIFAR "
                        f"batch (only numpy arrays are)") from None
    except Exception as exc:  # garbage can make the unpickler raise almost any exception type
        raise DataError(f"{path}: truncated or corrupt pickle: "
                        f"{type(exc).__name__}: {exc}") from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        found = sorted(map(repr, batch)) if isinstance(batch, dict) else type(batch).__name__
        raise DataError(f"{path}: not a CIFAR batch: expected a dict with keys b'data' and "
                        f"b'labels', found {found}")
    data = batch[b"data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3 * 32 * 32:
        shape = getattr(data, "shape", type(data).__name__)
        raise DataError(f"{path}: b'data' has shape {shape} ({getattr(data, 'dtype', '-')}), "
                        f"expected (N, 3072) uint8")
    labels = _labels(batch[b"labels"], len(data), path, "b'labels'")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def read_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 32, 32, 3), labels int64 (N,)) from an .npz with arrays ``x``, ``y``."""
    try:
        with np.load(path, allow_pickle=False) as f:
            if "x" not in f.files or "y" not in f.files:
                raise DataError(f"{path}: expected arrays 'x' and 'y', found {sorted(f.files)}")
            x, y = f["x"], f["y"]
    except DataError:
        raise
    except Exception as exc:  # zipfile, pickle-refusal and value errors of a corrupt archive
        raise DataError(f"{path}: not a readable .npz file: {type(exc).__name__}: {exc}") from None
    if x.dtype != np.uint8 or x.shape[1:] != (32, 32, 3):
        raise DataError(f"{path}: x has shape {x.shape} ({x.dtype}), expected (N, 32, 32, 3) "
                        f"uint8 (HWC)")
    return x, _labels(y, len(x), path, "y")


def _labels(raw: Any, n: int, path: Path, key: str) -> np.ndarray:
    """Labels as int64 (n,), checking they are n integers."""
    labels = np.asarray(raw)
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{path}: {key} has shape {labels.shape} ({labels.dtype}), expected "
                        f"({n},) integers (one label per image)")
    return labels.astype(np.int64)


def _npz_file(root: Path, split: str) -> Path | None:
    """``<split>.npz`` in ``root``, else the single ``*<split>*.npz`` there (None if none)."""
    if not root.is_dir():
        return None
    exact = root / f"{split}.npz"
    if exact.is_file():
        return exact
    matches = sorted(p for p in root.glob("*.npz") if split in p.name and p.is_file())
    if len(matches) > 1:
        raise DataError(f"{root}: several .npz files match split {split!r} "
                        f"({', '.join(p.name for p in matches)}); keep one or name it {split}.npz")
    return matches[0] if matches else None


def load_cifar10(root: Path, split: str, **options: Any) -> ImageDataset:
    """The ``split`` of CIFAR-10 from ``root``: ``cifar-10-batches-py/`` in it (or ``root`` being
    that folder), else ``<split>.npz`` or a single ``*<split>*.npz`` in it."""
    reject_options(NAME, options)
    check_split(split, NAME)
    folder = root / BATCH_DIR if (root / BATCH_DIR).is_dir() else root
    files = [folder / b for b in BATCHES[split]]
    if all(f.is_file() for f in files):
        parts = [read_batch(f) for f in files]
        images = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        source = str(folder)
    else:
        npz = _npz_file(root, split)
        if npz is None:
            batches = ", ".join(BATCHES[split])
            raise missing_files_error(NAME, root, [
                f"{BATCH_DIR}/ holding {batches} (the python version of CIFAR-10; root may also "
                f"be that folder itself)",
                f"or {split}.npz, or one file named *{split}*.npz, with arrays x uint8 "
                f"(N, 32, 32, 3) and y (N,) int",
            ])
        images, labels = read_npz(npz)
        source = str(npz)
    tensor = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    return ImageDataset(tensor, torch.from_numpy(labels), CLASSES, MEAN, STD, source=source,
                        crop_pad=CROP_PAD, hflip=True)
