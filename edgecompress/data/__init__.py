"""Datasets by name: ``edgecompress.data.load("cifar10", root=..., split="train")``.

Loaders read standard local files and never download anything; missing files raise
:class:`~edgecompress.errors.DataNotFoundError` listing what is expected where. ``mnist-bundled``
(a real 6,000 + 1,000 image MNIST subset) ships inside the package so the demo and tests run
anywhere. Image datasets serve the ``classification`` task; ``ptb`` / ``text`` (word-level
corpora, see :mod:`.text`) serve ``language-modelling`` and also have a ``valid`` split.

A new dataset is a loader ``fn(root: Path, split: str, **options) -> TaskDataset`` (any object
following the :class:`TaskDataset` protocol, e.g. an :class:`ImageDataset`) registered with
``@edgecompress.data.register("name")``; options given to :func:`load` other than ``augment``,
``limit`` and ``classes`` are passed on to it. A loader with other splits than "train" and "test" lists them
in its ``splits`` attribute.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence

from ..registry import Registry, normalize_name
from .base import SPLITS, ImageDataset, TaskDataset, check_split, default_root
from .bundled_mnist import load_bundled_mnist
from .cifar import load_cifar10
from .fsdd import load_fsdd
from .idx import load_idx_dataset
from .text import SPLITS as TEXT_SPLITS
from .text import TokenStream, TokenWindows, load_text

Loader = Callable[..., TaskDataset]
_REGISTRY: Registry[Loader] = Registry("dataset")
register = _REGISTRY.register

for _name in ("mnist", "fashion-mnist", "kmnist"):
    register(_name, partial(load_idx_dataset, _name))
register("cifar10", load_cifar10)
register("mnist-bundled", load_bundled_mnist)
register("fsdd", load_fsdd)
for _name in ("ptb", "text"):
    _text_loader = partial(load_text, _name)
    _text_loader.splits = TEXT_SPLITS  # type: ignore[attr-defined]
    register(_name, _text_loader)


def load(name: str, root: str | Path | None = None, split: str = "train", *,
         augment: bool = False, limit: int | None = None,
         classes: Sequence[int] | None = None, **kw: Any) -> TaskDataset:
    """Load ``split`` ("train" or "test"; text corpora also "valid") of dataset ``name``.

    Files are read from ``root``, or from :func:`default_root` when it is None (``mnist-bundled``
    ignores it). ``augment=True`` turns on the dataset's training augmentation (CIFAR-10: random
    32x32 crop of the 4-pixel zero-padded image + horizontal flip); ``limit`` keeps only the
    first ``limit`` samples (tokens, for a text corpus). ``classes`` (a list of class indices,
    e.g. ``[5, 6, 7, 8, 9]``) keeps only those classes' samples, relabelled 0.. in the list's
    order (before ``limit``): a classification dataset split into tasks by class.
    """
    loader = _REGISTRY.get(name)
    key = normalize_name(name)
    check_split(split, key, getattr(loader, "splits", SPLITS))
    if augment and split != "train":
        raise ValueError(f"dataset {key!r}: augment=True applies to the train split only, "
                         f"got split {split!r}")
    directory = Path(root).expanduser() if root is not None else default_root(key)
    dataset = loader(directory, split, **kw)
    if not isinstance(dataset, TaskDataset):
        raise TypeError(f"the loader registered as dataset {key!r} returned "
                        f"{type(dataset).__name__}, expected a dataset following the "
                        f"edgecompress.data.TaskDataset protocol (task, num_classes, "
                        f"input_shape, augment, can_augment, __len__, limit), e.g. an "
                        f"ImageDataset")
    if augment and not dataset.can_augment:
        raise ValueError(f"dataset {key!r} defines no augmentation, so augment=True is not "
                         f"supported for it (cifar10 has one: random crop + horizontal flip)")
    dataset.augment = bool(augment)
    if classes is not None:
        select = getattr(dataset, "select_classes", None)
        if select is None:
            raise ValueError(f"dataset {key!r} has no classes to select (classes=...); it "
                             f"serves the {dataset.task!r} task")
        select(classes)
    return dataset.limit(limit)


def splits(name: str) -> tuple[str, ...]:
    """The splits dataset ``name`` has ("train", "test"; text corpora also "valid")."""
    return tuple(getattr(_REGISTRY.get(name), "splits", SPLITS))


def available() -> list[str]:
    """Sorted names of the registered datasets."""
    return _REGISTRY.available()


__all__ = ["load", "splits", "available", "register", "default_root", "ImageDataset", "TaskDataset",
           "TokenStream", "TokenWindows"]
