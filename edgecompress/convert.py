"""Turn a float model into a compressed one: ``edgecompress.convert(model, method=...)``.

A *method* is registered by name with :func:`register_method`; it is a factory that takes the
method's options and returns a :class:`Converter`, which says which layer types it handles and
builds the compressed replacement of one layer. :func:`convert` walks the model, applies the
include/exclude rules and the first/last-layer policy, swaps the layers and reports what it did.
Later method families (shift, Euclid, tensor train) plug in through the same registry.
"""

from __future__ import annotations

import copy
import fnmatch
import functools
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence, Union

from torch import nn

from .errors import ConversionError
from .graph import replace_submodule
from .layers import BinaryConv2d, BinaryLinear, CompressedLayer, ShiftConv2d, ShiftLinear
from .layers.binary import SCALINGS
from .quantizers import METHODS, method_pair
from .quantizers.shift import (INITS, SHIFT_METHODS, check_activation_bits,
                                check_bits)
from .registry import Registry

Rule = Union[str, type]


class Converter:
    """Builds the compressed replacement of a single layer.

    Subclasses set ``supported_types`` and implement :meth:`convert_layer`.
    """

    supported_types: tuple[type[nn.Module], ...] = ()

    def supports(self, module: nn.Module) -> bool:
        return isinstance(module, self.supported_types) and not isinstance(module, CompressedLayer)

    def convert_layer(self, module: nn.Module) -> nn.Module:
        raise NotImplementedError


MethodFactory = Callable[..., Converter]
_METHODS: Registry[MethodFactory] = Registry("method")


def register_method(name: str) -> Callable[[MethodFactory], MethodFactory]:
    """Register a conversion method: ``factory(**options) -> Converter``."""
    return _METHODS.register(name)  # type: ignore[return-value]


def available_methods() -> list[str]:
    """Names accepted by :func:`convert`."""
    return _METHODS.available()


@dataclass
class ConversionReport:
    """What :func:`convert` did: converted layers and layers kept in float, with the reason."""

    method: str
    converted: list[tuple[str, str, str]] = field(default_factory=list)  # name, from, to
    kept: list[tuple[str, str, str]] = field(default_factory=list)  # name, type, reason

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "converted": [dict(name=n, source=s, target=t) for n, s, t in self.converted],
            "kept": [dict(name=n, type=t, reason=r) for n, t, r in self.kept],
        }

    def __str__(self) -> str:
        lines = [f"convert(method={self.method!r}): {len(self.converted)} converted, "
                 f"{len(self.kept)} kept float"]
        lines += [f"  converted  {n:<30} {s} -> {t}" for n, s, t in self.converted]
        lines += [f"  kept       {n:<30} {t} ({r})" for n, t, r in self.kept]
        return "\n".join(lines)


