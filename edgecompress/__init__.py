"""edgecompress: compress neural networks for edge devices and run them fast.

>>> import edgecompress
>>> net = edgecompress.models.create("mlp", num_classes=10, activation="hardtanh")
>>> binary = edgecompress.convert(net, "bnn", mode="w1a1")  # W1A1 wants signed activations
>>> print(edgecompress.summary(binary, (1, 28, 28)))  # doctest: +SKIP

The torch-backed parts load on first use of any of their names (all of them at once, as an
eager import would), so that the numpy-only :mod:`edgecompress.causal` imports without torch.
"""

from __future__ import annotations

import importlib as _importlib
from typing import Any as _Any

__version__ = "0.1.0"

# name -> (module, attribute or None for the module itself), loaded together by _load_torch_parts
_TORCH_PARTS: dict[str, tuple[str, str | None]] = {
    "data": (".data", None), "deploy": (".deploy", None), "kernels": (".kernels", None),
    "layers": (".layers", None), "models": (".models", None), "quantizers": (".quantizers", None),
    "summary": (".analysis", "summary"),
    "convert": (".convert", None),  # the package is callable: edgecompress.convert(model, "bnn")
    "available_methods": (".convert", "available_methods"),
    "register_method": (".convert", "register_method"),
    "pruning": (".pruning", None),  # registers the pruning methods ("l1-prune")
}

__all__ = [*_TORCH_PARTS, "causal", "__version__"]


def _load_torch_parts() -> None:
    """Import every torch-backed part and bind its public names here."""
    for name, (module, attribute) in _TORCH_PARTS.items():
        loaded = _importlib.import_module(module, __name__)
        globals()[name] = loaded if attribute is None else getattr(loaded, attribute)


def __getattr__(name: str) -> _Any:
    if name in _TORCH_PARTS:
        _load_torch_parts()
        return globals()[name]
    if name == "causal":
        return _importlib.import_module(".causal", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
