"""The MNIST subset shipped inside the package (see bundled/README.md for its provenance)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .base import ImageDataset, check_split
from .idx import CLASSES, MEAN_STD

BUNDLED_FILE = Path(__file__).parent / "bundled" / "mnist_subset.npz"


def load_bundled_mnist(split: str) -> ImageDataset:
    """First 6,000 training / first 1,000 test images of MNIST, from the package itself."""
    check_split(split)
    with np.load(BUNDLED_FILE, allow_pickle=False) as f:
        images, labels = f[f"x_{split}"], f[f"y_{split}"]
    mean, std = MEAN_STD["mnist"]
    return ImageDataset(torch.from_numpy(images.copy()).unsqueeze(1),
                        torch.from_numpy(labels.astype(np.int64)), CLASSES["mnist"], [mean], [std],
                        source=str(BUNDLED_FILE))
