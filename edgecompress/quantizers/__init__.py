"""Forward/backward quantizer pairs, selectable by name.

>>> from edgecompress import quantizers
>>> q = quantizers.get("sign-clip-ste")
>>> quantizers.available()  # doctest: +ELLIPSIS
[...]
"""

from __future__ import annotations

from typing import Any

from ..registry import Registry
from .base import QuantizerPair, sign
from .ste import SignClipSTE, SignSTE

_REGISTRY: Registry[type[QuantizerPair]] = Registry("quantizer")
_REGISTRY.register("sign-ste", SignSTE)
_REGISTRY.register("sign-clip-ste", SignClipSTE)


def get(name: str, **params: Any) -> QuantizerPair:
    """Build the quantizer registered as ``name`` with ``params``."""
    return _REGISTRY.get(name)(**params)


def available() -> list[str]:
    """Names accepted by :func:`get`."""
    return _REGISTRY.available()


register = _REGISTRY.register

__all__ = ["QuantizerPair", "SignSTE", "SignClipSTE", "sign", "get", "available", "register"]
