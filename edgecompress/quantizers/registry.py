"""The registry of quantizers by name (``get``, ``available``, ``register``): the elementary
ones, which :func:`pair` composes into a PC++ pair, and the uniform n-bit ones
("uniform-weight", "uniform-activation", :mod:`.uniform`).

It is its own module, below :mod:`.methods`, so that the binarization method table can look
quantizers up by name without importing the package that re-exports both.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..registry import Registry
from .base import Elementwise, QuantizerPair
from .elementary import ApproxSign, Clip, Identity, Sign, SignSwish
from .proximal import BinaryRelaxProx, ProxConnectProx, ProxQuantProx
from .uniform import UniformActivationQuantizer, UniformWeightQuantizer

_REGISTRY: Registry[type[nn.Module]] = Registry("quantizer")
register = _REGISTRY.register
for _name, _cls in (("sign", Sign), ("identity", Identity), ("clip", Clip),
                    ("signswish", SignSwish), ("approxsign", ApproxSign),
                    ("binaryrelax", BinaryRelaxProx), ("proxquant", ProxQuantProx),
                    ("proxconnect", ProxConnectProx), ("uniform-weight", UniformWeightQuantizer),
                    ("uniform-activation", UniformActivationQuantizer)):
    register(_name, _cls)


def get(name: str, **params: Any) -> nn.Module:
    """The quantizer registered as ``name``, built with ``params``."""
    return _REGISTRY.get(name)(**params)


def elementwise(name: str) -> Elementwise:
    """The elementary quantizer registered as ``name`` (one a PC++ pair can hold: not a uniform
    n-bit one, which quantizes a whole tensor with its own step)."""
    quantizer = get(name)
    if not isinstance(quantizer, Elementwise):
        valid = [n for n in available() if issubclass(_REGISTRY.get(n), Elementwise)]
        raise ValueError(f"quantizer {name!r} is not elementwise and cannot be part of a "
                         f"PC++ pair; elementwise ones: {', '.join(valid)}")
    return quantizer


def available() -> list[str]:
    """Names accepted by :func:`get`."""
    return _REGISTRY.available()


def pair(prox: str | Elementwise, backward: str | Elementwise) -> QuantizerPair:
    """Compose a PC++ pair: forward F = P o B, backward B'. Names or objects."""
    p = elementwise(prox) if isinstance(prox, str) else prox
    b = elementwise(backward) if isinstance(backward, str) else backward
    return QuantizerPair(p, b)
