"""Quantizers, by name: elementwise maps with their derivatives, and the PC++ pairs built from
them (F = P o B forward, B' backward).

>>> from edgecompress import quantizers
>>> quantizers.get("signswish", beta=5.0)
SignSwish(beta=5)
>>> quantizers.pair("sign", "clip")          # BNN: F = sign o clip = sign, B' = 1{|x| <= 1}
>>> quantizers.method_pair("bnn++")          # the methods of specs/binarization.md
"""

from __future__ import annotations

from typing import Any

from ..registry import Registry
from .base import Elementwise, QuantizerPair, sign
from .elementary import ApproxSign, Clip, Identity, Sign, SignSwish
from .methods import METHODS, method_pair, method_parameters
from .proximal import BinaryRelaxProx, ProxConnectProx, ProxQuantProx
from .schedule import Schedule

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


__all__ = [
    "Elementwise", "QuantizerPair", "Schedule", "sign", "get", "available", "register", "pair",
    "method_pair", "method_parameters", "METHODS", "Sign", "Identity", "Clip", "SignSwish",
    "ApproxSign", "BinaryRelaxProx", "ProxQuantProx", "ProxConnectProx",
]