def convert(
    model: nn.Module,
    method: str | Converter,
    *,
    keep_first_last: bool = True,
    include: Sequence[Rule] | None = None,
    exclude: Sequence[Rule] | None = None,
    inplace: bool = False,
    return_report: bool = False,
    **options: Any,
) -> nn.Module | tuple[nn.Module, ConversionReport]:
    """Replace the layers of ``model`` that ``method`` supports by their compressed versions.

    Args:
        model: a float model (left untouched unless ``inplace``).
        method: a registered method name (see :func:`available_methods`) or a Converter.
        keep_first_last: keep the first conv/linear layer and the last linear layer in float.
        include: only convert layers matching one of these rules (a module-name glob such as
            ``"layer1.*"`` or a layer class). An exact name of an unsupported layer is an error.
        exclude: never convert layers matching one of these rules.
        inplace: modify ``model`` itself instead of a deep copy.
        return_report: also return a :class:`ConversionReport`.
        **options: the method's options (e.g. ``mode="w1a1"``, ``scaling="channel"``).

    Example:
        >>> import torch.nn as nn, edgecompress
        >>> net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.Linear(16, 2))
        >>> binary = edgecompress.convert(net, "bnn", mode="w1a1")
    """
    if isinstance(method, Converter):
        converter, method_name = method, type(method).__name__
    else:
        try:
            converter = _METHODS.get(method)(**options)
        except TypeError as exc:
            raise ConversionError(f"bad option for method {method!r}: {exc}") from None
        method_name = method
    model = model if inplace else copy.deepcopy(model)
    report = ConversionReport(method_name)
    protected = _first_last_names(model) if keep_first_last else {}
    _check_include(model, include, converter, method_name)
    functional = _functional_children(model)

    for name, module in list(model.named_modules()):
        if not name:
            continue
        kind = type(module).__name__
        if not converter.supports(module):
            if _is_weighted(module) and not isinstance(module, CompressedLayer):
                report.kept.append((name, kind, f"unsupported type: {method_name!r} converts "
                                    f"{_kinds(converter)}"))
            continue
        if name in functional:
            report.kept.append((name, kind, functional[name]))
        elif include is not None and not _matches(name, module, include):
            report.kept.append((name, kind, "not included"))
        elif exclude is not None and _matches(name, module, exclude):
            report.kept.append((name, kind, "excluded"))
        elif name in protected:
            report.kept.append((name, kind, protected[name]))
        else:
            new = converter.convert_layer(module)
            new.train(module.training)
            replace_submodule(model, name, new)
            report.converted.append((name, kind, type(new).__name__))
    spec = getattr(model, "edgecompress_spec", None)
    rules_are_names = all(isinstance(r, str) for r in [*(include or []), *(exclude or [])])
    if spec is not None and isinstance(method, str) and rules_are_names:
        model.edgecompress_spec = {**spec, "method": {
            "name": method, "keep_first_last": keep_first_last,
            "include": list(include) if include is not None else None,
            "exclude": list(exclude) if exclude is not None else None, **options}}
    elif spec is not None:
        del model.edgecompress_spec  # a Converter object or class rules cannot be written down
    return (model, report) if return_report else model


def _matches(name: str, module: nn.Module, rules: Iterable[Rule]) -> bool:
    for rule in rules:
        if isinstance(rule, type):
            if isinstance(module, rule):
                return True
        elif fnmatch.fnmatchcase(name, rule):
            return True
    return False


def _kinds(converter: Converter) -> str:
    return ", ".join(t.__name__ for t in converter.supported_types)


#: Layer types that hold weights a compression method could replace (normalization layers,
#: whose weights are per-channel affine parameters, are not among them).
WEIGHTED_TYPES: tuple[type[nn.Module], ...] = (
    nn.Linear, nn.Bilinear, nn.modules.conv._ConvNd, nn.Embedding, nn.EmbeddingBag, nn.RNNBase,
    nn.MultiheadAttention)


def _is_weighted(module: nn.Module) -> bool:
    return isinstance(module, WEIGHTED_TYPES)


def _functional_children(model: nn.Module) -> dict[str, str]:
    """Layers whose parent reads their weights directly instead of calling them (the output
    projection of nn.MultiheadAttention): replacing them would change nothing the model
    computes, so they stay float, with the reason."""
    out: dict[str, str] = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.MultiheadAttention):
            for child, _ in module.named_modules():
                if child:
                    out[f"{name}.{child}" if name else child] = (
                        "weights used directly by its parent nn.MultiheadAttention")
    return out


def _check_include(
    model: nn.Module, include: Sequence[Rule] | None, converter: Converter, method: str
) -> None:
    """Every include rule must match at least one layer that ``method`` can convert."""
    if include is None:
        return
    modules = [(n, m) for n, m in model.named_modules() if n]
    for rule in include:
        matched = [(n, m) for n, m in modules if _matches(n, m, [rule])]
        if not matched:
            if isinstance(rule, type):  # a class is a general statement: no layer of it is fine
                continue
            raise ConversionError(f"include rule {rule!r} matches no layer of the model")
        if not any(converter.supports(m) for _, m in matched):
            shown = ", ".join(f"{n} ({type(m).__name__})" for n, m in matched[:4])
            more = f" and {len(matched) - 4} more" if len(matched) > 4 else ""
            raise ConversionError(
                f"include rule {rule!r} matches only layers that method {method!r} cannot "
                f"convert: {shown}{more}; it supports: {_kinds(converter)}"
            )


