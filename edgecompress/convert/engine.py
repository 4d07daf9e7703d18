"""The conversion engine: two kinds of registered method, one entry point, one report.

- A :class:`Converter` builds the compressed replacement of one layer; :func:`convert` walks the
  model, applies the include/exclude rules and the first/last-layer policy and swaps the layers.
- A :class:`GraphTransform` rewrites the whole model at once (pruning surgery, fusions): it needs
  the graph, not one layer at a time (see :mod:`edgecompress.graph`).

Both register under a name with :func:`register_method` and list their options with
``options()``, so recipes validate a method's options without knowing its family.
:func:`convert` takes a name (with its options), an object, a mapping ``{name: ..., **options}``
or a list of those applied in order, and dispatches to the method's kind; it records the methods
it applied by name in the model's ``edgecompress_spec`` (JSON-safe) and returns a
:class:`ConversionReport`, including the warnings of the checks it runs on the result (binary
layers whose inputs are never negative, :mod:`edgecompress.convert.nonnegative`).
"""

from __future__ import annotations

import copy
import fnmatch
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable, Mapping, Sequence, TypeVar, Union

from torch import nn

from ..errors import ConversionError
from ..graph import replace_submodule
from ..layers import CompressedLayer, GateLSTM
from ..layers.lstm import check_lstm
from ..quantizers.schedule import Schedule
from ..registry import Registry, normalize_name
from .nonnegative import check_binary_inputs, check_unsigned_inputs

Rule = Union[str, type]
#: convert()'s own options, which say where a layer converter applies (not what it does)
POLICY_OPTIONS = ("keep_first_last", "include", "exclude")


@dataclass
class ConversionReport:
    """What :func:`convert` did: converted layers, layers kept in float with the reason, modules
    a graph transform removed, and warnings about the result (also issued as Python warnings)."""

    method: str
    converted: list[tuple[str, str, str]] = field(default_factory=list)  # name, from, to
    kept: list[tuple[str, str, str]] = field(default_factory=list)  # name, type, reason
    removed: list[tuple[str, str]] = field(default_factory=list)  # name, type
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "converted": [dict(name=n, source=s, target=t) for n, s, t in self.converted],
            "kept": [dict(name=n, type=t, reason=r) for n, t, r in self.kept],
            "removed": [dict(name=n, type=t) for n, t in self.removed],
            "warnings": list(self.warnings),
        }

    def __str__(self) -> str:
        head = f"convert(method={self.method!r}): {len(self.converted)} converted, " \
               f"{len(self.kept)} kept float"
        lines = [head + (f", {len(self.removed)} removed" if self.removed else "")]
        lines += [f"  converted  {n:<30} {s} -> {t}" for n, s, t in self.converted]
        lines += [f"  kept       {n:<30} {t} ({r})" for n, t, r in self.kept]
        lines += [f"  removed    {n:<30} {t}" for n, t in self.removed]
        lines += [f"  warning    {w}" for w in self.warnings]
        return "\n".join(lines)


@dataclass(frozen=True)
class Policy:
    """Where a layer converter applies: convert()'s keep_first_last, include and exclude."""

    keep_first_last: bool = True
    include: Sequence[Rule] | None = None
    exclude: Sequence[Rule] | None = None

    def spec(self) -> dict[str, Any]:
        return {"keep_first_last": self.keep_first_last,
                "include": list(self.include) if self.include is not None else None,
                "exclude": list(self.exclude) if self.exclude is not None else None}


M = TypeVar("M", bound="Method")


def keyword_parameters(cls: type) -> set[str]:
    """The named keyword parameters of ``cls``'s constructor (not positional-only ones such as a
    family's method name, not ``**kwargs``)."""
    return {p.name for p in inspect.signature(cls).parameters.values()
            if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}


