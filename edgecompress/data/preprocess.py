"""How one raw sample becomes a model input, exactly as a dataset's items are made.

A :class:`Preprocessing` is plain data (a frozen model file keeps it in its metadata as JSON,
:meth:`~Preprocessing.to_dict`) that also applies itself to a raw sample
(:meth:`~Preprocessing.apply`). Every dataset built on :class:`~edgecompress.data.ImageDataset`
carries its own as ``dataset.preprocessing``:

- ``image`` (:class:`ImagePreprocessing`): uint8 pixels (C, H, W) -> x / 255 -> (x - mean) / std
  per channel (MNIST-format datasets, CIFAR-10, the bundled MNIST);
- ``log-mel`` (:class:`~edgecompress.data.fsdd.LogMelPreprocessing`): int16 mono samples -> the
  8-bit log-mel image of FSDD -> normalised like an image.

``sample`` says which raw form a kind takes (``"image"``: uint8 pixels; ``"audio"``: int16 samples
and their rate). A new kind is a dataclass registered with ``@register_preprocessing("kind")``;
:func:`preprocessing_from_dict` dispatches on the ``kind`` key.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, fields
from typing import Any, Callable, ClassVar, Mapping, TypeVar

import torch
from torch import Tensor

from ..errors import DataError, UnknownNameError
from ..registry import Registry

__all__ = ["Preprocessing", "ImagePreprocessing", "register_preprocessing",
           "preprocessing_from_dict"]

_REGISTRY: Registry[type["Preprocessing"]] = Registry("preprocessing kind")
T = TypeVar("T", bound=type["Preprocessing"])


def register_preprocessing(kind: str) -> Callable[[T], T]:
    """Class decorator: files name the decorated :class:`Preprocessing` dataclass ``kind``."""

    def add(cls: T) -> T:
        cls.kind = kind
        _REGISTRY.register(kind, cls)
        return cls

    return add


class Preprocessing:
    """Base of the preprocessing kinds (frozen dataclasses of JSON values)."""

    kind: ClassVar[str] = ""
    #: the raw form :meth:`apply` takes: "image" (uint8 pixels) or "audio" (int16 samples)
    sample: ClassVar[str] = ""

    def apply(self, raw: Any, source: str) -> Tensor:
        """The model input (without batch dimension) for one raw sample read from ``source``
        (named in errors)."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **{f.name: _plain(getattr(self, f.name))
                                      for f in fields(self)}}  # type: ignore[arg-type]


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def preprocessing_from_dict(raw: Mapping[str, Any]) -> Preprocessing:
    """The preprocessing :meth:`Preprocessing.to_dict` wrote; a malformed one (unknown kind,
    missing or unknown keys, values of the wrong type) raises DataError saying which."""
    if not isinstance(raw, Mapping) or not isinstance(raw.get("kind"), str):
        raise DataError(f"preprocessing must be a mapping with a 'kind', got {raw!r:.80}")
    try:
        cls = _REGISTRY.get(raw["kind"])
    except UnknownNameError as exc:
        raise DataError(str(exc)) from None
    names = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    given = {k: v for k, v in raw.items() if k != "kind"}
    if set(given) != set(names):
        raise DataError(f"preprocessing {raw['kind']!r} needs keys {sorted(names)}, got "
                        f"{sorted(given)}")
    try:
        return cls(**given)
    except (TypeError, ValueError) as exc:
        raise DataError(f"preprocessing {raw['kind']!r}: {exc}") from None


def _check_numbers(name: str, values: Any, count: int, positive: bool = False) -> tuple:
    if not isinstance(values, (list, tuple)) or len(values) != count or not all(
            isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values):
        raise ValueError(f"{name} must be {count} number(s), got {values!r}")
    if positive and not all(v > 0 for v in values):
        raise ValueError(f"{name} must be positive, got {values!r}")
    return tuple(float(v) for v in values)


def check_positive_int(name: str, value: Any) -> int:
    """``value`` if it is a positive int, else a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


@register_preprocessing("image")
@dataclass(frozen=True)
class ImagePreprocessing(Preprocessing):
    """uint8 pixels (channels, height, width) -> x / 255 -> (x - mean) / std per channel."""

    channels: int
    height: int
    width: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    sample: ClassVar[str] = "image"

    def __post_init__(self) -> None:
        for name in ("channels", "height", "width"):
            check_positive_int(name, getattr(self, name))
        object.__setattr__(self, "mean", _check_numbers("mean", self.mean, self.channels))
        object.__setattr__(self, "std", _check_numbers("std", self.std, self.channels,
                                                       positive=True))
        object.__setattr__(self, "_mean", torch.tensor(self.mean).view(-1, 1, 1))
        object.__setattr__(self, "_std", torch.tensor(self.std).view(-1, 1, 1))

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.channels, self.height, self.width

    def normalize(self, x: Tensor) -> Tensor:
        """(x - mean) / std per channel of images scaled to [0, 1] (..., C, H, W)."""
        return (x - self._mean) / self._std  # type: ignore[attr-defined]

    def apply(self, raw: Any, source: str) -> Tensor:
        pixels = torch.as_tensor(raw)
        if pixels.dtype != torch.uint8 or tuple(pixels.shape) != self.shape:
            got = str(pixels.dtype).removeprefix("torch.")
            raise DataError(f"{source}: got {got} pixels of shape "
                            f"{tuple(pixels.shape)}, the model expects uint8 "
                            f"{self.shape} (channels, height, width)")
        return self.normalize(pixels.to(torch.float32).div_(255))
