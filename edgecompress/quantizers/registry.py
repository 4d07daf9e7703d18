"""The registry of elementary quantizers by name (``get``, ``available``, ``register``) and
:func:`pair`, which composes two of them into a PC++ pair.

It is its own module, below :mod:`.methods`, so that the binarization method table can look
quantizers up by name without importing the package that re-exports both.
"""

from __future__ import annotations

from typing import Any

from ..registry import Registry
from .base import Elementwise, QuantizerPair
from .elementary import ApproxSign, Clip, Identity, Sign, SignSwish
from .proximal import BinaryRelaxProx, ProxConnectProx, ProxQuantProx

_REGISTRY: Registry[type[Elementwise]] = Registry("quantizer")
register = _REGISTRY.register
for _name, _cls in (("sign", Sign), ("identity", Identity), ("clip", Clip),
                    ("signswish", SignSwish), ("approxsign", ApproxSign),
                    ("binaryrelax", BinaryRelaxProx), ("proxquant", ProxQuantProx),
                    ("proxconnect", ProxConnectProx)):
    register(_name, _cls)


def get(name: str, **params: Any) -> Elementwise:
    """The elementary quantizer registered as ``name``, built with ``params``."""
    return _REGISTRY.get(name)(**params)


def available() -> list[str]:
    """Names accepted by :func:`get`."""
    return _REGISTRY.available()


def pair(prox: str | Elementwise, backward: str | Elementwise) -> QuantizerPair:
    """Compose a PC++ pair: forward F = P o B, backward B'. Names or objects."""
    p = get(prox) if isinstance(prox, str) else prox
    b = get(backward) if isinstance(backward, str) else backward
    return QuantizerPair(p, b)