class Method:
    """Base of the two kinds of registered method (:class:`Converter`, :class:`GraphTransform`).

    A class registered under several names (a family sharing one implementation) sets
    ``family = True`` and takes the registered name as its first, positional-only, argument.
    """

    #: True if the constructor takes the registered method name first: ``cls(name, **options)``
    family: ClassVar[bool] = False
    #: which of convert()'s policy options (:data:`POLICY_OPTIONS`) this kind of method takes
    policy_options: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def options(cls, method: str, chosen: Mapping[str, Any]) -> set[str] | None:
        """The option names method ``method`` accepts, given the options ``chosen`` so far (an
        option may decide which others exist); None if open-ended. By default the constructor's
        keyword parameters (a ``**kwargs`` makes it open-ended)."""
        params = inspect.signature(cls).parameters.values()
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            return None
        return keyword_parameters(cls)

    @classmethod
    def create(cls: type[M], method: str, **options: Any) -> M:
        """The method object registered as ``method`` with ``options``."""
        return cls(method, **options) if cls.family else cls(**options)  # type: ignore[call-arg]

    def _apply(self, model: nn.Module, policy: Policy, report: ConversionReport) -> nn.Module:
        raise NotImplementedError


class Converter(Method):
    """Builds the compressed replacement of a single layer.

    Subclasses set ``supported_types`` and implement :meth:`convert_layer`; :func:`convert` picks
    the layers (include/exclude rules, first/last-layer policy)."""

    supported_types: tuple[type[nn.Module], ...] = ()
    policy_options = POLICY_OPTIONS
    #: True for a converter of Linear layers whose converted layers freeze to packed forms that
    #: take inputs of any leading shape: a plain nn.LSTM is then converted as one layer, into a
    #: :class:`~edgecompress.layers.GateLSTM` whose gate maps (inner layers, never the
    #: first/last ones) this converter converts
    converts_lstm: ClassVar[bool] = False

    def supports(self, module: nn.Module) -> bool:
        return isinstance(module, self.supported_types) and not isinstance(module, CompressedLayer)

    def takes(self, module: nn.Module) -> bool:
        """Whether :func:`convert` hands ``module`` to this converter: a layer it
        :meth:`supports`, or a plain nn.LSTM when it :attr:`converts_lstm`."""
        return self.supports(module) or (self.converts_lstm and type(module) is nn.LSTM)

    def convert_layer(self, module: nn.Module) -> nn.Module:
        raise NotImplementedError

    def convert_lstm(self, lstm: nn.LSTM) -> GateLSTM:
        """``lstm`` as a GateLSTM (the same weights) with every gate map converted."""
        new = GateLSTM.from_lstm(lstm)
        for maps in (new.ih, new.hh):
            for k, m in enumerate(maps):
                maps[k] = self.convert_gate_map(m)
        return new

    def convert_gate_map(self, module: nn.Module) -> nn.Module:
        """One gate map of an LSTM (an nn.Linear): by default as any layer."""
        return self.convert_layer(module)

    def _apply(self, model: nn.Module, policy: Policy, report: ConversionReport) -> nn.Module:
        include, exclude = policy.include, policy.exclude
        protected = _first_last_names(model) if policy.keep_first_last else {}
        _check_include(model, include, self, report.method)
        functional = _functional_children(model)
        for name, module in list(model.named_modules()):
            if not name:
                continue
            kind = type(module).__name__
            if not self.takes(module):
                if _is_weighted(module) and not isinstance(module, CompressedLayer):
                    report.kept.append((name, kind, f"unsupported type: {report.method!r} "
                                        f"converts {_kinds(self)}"))
                continue
            if name in functional:
                report.kept.append((name, kind, functional[name]))
            elif include is not None and not _matches(name, module, include):
                report.kept.append((name, kind, "not included"))
            elif exclude is not None and _matches(name, module, exclude):
                report.kept.append((name, kind, "excluded"))
            elif name in protected:
                report.kept.append((name, kind, protected[name]))
            elif not self.supports(module) and (reason := _unsupported_lstm(module)):
                report.kept.append((name, kind, reason))
            else:
                new = (self.convert_layer(module) if self.supports(module)
                       else self.convert_lstm(module))
                new.train(module.training)
                replace_submodule(model, name, new)
                report.converted.append((name, kind, type(new).__name__))
        return model


class GraphTransform(Method):
    """Rewrites the whole model (e.g. pruning surgery, which must see every consumer of a
    channel): implement :meth:`apply`, usually with :mod:`edgecompress.graph` (trace the model,
    edit the graph, :func:`~edgecompress.graph.as_graph_module`). The report lists the modules
    whose type changed and those that disappeared."""

    def apply(self, model: nn.Module) -> nn.Module:
        """The rewritten model (``model`` is already a copy unless convert's ``inplace``)."""
        raise NotImplementedError

    def _apply(self, model: nn.Module, policy: Policy, report: ConversionReport) -> nn.Module:
        if policy != Policy():
            raise ConversionError(
                f"{report.method!r} is a graph transform of the whole model: keep_first_last, "
                f"include and exclude apply to layer converters only")
        before = _module_types(model)
        model = self.apply(model)
        _report_changes(before, _module_types(model), report)
        return model


