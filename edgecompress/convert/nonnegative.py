"""Binary inputs that can never be negative: the W1A1-after-ReLU mistake, found at convert time.

A layer with 1-bit inputs computes sign(x); after a ReLU every x is >= 0, so every sign is +1
and the layer's output no longer depends on its input: a silent wrong answer. The check reads the
dataflow (:func:`edgecompress.graph.trace`, compressed layers as leaves): from each layer with
binary inputs it walks back through operations that keep non-negativity (pooling, flatten /
view / reshape, dropout, identity, a cat or a sum of non-negative values...) to a producer that
is non-negative (ReLU, ReLU6, sigmoid, softmax, hardsigmoid, softplus, clamp(min >= 0)...). A
BatchNorm, a placeholder or any unknown operation ends the walk: no warning. When the model
cannot be traced (or a layer is hidden inside a module the trace keeps whole), a one-time check on
the first forward flags the layers whose inputs are all >= 0.

The converse mistake is found here too: an unsigned b-bit input quantizer (uniform's default,
made for inputs after a ReLU) clamps every negative input to 0, so on signed inputs (after a
BatchNorm or LayerNorm, a residual sum, tanh...) it throws half of them away. Those layers are
checked on the model's first forward (:func:`check_unsigned_inputs`): a layer whose inputs are
more than :data:`NEGATIVE_SHARE` negative is flagged.

Findings are issued as :class:`~edgecompress.errors.MeaninglessInputWarning` and recorded in the
:class:`~edgecompress.convert.ConversionReport`'s ``warnings``. The first-forward checks do
nothing while torch.compile traces (they wait for an eager forward).
"""

from __future__ import annotations

import functools
import operator
import warnings
from typing import TYPE_CHECKING, Any, Callable

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from ..errors import MeaninglessInputWarning
from ..graph import module_of, trace
from ..layers import CompressedLayer
from ..quantizers.uniform import UniformActivationQuantizer

if TYPE_CHECKING:
    from .engine import ConversionReport

SHOWN = 5  # layers named in the warning; the rest are counted
#: an unsigned input quantizer is flagged when more than this share of its first inputs is < 0
NEGATIVE_SHARE = 0.01

Check = Callable[[fx.Node], bool]


def _always(node: fx.Node) -> bool:
    return True


def _min_at_least_zero(node: fx.Node) -> bool:
    """clamp(x, min) / clamp_min(x, min) with a constant min >= 0."""
    low = node.kwargs.get("min", node.args[1] if len(node.args) > 1 else None)
    return isinstance(low, (int, float)) and low >= 0


def _pad_value_at_least_zero(node: fx.Node) -> bool:
    """F.pad(x, pad, mode, value): constant padding with a value >= 0 (the default 0), or a mode
    that repeats existing values."""
    value = node.kwargs.get("value", node.args[3] if len(node.args) > 3 else 0)
    return value is None or (isinstance(value, (int, float)) and value >= 0)


# non-negative whatever their input
_PRODUCER_MODULES: dict[type[nn.Module], Callable[[nn.Module], bool]] = {
    nn.ReLU: lambda m: True, nn.ReLU6: lambda m: True, nn.Sigmoid: lambda m: True,
    nn.Softmax: lambda m: True, nn.Softmax2d: lambda m: True, nn.Hardsigmoid: lambda m: True,
    nn.Softplus: lambda m: True,
    nn.Hardtanh: lambda m: m.min_val >= 0,  # hardtanh(x, 0, 1) is a clipped ReLU
}
_PRODUCER_CALLS: dict[Any, Check] = {
    **{f: _always for f in (F.relu, torch.relu, F.relu_, torch.relu_, F.relu6, F.sigmoid,
                            torch.sigmoid, F.softmax, torch.softmax, F.hardsigmoid, F.softplus,
                            torch.exp, torch.abs, "relu", "relu_", "sigmoid", "softmax", "exp",
                            "abs")},
    **{f: _min_at_least_zero for f in (torch.clamp, torch.clamp_min, "clamp", "clamp_min")},
}
# non-negative if their (first) input is: reshaping, pooling, dropout, averaging, indexing
_PASS_MODULES: tuple[type[nn.Module], ...] = (
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.Flatten, nn.Unflatten, nn.Dropout,
    nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.Identity, nn.Upsample, nn.PixelShuffle,
    nn.PixelUnshuffle, nn.ZeroPad2d)