def _first_last_names(model: nn.Module) -> dict[str, str]:
    """Names of the first conv/linear layer and the last linear layer, with the reason."""
    weighted = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    out: dict[str, str] = {}
    if weighted:
        out[weighted[0][0]] = "first layer"
    linears = [n for n, m in weighted if isinstance(m, nn.Linear)]
    if linears:
        out.setdefault(linears[-1], "last layer")
    return out


# --- binarization methods ---------------------------------------------------------------------

MODES = ("w1a32", "w1a1")


class BinaryConverter(Converter):
    """Binarizes Linear and Conv2d weights with a method's quantizer pair, and in W1A1 mode also
    their inputs (with the ``activation`` method's pair, BNN's sign / clipped STE by default).
    ``prox=`` / ``backward=`` (quantizer names) replace the method's P or B, e.g.
    ``convert(net, "bnn++", prox="binaryrelax")`` (see
    :func:`edgecompress.quantizers.method_pair`)."""

    supported_types = (nn.Linear, nn.Conv2d)

    def __init__(self, method: str, *, mode: str = "w1a32", scaling: str = "none",
                 activation: str = "bnn", prox: str | None = None, backward: str | None = None,
                 **method_params: Any) -> None:
        mode = mode.lower()
        if mode not in MODES:
            raise ConversionError(f"mode must be one of {MODES}, got {mode!r}")
        if scaling not in SCALINGS:
            raise ConversionError(f"scaling must be one of {SCALINGS}, got {scaling!r}")
        activation = activation.lower()
        if activation not in METHODS:
            raise ConversionError(f"activation must be one of {METHODS}, got {activation!r}")
        overrides = {k: v for k, v in (("prox", prox), ("backward", backward)) if v is not None}
        try:
            method_pair(method, **overrides, **method_params)  # validate once, here
        except ValueError as exc:  # unknown method, quantizer or parameter
            raise ConversionError(str(exc)) from None
        self.method, self.method_params = method, {**overrides, **method_params}
        self.activation = activation if mode == "w1a1" else None
        self.scaling = scaling

    def convert_layer(self, module: nn.Module) -> nn.Module:
        options = dict(
            weight_quantizer=method_pair(self.method, **self.method_params),
            input_quantizer=method_pair(self.activation) if self.activation else None,
            scaling=self.scaling,
        )
        if isinstance(module, nn.Conv2d):
            return BinaryConv2d.from_float(module, **options)
        return BinaryLinear.from_float(module, **options)


def _register_family(names: Iterable[str], converter: type[Converter], where: str) -> None:
    """Register every method of a family as ``converter(name, **options)``."""
    for name in names:
        factory = functools.partial(converter, name)
        factory.__doc__ = f"Method {name!r} (see {where})."  # type: ignore[attr-defined]
        register_method(name)(factory)


_register_family(METHODS, BinaryConverter, "edgecompress.quantizers.methods")


# --- power-of-two (shift) methods ------------------------------------------------------------

class ShiftConverter(Converter):
    """Makes Linear and Conv2d weights powers of two (see :mod:`edgecompress.quantizers.shift`):
    ``bits`` per weight, the latents initialised by ``init``, and optionally ``activation_bits``
    for the layer's inputs. With the default first/last policy this is the papers' policy:
    first conv and classifier float, every other conv (1x1 downsampling ones included)
    quantized, BatchNorm float."""

    supported_types = (nn.Linear, nn.Conv2d)

    def __init__(self, method: str, *, bits: int = 3, init: str = "paper",
                 activation_bits: int | None = None) -> None:
        bits = check_bits(bits, method)  # an int (not a bool or 3.0) among BITS
        if init not in INITS:
            raise ConversionError(f"{method}: init must be one of {INITS}, got {init!r}")
        if activation_bits is not None:
            activation_bits = check_activation_bits(activation_bits)
        self.options = dict(method=method, bits=bits, init=init, activation_bits=activation_bits)

    def convert_layer(self, module: nn.Module) -> nn.Module:
        if isinstance(module, nn.Conv2d):
            return ShiftConv2d.from_float(module, **self.options)
        return ShiftLinear.from_float(module, **self.options)


_register_family(SHIFT_METHODS, ShiftConverter, "edgecompress.quantizers.shift")