def _module_types(model: nn.Module) -> dict[str, tuple[str, bool]]:
    """Submodule name -> (type name, whether it is a mere container)."""
    return {n: (type(m).__name__, type(m) is nn.Module or
                isinstance(m, (nn.Sequential, nn.ModuleList, nn.ModuleDict)))
            for n, m in model.named_modules() if n}


def _report_changes(before: dict[str, tuple[str, bool]], after: dict[str, tuple[str, bool]],
                    report: ConversionReport) -> None:
    """The modules a graph transform replaced, added or removed, each at its top-most name (not
    the quantizers inside a new layer); containers changing type (a Sequential becomes a plain
    Module in a GraphModule) are not changes."""
    reported: list[str] = []

    def inside_reported(name: str) -> bool:
        return any(name.startswith(r + ".") for r in reported)

    for name, (kind, container) in after.items():
        old = before.get(name)
        if inside_reported(name) or (old is not None and old[0] == kind):
            continue
        if container and (old is None or old[1]):
            continue
        report.converted.append((name, old[0] if old else "(new)", kind))
        reported.append(name)
    for name, (kind, container) in before.items():
        if name not in after and not container and not inside_reported(name):
            report.removed.append((name, kind))
            reported.append(name)


#: edgecompress.pruning registers "l1-prune" (it imports this module, so it is loaded lazily)
_METHODS: Registry[type[Method]] = Registry("method", providers=("edgecompress.pruning",))


def register_method(name: str):  # -> Callable[[type[M]], type[M]]
    """Class decorator: register a :class:`Converter` or :class:`GraphTransform` subclass as
    method ``name``. A family registers one class under each of its names (``family = True``)."""

    def add(cls: type[M]) -> type[M]:
        if not (isinstance(cls, type) and issubclass(cls, (Converter, GraphTransform))):
            raise TypeError(f"register_method({name!r}) registers a Converter or GraphTransform "
                            f"subclass, got {cls!r}")
        return _METHODS.register(name, cls)  # type: ignore[return-value]

    return add


def available_methods() -> list[str]:
    """Names accepted by :func:`convert`."""
    return _METHODS.available()


def method_options(name: str, chosen: Mapping[str, Any] | None = None) -> set[str] | None:
    """The option names method ``name`` accepts given the options ``chosen`` so far, including
    convert()'s policy options its kind takes (none for a graph transform); None if open-ended.
    Raises UnknownNameError for an unknown method and ConversionError for a bad choice that
    decides the others (e.g. an unknown ``prox`` quantizer)."""
    cls = _METHODS.get(name)
    valid = cls.options(normalize_name(name), dict(chosen or {}))
    return None if valid is None else valid | set(cls.policy_options)


MethodSpec = Union[str, Method, Mapping[str, Any], Sequence[Union[str, Method, Mapping[str, Any]]]]


