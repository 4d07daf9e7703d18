"""A frozen model's structure as JSON, read back without running code from the file.

- Values (node arguments, layer configs, attributes) use a tagged encoding: JSON numbers,
  strings, booleans, null and lists are themselves; every JSON object is a one-key tag:
  ``{"node": name}``, ``{"tuple": [...]}``, ``{"dict": [[k, v], ...]}``, ``{"slice": [a, b,
  c]}``, ``{"float": "inf" | "-inf" | "nan"}``, ``{"dtype": "float32"}``, ``{"device":
  "cpu"}``, ``{"memory_format": "channels_last"}``, ``{"layout": "strided"}``, ``{"size":
  [...]}``, ``{"ellipsis": null}``.
- Functions (``call_function`` targets) are written as qualified names and resolved on load
  only from an allowlist: torch's and torch.nn.functional's public functions (not the ones
  that read or write files or change global settings), operator's arithmetic, comparison and
  indexing, math, ``getattr`` of torch.Tensor's public non-method attributes (``x.shape``),
  edgecompress's custom ops
  (``torch.ops.edgecompress.*``) and functions registered with :func:`register_function`.
  Methods (``call_method``) must be public methods of ``torch.Tensor``.
- Modules: a registered packed layer is its class name and ``config()``; a torch.nn layer its
  class name in ``torch.nn`` and its constructor arguments, read from its attributes through
  ``inspect.signature`` (checked at save time: the rebuilt layer must have the same plain
  attributes and the same ``state_dict`` shapes); any other module is a container (its forward
  is in the graph) that holds its children and its own tensors.

Every problem is a :class:`~edgecompress.errors.ModelFileError` saying what is wrong; the file
format (:mod:`~edgecompress.deploy.fileformat`) adds the file's name.
"""

from __future__ import annotations

import builtins
import inspect
import keyword
import math
import operator
import re
import types
from typing import Any, Callable

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ModelFileError, UnknownNameError
from .packed import PackedLayer, packed_class

__all__ = ["register_function", "encode_value", "decode_value", "encode_graph", "decode_graph",
           "check_dotted_name", "describe_module", "build_module"]

_NONFINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}
_MEMORY_FORMATS = {str(f).rpartition(".")[2]: f for f in (
    torch.contiguous_format, torch.channels_last, torch.channels_last_3d, torch.preserve_format)}


def encode_value(value: Any, node_name: Callable[[fx.Node], str] | None = None) -> Any:
    """``value`` in the tagged JSON encoding (see the module docstring); ``node_name`` names the
    fx nodes a graph argument refers to. Other types raise TypeError naming them."""
    def enc(v: Any) -> Any:
        if v is None or isinstance(v, (bool, str)):
            return v
        if isinstance(v, int):
            return int(v)
        if isinstance(v, float):
            return v if math.isfinite(v) else {"float": str(v)}
        if isinstance(v, fx.Node) and node_name is not None:
            return {"node": node_name(v)}
        if isinstance(v, torch.Size):
            return {"size": [enc(x) for x in v]}
        if isinstance(v, tuple):
            return {"tuple": [enc(x) for x in v]}
        if isinstance(v, list):
            return [enc(x) for x in v]
        if isinstance(v, dict):
            return {"dict": [[enc(k), enc(x)] for k, x in v.items()]}
        if isinstance(v, slice):
            return {"slice": [enc(v.start), enc(v.stop), enc(v.step)]}
        if v is Ellipsis:
            return {"ellipsis": None}
        if isinstance(v, torch.dtype):
            return {"dtype": str(v).rpartition(".")[2]}
        if isinstance(v, torch.device):
            return {"device": str(v)}
        if isinstance(v, torch.memory_format):
            return {"memory_format": str(v).rpartition(".")[2]}
        if isinstance(v, torch.layout):
            return {"layout": str(v).rpartition(".")[2]}
        raise TypeError(f"a value of type {type(v).__name__} ({v!r:.60}) has no file encoding")

    return enc(value)