_PASS_CALLS: dict[Any, Check] = {
    **{f: _always for f in (
        F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
        F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d,
        F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d, F.dropout,
        F.dropout1d, F.dropout2d, F.dropout3d, F.interpolate, torch.flatten, torch.reshape,
        torch.squeeze, torch.unsqueeze, torch.transpose, torch.permute, torch.mean, torch.sum,
        operator.getitem, "view", "reshape", "flatten", "permute", "transpose", "contiguous",
        "squeeze", "unsqueeze", "expand", "repeat", "mean", "sum", "clone", "to", "float")},
    F.pad: _pad_value_at_least_zero,
}
# non-negative if every tensor input is (numbers in their arguments are dimensions)
_JOIN_CALLS = {torch.cat, torch.concat, torch.stack}
# non-negative if every tensor input and every number in their arguments is (a residual add)
_ARITHMETIC_CALLS = {operator.add, operator.iadd, operator.mul, operator.imul, torch.add,
                     torch.mul, "add", "add_", "mul", "mul_"}


def check_binary_inputs(model: nn.Module, report: "ConversionReport") -> None:
    """Warn about (and record in ``report``) the layers of ``model`` with 1-bit inputs whose
    inputs can never be negative."""
    layers = {n: m for n, m in model.named_modules()
              if n and getattr(m, "input_bits", 32) == 1}
    if not layers:
        return
    graph = trace(model, leaves=(CompressedLayer,))
    if graph is None:
        FirstForwardCheck.install(model, layers, report, _all_nonnegative, _warn)
        return
    modules = dict(model.named_modules())
    memo: dict[fx.Node, str | None] = {}
    found: dict[str, str] = {}
    seen: set[str] = set()
    for node in graph.nodes:
        name = str(node.target)
        if node.op == "call_module" and name in layers and name not in found:
            seen.add(name)
            source = node.args[0] if node.args else next(iter(node.kwargs.values()), None)
            producer = _nonnegative(source, modules, memo)
            if producer is not None:
                found[name] = f"after {producer}"
    _warn(found, report)
    hidden = {n: m for n, m in layers.items() if n not in seen}  # inside a module fx keeps whole
    if hidden:
        FirstForwardCheck.install(model, hidden, report, _all_nonnegative, _warn)


def check_unsigned_inputs(model: nn.Module, report: "ConversionReport") -> None:
    """Check, on the first forward of ``model``, the layers whose input quantizer is unsigned
    b-bit: warn about (and record in ``report``) those whose inputs are negative (see the module
    docstring)."""
    layers = {n: m for n, m in model.named_modules()
              if n and isinstance(getattr(m, "input_quantizer", None), UniformActivationQuantizer)
              and not m.input_quantizer.signed}
    if layers:
        FirstForwardCheck.install(model, layers, report, _negative_share, _warn_unsigned)


def _all_nonnegative(layer: nn.Module, x: torch.Tensor) -> str | None:
    return ("every input of the first forward was >= 0; not traceable"
            if bool((x >= 0).all()) else None)


def _negative_share(layer: nn.Module, x: torch.Tensor) -> str | None:
    share = float((x < 0).float().mean()) if x.numel() else 0.0
    return f"{share:.0%} of its first inputs < 0" if share > NEGATIVE_SHARE else None


def _warn_unsigned(found: dict[str, str], report: "ConversionReport") -> None:
    warn_found(found, report, "quantize signed inputs with an unsigned quantizer, which sets "
               "every negative input to 0", "Convert them with activation_signed=True (in a "
               "method list, a separate step with include=[...] for these layers), or put a "
               "ReLU before them")


def _nonnegative(arg: Any, modules: dict[str, nn.Module],
                 memo: dict[fx.Node, str | None]) -> str | None:
    """The non-negative producer ``arg`` comes from (e.g. ``"stem.2 (ReLU)"``), or None if
    ``arg`` may be negative or we cannot tell."""
    if not isinstance(arg, fx.Node):
        return None
    if arg not in memo:
        memo[arg] = None  # a cycle cannot occur in fx graphs; this only guards the recursion
        memo[arg] = _producer(arg, modules, memo)
    return memo[arg]


