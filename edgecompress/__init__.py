"""edgecompress: compress neural networks for edge devices and run them fast.

>>> import edgecompress
>>> net = edgecompress.models.create("mlp", num_classes=10, activation="hardtanh")
>>> binary = edgecompress.convert(net, "bnn", mode="w1a1")  # W1A1 wants signed activations
>>> print(edgecompress.summary(binary, (1, 28, 28)))  # doctest: +SKIP

The subpackages load on first use of their names, so that the numpy-only
:mod:`edgecompress.causal` imports without torch.
"""

from __future__ import annotations

import importlib as _importlib
from typing import Any as _Any

__version__ = "0.1.0"

_SUBMODULES = ("data", "deploy", "kernels", "layers", "models", "quantizers", "pruning", "causal")
_CONVERT = ("convert", "available_methods", "register_method")  # the package is callable

__all__ = [*_SUBMODULES, *_CONVERT, "summary", "__version__"]


def __getattr__(name: str) -> _Any:
    if name in _SUBMODULES:
        return _importlib.import_module(f".{name}", __name__)
    if name == "summary":
        return _importlib.import_module(".analysis", __name__).summary
    if name in _CONVERT:
        convert = _importlib.import_module(".convert", __name__)
        return convert if name == "convert" else getattr(convert, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