def decode_value(data: Any, nodes: dict[str, fx.Node] | None = None) -> Any:
    """The value :func:`encode_value` wrote; ``nodes`` resolves node references."""
    if data is None or isinstance(data, (bool, int, float, str)):
        return data
    if isinstance(data, list):
        return [decode_value(x, nodes) for x in data]
    if not (isinstance(data, dict) and len(data) == 1):
        raise ModelFileError(f"malformed value {data!r:.80}")
    (tag, body), = data.items()
    try:
        if tag == "node" and nodes is not None and body in nodes:
            return nodes[body]
        if tag in ("tuple", "size") and isinstance(body, list):
            items = tuple(decode_value(x, nodes) for x in body)
            return torch.Size(items) if tag == "size" else items
        if tag == "dict" and isinstance(body, list):
            return {decode_value(k, nodes): decode_value(v, nodes) for k, v in body}
        if tag == "slice" and isinstance(body, list) and len(body) == 3:
            return slice(*(decode_value(x, nodes) for x in body))
        if tag == "ellipsis":
            return Ellipsis
        if tag == "float" and body in _NONFINITE:
            return _NONFINITE[body]
        if tag == "dtype" and isinstance(getattr(torch, str(body), None), torch.dtype):
            return getattr(torch, body)
        if tag == "device":
            return torch.device(body)
        if tag == "memory_format" and body in _MEMORY_FORMATS:
            return _MEMORY_FORMATS[body]
        if tag == "layout" and isinstance(getattr(torch, str(body), None), torch.layout):
            return getattr(torch, body)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ModelFileError(f"malformed value {data!r:.80}: {exc}") from None
    raise ModelFileError(f"unknown or malformed value {data!r:.80}")


# --- functions ------------------------------------------------------------------------------

_REGISTERED: dict[str, Callable[..., Any]] = {}

_OPERATORS = frozenset(
    "add sub mul truediv floordiv mod pow matmul neg pos abs invert not_ and_ or_ xor lshift "
    "rshift eq ne lt le gt ge getitem iadd isub imul itruediv ifloordiv imod ipow imatmul iand "
    "ior ixor ilshift irshift".split())
#: torch functions a file may not call: they read or write files or change global state
_TORCH_DENIED = frozenset({"from_file", "load", "save", "compile", "import_ir_module",
                           "import_ir_module_from_buffer", "manual_seed", "seed",
                           "init_num_threads", "use_deterministic_algorithms"})


def _allowed(namespace: str, name: str, fn: object) -> bool:
    if name.startswith("_") or not callable(fn) or isinstance(fn, (type, types.ModuleType)):
        return False
    if namespace == "operator":
        return name in _OPERATORS
    if namespace == "builtins":
        return name == "getattr"
    if namespace == "torch":
        return name not in _TORCH_DENIED and not name.startswith("set_")
    return True  # math, torch.nn.functional


_NAMESPACES: dict[str, types.ModuleType] = {"torch.nn.functional": F, "torch": torch,
                                             "operator": operator, "math": math,
                                             "builtins": builtins}


