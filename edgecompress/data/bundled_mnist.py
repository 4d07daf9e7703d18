"""The MNIST subset shipped inside the package (see bundled/README.md for its provenance).

It lets the demo, the docs and the tests run anywhere without dataset files: 6,000 training and
1,000 test images, the first ones of the official MNIST splits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError, DataNotFoundError
from .base import ImageDataset, check_split, reject_options
from .idx import CLASSES, MEAN_STD

NAME = "mnist-bundled"
BUNDLED_FILE = Path(__file__).resolve().parent / "bundled" / "mnist_subset.npz"


def load_bundled_mnist(root: Path | None, split: str, **options: Any) -> ImageDataset:
    """First 6,000 training / first 1,000 test images of MNIST, read from the package itself;
    ``root`` is ignored."""
    reject_options(NAME, options)
    check_split(split, NAME)
    if not BUNDLED_FILE.is_file():
        raise DataNotFoundError(f"dataset {NAME!r}: {BUNDLED_FILE} is missing; the edgecompress "
                                f"installation is incomplete (reinstall it with its package data)")
    try:
        with np.load(BUNDLED_FILE, allow_pickle=False) as f:
            images, labels = f[f"x_{split}"], f[f"y_{split}"]
    except Exception as exc:  # a damaged installed file: zip, key or value errors
        raise DataError(f"{BUNDLED_FILE}: cannot read arrays x_{split}/y_{split}: "
                        f"{type(exc).__name__}: {exc}") from None
    if images.dtype != np.uint8 or images.shape[1:] != (28, 28):
        raise DataError(f"{BUNDLED_FILE}: x_{split} has shape {images.shape} ({images.dtype}), "
                        f"expected (N, 28, 28) uint8")
    mean, std = MEAN_STD["mnist"]
    return ImageDataset(torch.from_numpy(images.copy()).unsqueeze(1),
                        torch.from_numpy(labels.astype(np.int64)), CLASSES["mnist"], [mean], [std],
                        source=str(BUNDLED_FILE))