def convert(
    model: nn.Module,
    method: MethodSpec,
    *,
    keep_first_last: bool = True,
    include: Sequence[Rule] | None = None,
    exclude: Sequence[Rule] | None = None,
    inplace: bool = False,
    return_report: bool = False,
    **options: Any,
) -> nn.Module | tuple[nn.Module, ConversionReport]:
    """Compress ``model`` with ``method``: a layer converter replaces the layers it supports, a
    graph transform rewrites the whole model.

    Args:
        model: a float model (left untouched unless ``inplace``).
        method: a registered method name (see :func:`available_methods`) with its options as
            keywords; a :class:`Converter` / :class:`GraphTransform` object (its options go to its
            constructor, only the policy keywords here); a mapping ``{"name": ..., **options}``
            (policy keywords included); or a list of those, applied in order.
        keep_first_last: keep the first conv/linear layer and the last linear layer in float.
        include: only convert layers matching one of these rules (a module-name glob such as
            ``"layer1.*"`` or a layer class). An exact name of an unsupported layer is an error.
        exclude: never convert layers matching one of these rules.
        inplace: modify ``model`` itself instead of a deep copy.
        return_report: also return a :class:`ConversionReport`.
        **options: the method's options (e.g. ``mode="w1a1"``, ``scaling="channel"``).

    Binary layers whose inputs can never be negative (a W1A1 layer after a ReLU: every input sign
    is +1) are reported with a :class:`~edgecompress.errors.MeaninglessInputWarning`.

    Example:
        >>> import torch.nn as nn, edgecompress
        >>> net = nn.Sequential(nn.Linear(8, 16), nn.Hardtanh(), nn.Linear(16, 16),
        ...                     nn.Hardtanh(), nn.Linear(16, 16), nn.Linear(16, 2))
        >>> binary = edgecompress.convert(net, "bnn", mode="w1a1")
        >>> mixed = edgecompress.convert(net, [{"name": "bnn", "mode": "w1a1", "include": ["2"]},
        ...                                    {"name": "s3", "bits": 3}])  # s3 takes layer 4
    """
    policy = Policy(keep_first_last, include, exclude)
    if isinstance(method, (str, Method)):
        steps = [(method, policy, options)]
    elif not isinstance(method, (Mapping, list, tuple)):
        raise ConversionError(f"a method must be a name, a Converter/GraphTransform object, a "
                              f"mapping with a 'name' or a list of those, got {method!r}")
    else:
        if options or policy != Policy():
            raise ConversionError(
                "with a mapping or a list of methods, give each method's options (and "
                f"keep_first_last/include/exclude) inside its mapping; got "
                f"{_given(policy, options)}")
        steps = [_step(s) for s in ([method] if isinstance(method, Mapping) else method)]
        if not steps:
            raise ConversionError("convert() got an empty list of methods")
    model = model if inplace else copy.deepcopy(model)
    report = ConversionReport("")
    for step, step_policy, step_options in steps:
        model = _run(model, step, step_policy, step_options, report)
    _drop_later_converted(report)
    for check in CHECKS:
        check(model, report)
    return (model, report) if return_report else model


#: run on every converted model: each warns about (and records in the report) the layers whose
#: inputs make their method meaningless; a method's module adds its own with register_check
CHECKS: list[Callable[[nn.Module, ConversionReport], None]] = [check_binary_inputs,
                                                                check_unsigned_inputs]


def register_check(check: Callable[[nn.Module, ConversionReport], None]
                   ) -> Callable[[nn.Module, ConversionReport], None]:
    """Decorator: run ``check(model, report)`` on every model :func:`convert` returns."""
    CHECKS.append(check)
    return check


def _step(raw: Any) -> tuple[str | Method, Policy, dict[str, Any]]:
    """One entry of a method list -> (name or object, policy, options)."""
    if isinstance(raw, (str, Method)):
        return raw, Policy(), {}
    if isinstance(raw, Mapping) and isinstance(raw.get("name"), str):
        options = dict(raw)
        name = options.pop("name")
        policy = Policy(**{k: options.pop(k) for k in POLICY_OPTIONS if k in options})
        return name, policy, options
    raise ConversionError(f"a method must be a name, a Converter/GraphTransform object or a "
                          f"mapping with a 'name', got {raw!r}")


def _run(model: nn.Module, method: str | Method, policy: Policy, options: dict[str, Any],
         report: ConversionReport) -> nn.Module:
    """Apply one method to ``model`` (already a copy) and record it in the report and spec."""
    obj, label = _resolve(method, options)
    report.method = f"{report.method} -> {label}" if report.method else label
    step_report = ConversionReport(label)  # its messages name this method only
    model = obj._apply(model, policy, step_report)
    spec = getattr(model, "edgecompress_spec", None)  # as the method left it (pruning adds to it)
    report.converted += step_report.converted
    report.kept += step_report.kept
    report.removed += step_report.removed
    report.warnings += step_report.warnings
    if spec is None:
        return model
    entry = None
    if isinstance(method, str):
        entry = _json_safe({"name": method,
                            **{k: v for k, v in policy.spec().items() if k in obj.policy_options},
                            **options})
    if entry is None:  # an object, a class rule or an option value that cannot be written down
        if hasattr(model, "edgecompress_spec"):
            del model.edgecompress_spec
        return model
    previous = spec.get("method")
    chain = [] if previous is None else previous if isinstance(previous, list) else [previous]
    model.edgecompress_spec = {**spec, "method": [*chain, entry] if chain else entry}
    return model


