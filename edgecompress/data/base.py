"""The in-memory image dataset every loader returns, and where dataset files are looked for."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..errors import DataError, DataNotFoundError

SPLITS = ("train", "test")


def default_root(name: str) -> Path:
    """``$EDGECOMPRESS_DATA/<name>`` if that variable is set, else ``~/.edgecompress/data/<name>``."""
    base = os.environ.get("EDGECOMPRESS_DATA")
    return (Path(base) if base else Path.home() / ".edgecompress" / "data") / name


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return split


def missing_files_error(name: str, root: Path, expected: Sequence[str]) -> DataNotFoundError:
    """The error raised when dataset files are absent: what is expected where, and how to say
    where they are. Downloads are never attempted."""
    files = "\n  ".join(str(root / f) for f in expected)
    return DataNotFoundError(
        f"dataset {name!r}: files not found. Expected:\n  {files}\n"
        f"Put the files there, or pass root=... (--data-root on the command line), or set "
        f"EDGECOMPRESS_DATA to a directory containing '{name}/'. edgecompress never downloads data."
    )


class ImageDataset(Dataset):
    """uint8 images (N, C, H, W) and int64 labels in memory; items are normalised float tensors.

    ``augment=True`` applies a random crop (``pad`` zero pixels each side) and a horizontal flip
    using torch's global RNG, so a seeded trainer makes it reproducible.
    """

    def __init__(self, images: Tensor, targets: Tensor, classes: Sequence[str],
                 mean: Sequence[float], std: Sequence[float], *, augment: bool = False,
                 pad: int = 4, source: str = "") -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise DataError(f"{source}: images must be uint8 (N, C, H, W), got "
                            f"{images.dtype} {tuple(images.shape)}")
        if len(images) != len(targets):
            raise DataError(f"{source}: {len(images)} images but {len(targets)} labels")
        if len(targets) and (int(targets.min()) < 0 or int(targets.max()) >= len(classes)):
            raise DataError(f"{source}: labels must be in 0..{len(classes) - 1}, found "
                            f"{int(targets.min())}..{int(targets.max())}")
        self.images = images
        self.targets = targets.to(torch.int64)
        self.classes = list(classes)
        self.num_classes = len(self.classes)
        self.input_shape = tuple(images.shape[1:])
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.augment = augment
        self.pad = pad

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        x = self.images[index].to(torch.float32).div_(255)
        if self.augment:
            x = self._augment(x)
        return (x - self.mean) / self.std, int(self.targets[index])

    def _augment(self, x: Tensor) -> Tensor:
        _, h, w = x.shape
        p = self.pad
        padded = torch.nn.functional.pad(x, (p, p, p, p))
        top, left = (int(v) for v in torch.randint(0, 2 * p + 1, (2,)))
        x = padded[:, top:top + h, left:left + w]
        if torch.rand(()) < 0.5:
            x = x.flip(-1)
        return x

    def limit(self, n: int | None) -> "ImageDataset":
        """Keep only the first ``n`` samples (in place); returns self."""
        if n is not None:
            if n < 1:
                raise ValueError(f"limit must be >= 1, got {n}")
            self.images, self.targets = self.images[:n], self.targets[:n]
        return self
