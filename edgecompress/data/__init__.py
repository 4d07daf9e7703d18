"""Datasets by name: ``edgecompress.data.load("cifar10", root=..., split="train")``.

Loaders read standard local files and never download anything; missing files raise an error that
lists what is expected where. ``mnist-bundled`` (a real 6,000 + 1,000 image MNIST subset) ships
inside the package so the demo and tests run anywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ..registry import Registry
from .base import ImageDataset, default_root
from .cifar import load_cifar10
from .idx import load_idx_dataset
from .bundled import load_bundled_mnist

Loader = Callable[[Path, str], ImageDataset]
_REGISTRY: Registry[Loader] = Registry("dataset")
register = _REGISTRY.register

for _name in ("mnist", "fashion-mnist", "kmnist"):
    _REGISTRY.register(_name, lambda root, split, _n=_name: load_idx_dataset(_n, root, split))
_REGISTRY.register("cifar10", load_cifar10)
_REGISTRY.register("mnist-bundled", lambda root, split: load_bundled_mnist(split))


def load(name: str, root: str | Path | None = None, split: str = "train", *,
         augment: bool = False, limit: int | None = None, **kw: Any) -> ImageDataset:
    """Load ``split`` ("train" or "test") of dataset ``name`` from ``root`` (default:
    :func:`default_root`). ``augment`` turns on random crop + flip; ``limit`` keeps the first
    ``limit`` samples."""
    if kw:
        raise TypeError(f"data.load() got unexpected option(s) {sorted(kw)} for dataset {name!r}")
    loader = _REGISTRY.get(name)
    ds = loader(Path(root) if root is not None else default_root(name), split)
    ds.augment = augment
    return ds.limit(limit)


def available() -> list[str]:
    """Registered dataset names."""
    return _REGISTRY.available()


__all__ = ["load", "available", "register", "default_root", "ImageDataset"]
