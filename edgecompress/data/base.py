"""What every loader returns (the :class:`TaskDataset` protocol; images come as the in-memory
:class:`ImageDataset`), and the shared checks of loaders. Where dataset files are looked for
(:func:`default_root`, :func:`missing_files_error`) lives in the torch-free
:mod:`edgecompress.datapaths` and is re-exported here."""

from __future__ import annotations

import numbers
from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..datapaths import default_root, missing_files_error  # noqa: F401  (re-exported)
from ..errors import DataError, UnknownNameError
from .preprocess import ImagePreprocessing, Preprocessing

SPLITS = ("train", "test")


def check_split(split: str, dataset: str = "", splits: Sequence[str] = SPLITS) -> str:
    """Return ``split`` if it is one of ``splits`` (by default "train" and "test"); otherwise
    raise naming it and the valid ones."""
    if split not in splits:
        where = f" of dataset {dataset!r}" if dataset else ""
        raise UnknownNameError(f"unknown split {split!r}{where}; available: {', '.join(splits)}")
    return split


def reject_options(dataset: str, options: Mapping[str, Any]) -> None:
    """Built-in loaders take no extra options: name the ones given instead of ignoring them."""
    if options:
        raise TypeError(f"dataset {dataset!r} got unexpected option(s) {sorted(options)}; "
                        f"data.load() accepts root, split, augment, limit and classes")


@runtime_checkable
class TaskDataset(Protocol):
    """What :func:`edgecompress.data.load` returns, whatever the kind of data.

    ``task`` names the training task it serves (a name of :mod:`edgecompress.train.tasks`, e.g.
    ``"classification"`` or ``"language-modelling"``), so a recipe need not say it.
    ``num_classes`` is the size of the output layer the data needs (classes, or the vocabulary
    of a language model) and ``input_shape`` the shape of one sample without the batch
    dimension. ``augment`` switches the training augmentation on where ``can_augment``;
    ``limit(n)`` keeps the first ``n`` samples (in place) and returns the dataset.
    """

    task: str
    num_classes: int
    input_shape: tuple[int, ...]
    augment: bool

    @property
    def can_augment(self) -> bool: ...

    def __len__(self) -> int: ...

    def limit(self, n: int | None) -> "TaskDataset": ...


def check_limit(n: Any) -> int | None:
    """``n`` as an int if it is a positive integer, None for None; otherwise a ValueError."""
    if n is None:
        return None
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"limit must be a positive integer or None, got {n!r}")
    return int(n)


class ImageDataset(Dataset):
    """uint8 images (N, C, H, W) and int64 labels in memory; items are normalised float tensors.

    Keeping uint8 in memory makes these small datasets 4x cheaper than float copies; each item is
    scaled to [0, 1] and normalised with the dataset's mean/std on access. A dataset built with
    ``crop_pad`` and/or ``hflip`` supports augmentation: with ``augment = True`` each item gets a
    random crop from the image zero-padded by ``crop_pad`` pixels and a random horizontal flip,
    drawn from torch's global RNG so that a seeded trainer reproduces them.

    ``preprocessing`` describes how one raw sample becomes an item (what ``edgecompress
    predict`` repeats on input files): by default the images' own normalisation; a dataset of
    images computed from other data (FSDD's log-mel images of audio) passes its own.
    """

    task = "classification"

    def __init__(self, images: Tensor, targets: Tensor, classes: Sequence[str],
                 mean: Sequence[float], std: Sequence[float], *, source: str = "",
                 crop_pad: int = 0, hflip: bool = False,
                 preprocessing: Preprocessing | None = None) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise DataError(f"{source}: images must be uint8 (N, C, H, W), got "
                            f"{images.dtype} {tuple(images.shape)}")
        if targets.dim() != 1 or len(images) != len(targets):
            raise DataError(f"{source}: {len(images)} images but labels of shape "
                            f"{tuple(targets.shape)}, expected ({len(images)},)")
        if len(targets) and (int(targets.min()) < 0 or int(targets.max()) >= len(classes)):
            raise DataError(f"{source}: labels must be in 0..{len(classes) - 1}, found "
                            f"{int(targets.min())}..{int(targets.max())}")
        if len(mean) != images.shape[1] or len(std) != images.shape[1]:
            raise ValueError(f"{source}: mean/std need {images.shape[1]} values (one per "
                             f"channel), got {len(mean)} and {len(std)}")
        self.images = images
        self.targets = targets.to(torch.int64)
        self.classes = list(classes)
        self.num_classes = len(self.classes)
        self.input_shape: tuple[int, int, int] = tuple(int(s) for s in images.shape[1:])
        self.normalization = ImagePreprocessing(*self.input_shape, tuple(mean), tuple(std))
        self.preprocessing = preprocessing or self.normalization
        self.source = source
        self.crop_pad = crop_pad
        self.hflip = hflip
        self.augment = False

    @property
    def can_augment(self) -> bool:
        """Whether this dataset defines an augmentation (``augment = True`` has an effect)."""
        return self.crop_pad > 0 or self.hflip

    def __len__(self) -> int:
        return len(self.targets)

    def pixels(self, index: int) -> Tensor:
        """Image ``index`` scaled to [0, 1], (C, H, W), before augmentation and normalisation."""
        return self.images[index].to(torch.float32).div_(255)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        x = self.pixels(index)
        if self.augment:
            x = self._augment(x)
        return self.normalization.normalize(x), int(self.targets[index])

    def _augment(self, x: Tensor) -> Tensor:
        if self.crop_pad > 0:
            _, h, w = x.shape
            p = self.crop_pad
            padded = torch.nn.functional.pad(x, (p, p, p, p))
            top, left = (int(v) for v in torch.randint(0, 2 * p + 1, (2,)))
            x = padded[:, top:top + h, left:left + w]
        if self.hflip and bool(torch.rand(()) < 0.5):
            x = x.flip(-1)
        return x

    def limit(self, n: int | None) -> "ImageDataset":
        """Keep only the first ``n`` samples (in place); returns self. ``None`` keeps all."""
        n = check_limit(n)
        if n is not None:
            self.images, self.targets = self.images[:n], self.targets[:n]
        return self

    def select_classes(self, classes: Sequence[int] | None) -> "ImageDataset":
        """Keep only the samples of ``classes`` (in place; returns self), relabelled by their
        position in that list: ``[5, 6, 7, 8, 9]`` makes class 5 label 0, class 9 label 4 (a
        new task from the other half of the classes). ``None`` keeps all."""
        if classes is None:
            return self
        valid = range(len(self.classes))
        if (isinstance(classes, (str, bytes)) or not isinstance(classes, Sequence)
                or not classes or any(isinstance(c, bool) or not isinstance(c, numbers.Integral)
                                      or c not in valid for c in classes)):
            raise ValueError(f"{self.source}: classes must be a non-empty list of class indices "
                             f"in 0..{len(self.classes) - 1}, got {classes!r}")
        if len(set(classes)) != len(classes):
            raise ValueError(f"{self.source}: classes lists a class twice: {list(classes)}")
        relabel = torch.full((len(self.classes),), -1, dtype=torch.int64)
        relabel[torch.tensor(list(classes))] = torch.arange(len(classes))
        keep = relabel[self.targets] >= 0
        self.images, self.targets = self.images[keep], relabel[self.targets[keep]]
        self.classes = [self.classes[c] for c in classes]
        self.num_classes = len(self.classes)
        return self

    def __repr__(self) -> str:
        return (f"ImageDataset({len(self)} images {self.input_shape}, {self.num_classes} "
                f"classes, augment={self.augment}, source={self.source!r})")