def _resolve(method: str | Method, options: dict[str, Any]) -> tuple[Method, str]:
    """The method object and its label in the report."""
    if isinstance(method, Method):
        if options:
            raise ConversionError(
                f"option(s) {sorted(options)} cannot be given to convert() with a "
                f"{type(method).__name__} object, which would ignore them: pass them to its "
                f"constructor (convert() takes only {', '.join(POLICY_OPTIONS)}, inplace and "
                f"return_report with an object)")
        return method, type(method).__name__
    if not isinstance(method, str):
        raise ConversionError(f"a method must be a name, a Converter/GraphTransform object or a "
                              f"mapping with a 'name', got {method!r}")
    cls = _METHODS.get(method)
    name = normalize_name(method)
    valid = cls.options(name, options)
    unknown = sorted(set(options) - valid) if valid is not None else []
    if unknown:
        raise ConversionError(f"bad option for method {method!r}: no option(s) {unknown}; "
                              f"valid: {', '.join(sorted(valid or ())) or 'none'}")
    try:
        return cls.create(name, **options), method
    except TypeError as exc:
        raise ConversionError(f"bad option for method {method!r}: {exc}") from None


def _given(policy: Policy, options: dict[str, Any]) -> str:
    given = [k for k, v in vars(policy).items() if v != getattr(Policy(), k)] + sorted(options)
    return ", ".join(given)


def _drop_later_converted(report: ConversionReport) -> None:
    """In a list of methods a layer kept by one may be converted by another: keep it out of
    ``kept``, and list each kept layer once (with the last method's reason)."""
    converted = {n for n, _, _ in report.converted}
    kept: dict[str, tuple[str, str, str]] = {}
    for entry in report.kept:
        if entry[0] not in converted:
            kept[entry[0]] = entry
    report.kept = list(kept.values())


class _NotJSON(Exception):
    pass


def _json_safe(value: Any) -> Any:
    """``value`` in a form json.dumps writes and a recipe reads back (tuples as lists, a Schedule
    as its mapping), or None if some part of it (a class rule, a quantizer object) has none."""
    try:
        return _to_json(value)
    except _NotJSON:
        return None


def _to_json(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Schedule):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        return {k: _to_json(v) for k, v in value.items()}
    raise _NotJSON


def _matches(name: str, module: nn.Module, rules: Iterable[Rule]) -> bool:
    for rule in rules:
        if isinstance(rule, type):
            if isinstance(module, rule):
                return True
        elif fnmatch.fnmatchcase(name, rule):
            return True
    return False


def _kinds(converter: Converter) -> str:
    kinds = [t.__name__ for t in converter.supported_types]
    return ", ".join(kinds + ["LSTM (its gate maps)"] * converter.converts_lstm)


def _unsupported_lstm(module: nn.Module) -> str | None:
    """Why a plain nn.LSTM cannot become a GateLSTM (naming the option), None if it can or is
    no nn.LSTM."""
    if type(module) is not nn.LSTM:
        return None
    try:
        check_lstm(module, "GateLSTM")
    except ConversionError as exc:
        return str(exc)
    return None


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
        if not any(converter.takes(m) for _, m in matched):
            shown = ", ".join(f"{n} ({type(m).__name__})" for n, m in matched[:4])
            more = f" and {len(matched) - 4} more" if len(matched) > 4 else ""
            raise ConversionError(
                f"include rule {rule!r} matches only layers that method {method!r} cannot "
                f"convert: {shown}{more}; it supports: {_kinds(converter)}"
            )


def _first_last_names(model: nn.Module) -> dict[str, str]:
    """Names of the first conv/linear layer and the last linear layer, with the reason (an
    LSTM's gate maps are inner layers, never these)."""
    lstms = tuple(n + "." for n, m in model.named_modules() if n and isinstance(m, GateLSTM))
    weighted = [(n, m) for n, m in model.named_modules()
                if isinstance(m, (nn.Conv2d, nn.Linear)) and not n.startswith(lstms)]
    out: dict[str, str] = {}
    if weighted:
        out[weighted[0][0]] = "first layer"
    linears = [n for n, m in weighted if isinstance(m, nn.Linear)]
    if linears:
        out.setdefault(linears[-1], "last layer")
    return out
