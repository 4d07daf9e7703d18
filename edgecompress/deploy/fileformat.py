"""The frozen-model file: safetensors tensors plus JSON structure, loaded without running code
from the file (no pickle, no eval) and without the model zoo.

The safetensors header's ``"edgecompress"`` entry is JSON (values in the tagged encoding of
:mod:`~edgecompress.deploy.structure`):

- ``format`` ("edgecompress-frozen") and ``version`` (:data:`VERSION`; a file of another
  version is refused, naming both);
- ``class``: the model's class name (the loaded ``torch.fx.GraphModule`` takes it);
- ``graph``: the model's torch.fx graph (packed layers and torch.nn's layers are single
  ``call_module`` nodes; the forward code of every other module is in the graph);
- ``modules``: every submodule by dotted name, in order: a registered packed layer (class name
  and ``config()``), a torch.nn layer (class and constructor arguments) or a container (with
  the names of its own parameters and buffers);
- ``channels_last``: the 4-D tensors (parameters and buffers) held in channels-last memory
  format, restored on load so the loaded model computes what the saved one did, bit for bit;
- ``attributes``: ``input_shape``, ``num_classes`` and, when it can be written,
  ``edgecompress_spec`` (how the model was made; informational, never needed to load).
- ``metadata`` (optional, its own ``version``): what the model's users need besides the model
  (dataset, input preprocessing, class names, training recipe), see
  :mod:`~edgecompress.deploy.metadata`; read alone with :func:`load_metadata`.

A file of another kind (a training checkpoint, an ONNX model...) given to :func:`load` is named
as such (:func:`edgecompress.files.mismatch`).

Tensors are stored under their ``state_dict`` keys, each in its layer's on-disk form
(:meth:`~edgecompress.deploy.PackedLayer.encode_tensor`): binary weights as an unpadded
little-endian bitstream (``ceil(n k / 8)`` bytes, so the file is 1 bit per binary weight plus
the float parts), shift weights as their value codes, ``bits`` bits each.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.fx as fx
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from ..errors import ModelFileError
from ..files import FROZEN_FORMAT as FORMAT
from ..files import FileKind, mismatch
from ..graph import is_leaf, trace
from . import chunking
from .metadata import ModelMetadata
from .packed import PackedLayer, packed_class_for
from .structure import (build_module, check_dotted_name, decode_graph, decode_value,
                        describe_module, encode_graph, encode_value)

VERSION = 2

#: plain model attributes a file keeps (when they can be written)
ATTRIBUTES = ("input_shape", "num_classes", "edgecompress_spec")
_CONTAINER_TYPES = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def _container_kind(module: nn.Module) -> str:
    for cls in _CONTAINER_TYPES:
        if isinstance(module, cls):
            return cls.__name__
    return "Module"


def _own_tensors(module: nn.Module) -> tuple[list[str], list[str]]:
    """A container's own parameters and persistent buffers (not its children's)."""
    params = [k for k, v in module._parameters.items() if v is not None]
    buffers = [k for k, v in module._buffers.items()
               if v is not None and k not in module._non_persistent_buffers_set]
    return params, buffers


def _channels_last(t: Tensor) -> bool:
    """Held in channels-last strides (as ``module.to(memory_format=torch.channels_last)``
    leaves it) that differ from the default ones (a size-1 dimension can make the layouts
    equal)."""
    if t.dim() != 4:
        return False
    last = torch.empty(t.shape, device="meta", memory_format=torch.channels_last).stride()
    return t.stride() == last and last != torch.empty(t.shape, device="meta").stride()


def _describe(model: nn.Module, graph: fx.Graph, path: Path
              ) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """(module descriptions, tensors to write) of a traced model."""
    modules: dict[str, Any] = {}
    tensors: dict[str, Tensor] = {}
    leaves: list[str] = []
    containers: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        if any(name.startswith(leaf + ".") for leaf in leaves):
            continue  # inside a leaf: its constructor builds it
        prefix = f"{name}." if name else ""
        container = isinstance(module, _CONTAINER_TYPES) or type(module) is nn.Module
        if name and not container and is_leaf(module, (PackedLayer,)):
            modules[name] = describe_module(name, module)
            leaves.append(name)
            state = module.state_dict()
            for key, value in state.items():
                if isinstance(module, PackedLayer):
                    value = module.encode_tensor(key, value)
                tensors[prefix + key] = value
            continue
        params, buffers = _own_tensors(module)
        modules[name] = {"container": _container_kind(module), "parameters": params,
                         "buffers": buffers}
        containers[name] = module
        for key in params + buffers:
            tensors[prefix + key] = getattr(module, key)
    for node in graph.nodes:  # tensors the graph reads that no state_dict holds
        if node.op != "get_attr":
            continue
        owner, _, attr = str(node.target).rpartition(".")
        if owner in containers:
            value = getattr(containers[owner], attr, None)
            if not isinstance(value, Tensor):
                raise ModelFileError(f"cannot save {type(model).__name__} to {path}: the graph "
                                     f"reads {node.target!r}, which is not a tensor")
            entry = modules[owner]
            if attr not in entry["parameters"] + entry["buffers"]:
                entry["buffers"].append(attr)
                tensors[str(node.target)] = value
        elif not any(owner == leaf or owner.startswith(leaf + ".") for leaf in leaves):
            raise ModelFileError(f"cannot save {type(model).__name__} to {path}: the graph reads "
                                 f"{node.target!r} of no module it holds")
    return modules, tensors


def _check_savable(model: nn.Module, path: Path) -> None:
    """The file holds an inference model: no training-form layers, nothing in training mode
    (a float model, e.g. a pruned one, is fine once frozen)."""
    training = [(n, type(m).__name__) for n, m in model.named_modules()
                if packed_class_for(m) is not None]
    if training:
        raise ModelFileError(f"cannot save {type(model).__name__} to {path}: it still has "
                             f"training-form layers {training[:3]}; call "
                             f"edgecompress.deploy.freeze(model) first and save what it returns")
    in_training = [n or type(model).__name__ for n, m in model.named_modules() if m.training]
    if in_training:
        raise ModelFileError(f"cannot save {type(model).__name__} to {path}: {in_training[:3]} "
                             f"in training mode; call edgecompress.deploy.freeze(model) first "
                             f"(it returns an eval-mode inference copy, also of a float model)")


def save(model: nn.Module, path: str | Path, metadata: ModelMetadata | None = None) -> None:
    """Write a frozen model (see :func:`freeze`) to ``path``: its graph, layers and tensors
    (see the module docstring), and ``metadata`` if given (its ``input_shape`` must be the
    model's, and its ``classes`` name one output each). Any model that
    torch.fx can trace is written, whatever its class or widths (a frozen float model too); one
    that it cannot trace, that still has training-form layers or is in training mode is an
    error saying why."""
    path = Path(path)
    _check_savable(model, path)
    if metadata is not None:
        _check_metadata(model, metadata, path)
    try:
        graph = trace(model, leaves=(PackedLayer,), strict=True)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(f"cannot save {type(model).__name__} to {path}: torch.fx cannot "
                             f"trace it ({reason}); the file format stores the traced graph") \
            from None
    assert graph is not None
    try:
        modules, tensors = _describe(model, graph, path)
        nodes = encode_graph(graph)
    except ModelFileError as exc:
        if str(path) in str(exc):
            raise
        raise ModelFileError(f"cannot save {type(model).__name__} to {path}: {exc}") from None
    attributes = {}
    for name in ATTRIBUTES:
        if name in vars(model):
            try:
                attributes[name] = encode_value(vars(model)[name])
                json.dumps(attributes[name], allow_nan=False)
            except (TypeError, ValueError):  # e.g. a spec holding Schedule objects
                attributes.pop(name, None)
    layout = [name for name, t in [*model.named_parameters(), *model.named_buffers()]
              if _channels_last(t)]
    meta = {"format": FORMAT, "version": VERSION, "class": type(model).__name__,
            "attributes": attributes, "modules": modules, "graph": nodes,
            "channels_last": layout}
    if metadata is not None:
        meta["metadata"] = metadata.to_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(path),
              metadata={"edgecompress": json.dumps(meta, allow_nan=False)})


def _check_metadata(model: nn.Module, metadata: ModelMetadata, path: Path) -> None:
    if not isinstance(metadata, ModelMetadata):
        raise ModelFileError(f"cannot save to {path}: metadata must be a "
                             f"edgecompress.deploy.ModelMetadata, got {type(metadata).__name__}")
    shape = getattr(model, "input_shape", None)
    if shape is not None and tuple(shape) != metadata.input_shape:
        raise ModelFileError(f"cannot save to {path}: metadata input_shape "
                             f"{metadata.input_shape} differs from the model's {tuple(shape)}")
    if metadata.classes is not None:
        x = torch.zeros(1, *metadata.input_shape, dtype=getattr(torch, metadata.input_dtype))
        with torch.no_grad():
            outputs = model(x).shape[-1]
        if outputs != len(metadata.classes):
            raise ModelFileError(f"cannot save to {path}: metadata names "
                                 f"{len(metadata.classes)} classes, the model has {outputs} "
                                 f"outputs")


def _read(path: Path, tensors: bool = True) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """(header JSON, tensors) of a frozen file; ``tensors=False`` reads the header only."""
    if not path.is_file():
        raise ModelFileError(mismatch(path, FileKind.FROZEN) or f"model file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("edgecompress")
            stored = {key: f.get_tensor(key) for key in f.keys()} if tensors else {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(mismatch(path, FileKind.FROZEN) or f"{path}: not a readable "
                             f"safetensors file (truncated or corrupt?): {exc}") from None
    if raw is None:
        raise ModelFileError(f"{path}: no edgecompress metadata; not a frozen edgecompress model")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{path}: corrupt metadata: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        format_ = meta.get("format") if isinstance(meta, dict) else None
        raise ModelFileError(f"{path}: format {format_!r}, expected {FORMAT!r}")
    version = meta.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise ModelFileError(f"{path}: format version {version!r} is newer than this "
                             f"edgecompress reads ({VERSION}); upgrade edgecompress")
    if version < VERSION:
        raise ModelFileError(f"{path}: format version {version} is older than this edgecompress "
                             f"reads ({VERSION}): freeze and save the model again with this "
                             f"version")
    return meta, stored


def _build(meta: dict[str, Any], tensors: dict[str, Tensor]) -> nn.Module:
    """The model a file describes, with its tensors (raises ModelFileError without the path)."""
    descriptions = meta.get("modules")
    if not isinstance(descriptions, dict) or "" not in descriptions:
        raise ModelFileError("malformed module list")
    root = nn.Module()
    built: dict[str, nn.Module] = {"": root}
    leaves: dict[str, nn.Module] = {}
    own: dict[str, tuple[list[str], list[str]]] = {}
    for name, description in descriptions.items():
        if not isinstance(description, dict):
            raise ModelFileError(f"module {name!r}: malformed description {description!r:.80}")
        module = root if name == "" else build_module(check_dotted_name(name), description)
        if name:
            parent, _, child = name.rpartition(".")
            if parent not in built or not child:
                raise ModelFileError(f"module {name!r} comes before its parent {parent!r}")
            built[parent].add_module(child, module)
            built[name] = module
        if "container" in description:
            params, buffers = description.get("parameters", []), description.get("buffers", [])
            if not (isinstance(params, list) and isinstance(buffers, list) and all(
                    isinstance(k, str) and k.isidentifier() for k in params + buffers)):
                raise ModelFileError(f"module {name!r}: malformed tensor names")
            own[name] = (params, buffers)
        else:
            leaves[name] = module
    # the tensors the file must hold: the leaves' state_dicts and the containers' own tensors
    expected: dict[str, tuple[nn.Module, str, Tensor] | None] = {}
    for name, module in leaves.items():
        for key, reference in module.state_dict().items():
            expected[f"{name}.{key}"] = (module, key, reference)
    for name, (params, buffers) in own.items():
        for key in params + buffers:
            expected[f"{name}.{key}" if name else key] = None
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ModelFileError(f"tensors do not match the model: missing {missing}, "
                             f"unexpected {unexpected}")
    state = {}
    for key, value in tensors.items():
        owner = expected[key]
        if owner is not None:
            module, local, reference = owner
            if isinstance(module, PackedLayer):
                try:
                    value = module.decode_tensor(local, value)
                except ValueError as exc:
                    raise ModelFileError(f"tensor {key!r} {exc}") from None
            if value.shape != reference.shape or value.dtype != reference.dtype:
                raise ModelFileError(f"tensor {key!r} is {value.dtype} {tuple(value.shape)}, "
                                     f"expected {reference.dtype} {tuple(reference.shape)}")
        state[key] = value
    for name, (params, buffers) in own.items():
        prefix = f"{name}." if name else ""
        for key in params:
            built[name].register_parameter(key, nn.Parameter(state[prefix + key],
                                                             requires_grad=False))
        for key in buffers:
            built[name].register_buffer(key, state[prefix + key])
    graph = decode_graph(meta.get("graph"))
    for node in graph.nodes:
        if node.op == "call_module" and str(node.target) not in built:
            raise ModelFileError(f"node {node.name!r} calls module {node.target!r}, which the "
                                 f"file does not describe")
        if node.op == "get_attr" and str(node.target) not in state and not _has_tensor(
                built, str(node.target)):
            raise ModelFileError(f"node {node.name!r} reads {node.target!r}, which the file "
                                 f"does not hold")
    class_name = meta.get("class")
    if not (isinstance(class_name, str) and class_name.isidentifier()):
        raise ModelFileError(f"malformed class name {class_name!r}")
    model = fx.GraphModule(root, graph, class_name=class_name)
    for name, child in root.named_children():  # every submodule, also those the graph skips
        setattr(model, name, child)
    for name, (params, buffers) in own.items():
        if name == "":
            for key in params:
                model.register_parameter(key, root._parameters[key])
            for key in buffers:
                model.register_buffer(key, root._buffers[key])
    model.load_state_dict(state)
    layout = meta.get("channels_last", [])
    for name in layout if isinstance(layout, list) else [None]:
        tensor = _tensor(model, name)
        if tensor is None or tensor.dim() != 4:
            raise ModelFileError(f"channels_last names {name!r}, not a 4-D tensor of the model")
        restrided = torch.empty(tensor.shape, dtype=tensor.dtype,
                                memory_format=torch.channels_last)
        tensor.data = restrided.copy_(tensor.data)
    attributes = meta.get("attributes", {})
    for name in ATTRIBUTES:
        if isinstance(attributes, dict) and name in attributes:
            setattr(model, name, decode_value(attributes[name]))
    for p in model.parameters():
        p.requires_grad_(False)
    if isinstance(layout, list) and layout and chunking.chunkable(model):  # as freeze does
        chunking.install(model)
    return model.eval()


def _has_tensor(built: dict[str, nn.Module], target: str) -> bool:
    owner, _, attr = target.rpartition(".")
    return owner in built and isinstance(getattr(built[owner], attr, None), Tensor)


def _tensor(model: nn.Module, name: object) -> Tensor | None:
    if not isinstance(name, str):
        return None
    owner, _, attr = name.rpartition(".")
    try:
        module = model.get_submodule(owner)
    except AttributeError:
        return None
    value = module._parameters.get(attr, module._buffers.get(attr))
    return value if isinstance(value, Tensor) else None


def load_metadata(path: str | Path, required_for: str | None = None) -> ModelMetadata | None:
    """The metadata section of frozen file ``path`` (read from its header, not its tensors),
    validated; None if the file has none, unless ``required_for`` names what needs it (e.g.
    "predict"): then a ModelFileError saying how to get a file with metadata."""
    path = Path(path)
    meta, _ = _read(path, tensors=False)
    raw = meta.get("metadata")
    if raw is None:
        if required_for is None:
            return None
        raise ModelFileError(f"{path}: this frozen model file has no metadata (dataset, input "
                             f"preprocessing, class names), which {required_for} needs; freeze "
                             f"its checkpoint with `edgecompress freeze CHECKPOINT -o FILE`, or "
                             f"pass metadata= to edgecompress.deploy.save")
    try:
        return ModelMetadata.from_dict(raw)
    except ModelFileError as exc:
        raise ModelFileError(f"{path}: {exc}") from None


def load(path: str | Path) -> nn.Module:
    """Read a model written by :func:`save`: a ``torch.fx.GraphModule`` of the saved model's
    class name, with its submodule names (so its ``state_dict`` keys), layers, tensors and
    memory formats, in eval mode. A file from another format version, with missing or extra
    tensors, unknown layer types or functions outside the allowlist is a ModelFileError
    naming the file."""
    path = Path(path)
    meta, tensors = _read(path)
    try:
        return _build(meta, tensors)
    except ModelFileError as exc:
        raise ModelFileError(f"{path}: {exc}") from None
