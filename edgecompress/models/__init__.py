"""The model zoo, by name: ``edgecompress.models.create("resnet20", num_classes=10)``.

Every model takes ``num_classes`` and ``input_shape`` (C, H, W) and exposes ``input_shape`` so the
summary and the CLI know what to feed it (and ``input_dtype`` when that is not float32: the
language model ``lstm-lm`` takes int64 tokens and its ``num_classes`` is the vocabulary size).
The first conv/linear module in ``modules()`` order is the stem and the last Linear is the
classifier (convert keeps both float by default).
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

from torch import nn

from ..errors import EdgecompressError
from ..registry import Registry
from .convnet import ConvNet
from .kws import KWSResNet
from .lstm_lm import LSTMLanguageModel
from .mlp import MLP
from .resnet import ResNet, cifar_resnet, resnet18
from .vgg import VGGSmall
from .vit import VisionTransformer, binary_deit, binaryvit, deit

_REGISTRY: Registry[Callable[..., nn.Module]] = Registry("model")
register = _REGISTRY.register
register("mlp", MLP)
register("vgg-small", VGGSmall)
for _depth in (20, 32, 56):
    register(f"resnet{_depth}", functools.partial(cifar_resnet, _depth))
register("resnet18", resnet18)
register("convnet", ConvNet)
register("kws-resnet", KWSResNet)
register("lstm-lm", LSTMLanguageModel)
register("deit", deit)
register("binary-deit", binary_deit)
register("binaryvit", binaryvit)


class ModelOptionError(EdgecompressError, TypeError):
    """An option that model's factory does not take (a TypeError, as a bad keyword is)."""


def options(name: str) -> list[str]:
    """The options model ``name`` takes (keywords of its factory), in signature order."""
    factory = _REGISTRY.get(name)
    bound = len(factory.args) if isinstance(factory, functools.partial) else 0
    target = factory.func if isinstance(factory, functools.partial) else factory
    params = list(inspect.signature(target).parameters)[bound:]  # partial's arguments are set
    return [p for p in params if p != "self"]


def create(name: str, num_classes: int = 10, **kw: Any) -> nn.Module:
    """Build model ``name``; unknown options are an error naming them and the valid ones."""
    factory = _REGISTRY.get(name)
    valid = options(name)
    bad = sorted(set(kw) - set(valid))
    if bad:
        raise ModelOptionError(f"model {name!r} got unknown option(s) {bad}; "
                               f"valid: {', '.join(valid)}")
    model = factory(num_classes=num_classes, **kw)
    # what edgecompress.deploy.save records so that load() can rebuild the architecture
    model.edgecompress_spec = {"model": {"name": name, "num_classes": num_classes,
                                         **_jsonable(kw)}}
    return model


def _jsonable(options: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}


def available() -> list[str]:
    """Registered model names."""
    return _REGISTRY.available()


__all__ = ["create", "available", "options", "register", "ModelOptionError", "MLP", "VGGSmall",
           "ResNet", "ConvNet", "KWSResNet", "LSTMLanguageModel", "VisionTransformer"]
