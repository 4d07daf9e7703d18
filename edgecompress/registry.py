"""A tiny name -> factory registry, used for models, datasets, methods and quantizers.

Every public kind of thing in edgecompress is selectable by name (recipes, CLI) and by object
(Python). Unknown names raise :class:`~edgecompress.errors.UnknownNameError` listing the valid ones.
"""

from __future__ import annotations

import importlib
from typing import Callable, Generic, Iterator, Sequence, TypeVar

from .errors import UnknownNameError

T = TypeVar("T")


def normalize_name(name: str) -> str:
    """Canonical form of a registry name: lower case, `-` for `_`, no surrounding spaces."""
    return name.strip().lower().replace("_", "-")


class Registry(Generic[T]):
    """Maps case-insensitive names to objects (usually classes or factory functions).

    ``_`` and ``-`` are interchangeable in names, so ``resnet_20`` and ``resnet-20`` are one name.
    ``providers``: modules that register entries when imported and that cannot be imported where
    the registry is defined (they import it); they are imported at the first lookup.
    """

    def __init__(self, kind: str, providers: Sequence[str] = ()) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._providers = list(providers)

    def _load_providers(self) -> None:
        while self._providers:
            importlib.import_module(self._providers.pop(0))

    def register(self, name: str, obj: T | None = None) -> Callable[[T], T] | T:
        """Register ``obj`` under ``name``; without ``obj`` return a decorator."""

        def add(item: T) -> T:
            key = normalize_name(name)
            if key in self._items and self._items[key] is not item:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[key] = item
            return item

        return add if obj is None else add(obj)

    def get(self, name: str) -> T:
        """Return the object registered as ``name``; unknown names list the valid ones."""
        if not isinstance(name, str):
            raise TypeError(f"{self.kind} name must be a string, got {type(name).__name__}")
        self._load_providers()
        try:
            return self._items[normalize_name(name)]
        except KeyError:
            valid = ", ".join(self.available()) or "(none registered)"
            raise UnknownNameError(f"unknown {self.kind} {name!r}; available: {valid}") from None

    def available(self) -> list[str]:
        """Sorted registered names."""
        self._load_providers()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        self._load_providers()
        return isinstance(name, str) and normalize_name(name) in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.available())

    def __len__(self) -> int:
        return len(self._items)