def _producer(node: fx.Node, modules: dict[str, nn.Module],
              memo: dict[fx.Node, str | None]) -> str | None:
    module = module_of(node, modules)
    if module is not None:
        check = _PRODUCER_MODULES.get(type(module))
        if check is not None:
            return f"{node.target} ({type(module).__name__})" if check(module) else None
        if isinstance(module, _PASS_MODULES) and node.args:
            return _nonnegative(node.args[0], modules, memo)
        return None
    if node.op not in ("call_function", "call_method"):
        return None  # placeholders, constants, outputs
    target = node.target
    label = target if isinstance(target, str) else getattr(target, "__name__", str(target))
    if target in _PRODUCER_CALLS:
        return label if _PRODUCER_CALLS[target](node) else None
    if target in _PASS_CALLS:
        if not node.args or not _PASS_CALLS[target](node):
            return None
        return _nonnegative(node.args[0], modules, memo)
    if target in _JOIN_CALLS or target in _ARITHMETIC_CALLS:
        inputs: list[Any] = []
        fx.node.map_aggregate((node.args, node.kwargs), inputs.append)
        tensors = [a for a in inputs if isinstance(a, fx.Node)]
        numbers = [a for a in inputs if isinstance(a, (int, float)) and not isinstance(a, bool)]
        if not tensors or (target in _ARITHMETIC_CALLS and any(n < 0 for n in numbers)):
            return None
        producers = [_nonnegative(t, modules, memo) for t in tensors]
        if any(p is None for p in producers):
            return None
        return producers[0] if len(set(producers)) == 1 else f"{label} of {', '.join(producers)}"
    return None


def warn_found(found: dict[str, str], report: "ConversionReport", problem: str,
               fix: str) -> None:
    """One warning naming the ``found`` layers (the first SHOWN, with their reasons): "N
    layer(s) {problem}: layers. {fix}", also recorded in ``report``."""
    if not found:
        return
    shown = ", ".join(f"{name} ({why})" for name, why in list(found.items())[:SHOWN])
    more = f" and {len(found) - SHOWN} more" if len(found) > SHOWN else ""
    message = f"{len(found)} layer(s) {problem}: {shown}{more}. {fix}"
    report.warnings.append(message)
    warnings.warn(message, MeaninglessInputWarning, stacklevel=4)


def _warn(found: dict[str, str], report: "ConversionReport") -> None:
    warn_found(found, report, "binarize inputs that are never negative, so every input sign "
               "is +1 and the layer ignores its input", "Put a signed activation before them "
               "(activation='hardtanh' in the zoo models) or a learnable threshold before the "
               "sign (an RSign-style bias)")


class FirstForwardCheck:
    """Hooks on ``layers`` note those whose input on the model's first (eager) forward has a
    ``problem`` (``problem(layer, input)``: the reason, or None; looked at once the layer has
    run, inside its call, so a summary counting operations books a check's work to the layer,
    which counts itself); a hook on the model ``warn``s once that forward is over, then every
    hook is removed. For binary inputs, the fallback of a model torch.fx cannot trace; for
    unsigned inputs and swamped Euclid layers, the check itself."""

    def __init__(self, report: "ConversionReport",
                 problem: Callable[[nn.Module, torch.Tensor], str | None],
                 warn: Callable[[dict[str, str], "ConversionReport"], None]) -> None:
        self.report, self.problem, self.warn = report, problem, warn
        self.found: dict[str, str] = {}
        self.seen: set[str] = set()
        self.done = False
        self.handles: list[Any] = []

    @classmethod
    def install(cls, model: nn.Module, layers: dict[str, nn.Module], report: "ConversionReport",
                problem: Callable[[nn.Module, torch.Tensor], str | None],
                warn: Callable[[dict[str, str], "ConversionReport"], None]) -> None:
        check = cls(report, problem, warn)
        for name, layer in layers.items():
            check.handles.append(
                layer.register_forward_hook(functools.partial(check.after_layer, name)))
        check.handles.append(model.register_forward_hook(check.after_model))

    def after_layer(self, name: str, module: nn.Module, args: tuple[Any, ...],
                    output: Any) -> None:
        if (self.done or name in self.seen or not args or not isinstance(args[0], torch.Tensor)
                or torch.compiler.is_compiling()):
            return
        self.seen.add(name)
        reason = self.problem(module, args[0].detach())
        if reason is not None:
            self.found[name] = reason

    def after_model(self, module: nn.Module, args: Any, output: Any) -> None:
        if self.done or torch.compiler.is_compiling():
            return
        self.done = True
        for handle in self.handles:
            handle.remove()
        self.warn(self.found, self.report)