def register_function(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Allow ``fn`` (e.g. a ``torch.fx.wrap``-ped function of your model) as a function that a
    saved model's graph calls; files name it ``module.qualname``. Usable as a decorator."""
    _REGISTERED[f"{fn.__module__}.{fn.__qualname__}"] = fn
    return fn


def function_name(fn: object) -> str:
    """The qualified name a file gives the allowed function ``fn``; ModelFileError if it is
    not allowed."""
    for name, registered in _REGISTERED.items():
        if registered is fn:
            return name
    if isinstance(fn, (torch._ops.OpOverload, torch._ops.OpOverloadPacket)):
        qualified = str(fn)  # "edgecompress.op" or "edgecompress.op.overload"
        namespace, _, rest = qualified.partition(".")
        if namespace == "edgecompress":
            return f"torch.ops.edgecompress.{rest}"
    for namespace, module in _NAMESPACES.items():
        candidates = [getattr(fn, "__name__", "")] + [n for n in dir(module) if n[:1] != "_"]
        for name in candidates:
            if name and getattr(module, name, None) is fn and _allowed(namespace, name, fn):
                return f"{namespace}.{name}"
    raise ModelFileError(f"the graph calls {getattr(fn, '__module__', '?')}."
                         f"{getattr(fn, '__qualname__', repr(fn))}, which is not a function a "
                         f"file may call (torch, torch.nn.functional, operator, math, "
                         f"edgecompress's ops, or one registered with "
                         f"edgecompress.deploy.register_function)")


def resolve_function(name: object) -> Callable[..., Any]:
    """The function a file names, from the allowlist only (nothing is imported)."""
    if isinstance(name, str):
        if name in _REGISTERED:
            return _REGISTERED[name]
        if name.startswith("torch.ops.edgecompress."):
            op, _, overload = name[len("torch.ops.edgecompress."):].partition(".")
            packet = getattr(torch.ops.edgecompress, op, None) if op.isidentifier() else None
            if packet is not None and not overload:
                return packet
            if packet is not None and overload.isidentifier():
                fn = getattr(packet, overload, None)
                if fn is not None:
                    return fn
        namespace, _, attr = name.rpartition(".")
        module = _NAMESPACES.get(namespace)
        if module is not None and attr.isidentifier():
            fn = getattr(module, attr, None)
            if fn is not None and _allowed(namespace, attr, fn):
                return fn
    raise ModelFileError(f"function {name!r} is not one a model file may call (allowed: public "
                         f"torch, torch.nn.functional, operator and math functions, "
                         f"edgecompress's ops and registered functions)")


def _public_tensor_attribute(name: object, method: bool) -> bool:
    """``name`` is a public method (``method``) or a public non-method attribute (shape,
    dtype, T...) of torch.Tensor: a file's graph never reaches a function it could call."""
    if not (isinstance(name, str) and name[:1] != "_" and hasattr(Tensor, name)):
        return False
    return callable(getattr(Tensor, name)) == method


def _check_call(op: str, target: Any, args: tuple[Any, ...]) -> None:
    """Methods must be public methods of torch.Tensor; getattr only reads public non-method
    attributes of torch.Tensor."""
    if op == "call_method" and not _public_tensor_attribute(target, method=True):
        raise ModelFileError(f"method {target!r} is not a public torch.Tensor method")
    if target is builtins.getattr and not (
            len(args) == 2 and _public_tensor_attribute(args[1], method=False)):
        raise ModelFileError(f"getattr{tuple(args)!r:.80} does not read a public attribute of a "
                             f"tensor")


# --- graph ----------------------------------------------------------------------------------

_OPS = ("placeholder", "get_attr", "call_function", "call_method", "call_module", "output")
_NAME = re.compile(r"[A-Za-z0-9_]+")


def check_dotted_name(name: object) -> str:
    """``name`` if it is a dotted module / tensor path of letters, digits and underscores
    (torch.fx writes these names into the Python code of the loaded model's forward)."""
    if not (isinstance(name, str) and all(_NAME.fullmatch(part) for part in name.split("."))):
        raise ModelFileError(f"{name!r:.80} is not a dotted name of letters, digits and "
                             f"underscores")
    return name


def encode_graph(graph: fx.Graph) -> list[dict[str, Any]]:
    """The graph's nodes, in order, as JSON (op, name, target, args, kwargs)."""
    out = []
    for node in graph.nodes:
        target = function_name(node.target) if node.op == "call_function" else node.target
        try:
            _check_call(node.op, node.target, node.args)
        except ModelFileError as exc:
            raise ModelFileError(f"node {node.name!r}: {exc}") from None
        try:
            args = encode_value(node.args, lambda n: n.name)["tuple"]
            kwargs = encode_value(dict(node.kwargs), lambda n: n.name)
        except TypeError as exc:
            raise ModelFileError(f"node {node.name!r} ({node.op} {node.target}): {exc}") from None
        out.append({"op": node.op, "name": node.name, "target": target, "args": args,
                    "kwargs": kwargs})
    return out


def decode_graph(data: Any) -> fx.Graph:
    """The fx graph :func:`encode_graph` wrote; nodes may refer only to earlier nodes."""
    if not isinstance(data, list):
        raise ModelFileError("the graph is not a list of nodes")
    graph = fx.Graph()
    nodes: dict[str, fx.Node] = {}
    for entry in data:
        if not (isinstance(entry, dict) and entry.get("op") in _OPS
                and isinstance(entry.get("name"), str)):
            raise ModelFileError(f"malformed graph node {entry!r:.80}")
        op, name = entry["op"], entry["name"]
        args = decode_value({"tuple": entry.get("args", [])}, nodes)
        kwargs = decode_value(entry.get("kwargs", {"dict": []}), nodes)
        if not isinstance(kwargs, dict) or not all(
                isinstance(k, str) and k.isidentifier() and not keyword.iskeyword(k)
                for k in kwargs):
            raise ModelFileError(f"node {name!r}: malformed keyword arguments")
        target = entry.get("target")
        try:
            if op == "call_function":
                target = resolve_function(target)
            elif op in ("call_module", "get_attr"):
                check_dotted_name(target)
            elif op == "placeholder" and not (isinstance(target, str) and target.isidentifier()
                                              and not keyword.iskeyword(target)):
                raise ModelFileError(f"placeholder {target!r:.60} is not an identifier")
            elif op == "output" and target != "output":
                raise ModelFileError(f"output target {target!r:.60} is not 'output'")
            _check_call(op, target, args)
        except ModelFileError as exc:
            raise ModelFileError(f"node {name!r}: {exc}") from None
        node = graph.create_node(op, target, args, kwargs, name=name)
        nodes[name] = node
    try:
        graph.lint()
    except Exception as exc:  # fx's own message says which node is wrong
        raise ModelFileError(f"the graph is inconsistent: {exc}") from None
    return graph


# --- modules --------------------------------------------------------------------------------

_CONTAINERS: dict[str, type[nn.Module]] = {"Sequential": nn.Sequential,
                                           "ModuleList": nn.ModuleList,
                                           "ModuleDict": nn.ModuleDict, "Module": nn.Module}


def _torch_nn_class(cls: type) -> str | None:
    """``cls``'s name if ``torch.nn.<name>`` is ``cls``, else None."""
    return cls.__name__ if getattr(nn, cls.__name__, None) is cls else None


def _constructor_arguments(module: nn.Module) -> dict[str, Any]:
    """The named constructor parameters of ``module``'s class, read from its attributes (a
    tensor attribute, e.g. ``bias``, is the flag that made it; None for a flag is False)."""
    arguments = {}
    init = type(module).__init__
    if isinstance(module, nn.RNNBase) and type(module) is not nn.RNNBase:
        # nn.LSTM / GRU / RNN take RNNBase's arguments through *args, **kwargs, all but the
        # ``mode`` they fix themselves
        init = nn.RNNBase.__init__
    signature = inspect.signature(init)
    for p in list(signature.parameters.values())[1:]:
        if (p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.name.startswith("_")
                or p.name in ("device", "dtype", "mode") and init is nn.RNNBase.__init__
                or p.name in ("device", "dtype") or not hasattr(module, p.name)):
            continue
        value = getattr(module, p.name)
        if isinstance(value, Tensor):
            value = True
        elif value is None and isinstance(p.default, bool):
            value = False
        arguments[p.name] = value
    return arguments


def _plain_attributes(module: nn.Module) -> dict[str, Any]:
    return {k: repr(v) for k, v in vars(module).items()
            if not k.startswith("_") and k != "training"
            and not isinstance(v, (Tensor, nn.Module))}


def _shapes(module: nn.Module) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    return {k: (tuple(v.shape), v.dtype) for k, v in module.state_dict().items()}


def describe_module(name: str, module: nn.Module) -> dict[str, Any]:
    """The JSON description of a leaf module (a registered packed layer or a torch.nn layer),
    checked to rebuild the same layer."""
    if isinstance(module, PackedLayer):
        kind = type(module).__name__
        try:
            registered = packed_class(kind) is type(module)
        except UnknownNameError:
            registered = False
        if not registered:
            raise ModelFileError(f"layer {name!r}: {kind} is not a registered packed layer "
                                 f"(decorate it with edgecompress.deploy.register_packed)")
        key, arguments = "config", module.config()
    else:
        kind = _torch_nn_class(type(module))
        if kind is None:
            raise ModelFileError(f"layer {name!r}: {type(module).__module__}."
                                 f"{type(module).__qualname__} is kept whole by torch.fx but is "
                                 f"neither a torch.nn layer nor a registered packed layer")
        key, arguments = "args", _constructor_arguments(module)
    try:
        encoded = encode_value(arguments)
    except TypeError as exc:
        raise ModelFileError(f"layer {name!r} ({kind}): {exc}") from None
    description = {"packed" if key == "config" else "torch.nn": kind, key: encoded}
    rebuilt = build_module(name, description)
    if isinstance(module, PackedLayer):
        same = _shapes(rebuilt) == _shapes(module)
    else:
        same = (_shapes(rebuilt) == _shapes(module)
                and _plain_attributes(rebuilt) == _plain_attributes(module))
    if not same:
        raise ModelFileError(f"layer {name!r} ({kind}) cannot be described by its constructor "
                             f"arguments {arguments}: the layer they build "
                             f"differs from it")
    return description


def build_module(name: str, description: Any) -> nn.Module:
    """The module a description holds: a leaf (packed or torch.nn, with initial weights) or an
    empty container."""
    if not isinstance(description, dict):
        raise ModelFileError(f"module {name!r}: malformed description {description!r:.80}")
    if "container" in description:
        cls = _CONTAINERS.get(description["container"])
        if cls is None:
            raise ModelFileError(f"module {name!r}: unknown container type "
                                 f"{description['container']!r}")
        return cls()
    if "packed" in description:
        kind = description["packed"]
        try:
            cls = packed_class(str(kind))
        except UnknownNameError as exc:
            raise ModelFileError(f"layer {name!r}: unknown packed layer type {kind!r} ({exc}; "
                                 f"import the module that registers it before loading)") from None
        config = decode_value(description.get("config", {"dict": []}))
        build = lambda: cls.from_config(config)  # noqa: E731
    elif "torch.nn" in description:
        kind = description["torch.nn"]
        cls = getattr(nn, kind, None) if isinstance(kind, str) and kind.isidentifier() else None
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise ModelFileError(f"layer {name!r}: unknown layer type torch.nn.{kind}")
        config = decode_value(description.get("args", {"dict": []}))
        build = lambda: cls(**config)  # noqa: E731
    else:
        raise ModelFileError(f"module {name!r}: unknown module kind {sorted(description)}")
    if not isinstance(config, dict) or not all(isinstance(k, str) for k in config):
        raise ModelFileError(f"layer {name!r} ({kind}): malformed arguments {config!r:.80}")
    try:
        return build()
    except Exception as exc:  # the constructor's own message names the bad argument
        raise ModelFileError(f"layer {name!r} ({kind}): cannot build it from {config}: "
                             f"{exc}") from None
