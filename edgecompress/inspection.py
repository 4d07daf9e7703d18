"""What a file holds, for ``edgecompress inspect``: :func:`inspect_file` -> a JSON-able report
(its kind from :func:`edgecompress.files.detect_kind`, then what that kind says about itself),
:func:`format_report` -> the text the command prints.

- training checkpoint: recipe name, model, method(s), dataset, task, epoch, final metrics;
- pruning-phase file: the phase, epoch;
- frozen model: class, layers by kind, file and tensor bytes, input shape, metadata;
- ONNX: IR version, opsets, producer, inputs and outputs (name, element type, shape), nodes;
- recipe: name, model, data, method(s), epochs (validated: an invalid one is its error);
- images, .npy, WAV clips: size / shape / rate; any other kind: its size.

Nothing in a file is unpickled beyond tensors and plain values.
"""

from __future__ import annotations

import collections
import wave
from pathlib import Path
from typing import Any, Callable

import numpy as np
from torch import nn

from .files import FileKind, detect_kind, safetensors_header

__all__ = ["inspect_file", "format_report", "layer_kinds"]


def layer_kinds(model: nn.Module) -> dict[str, int]:
    """Leaf layer class name -> how many the model has (containers not counted)."""
    counts = collections.Counter(type(m).__name__ for m in model.modules()
                                 if not list(m.children()))
    return dict(sorted(counts.items()))


def _methods(method: Any) -> list[str]:
    steps = [method] if isinstance(method, dict) else list(method or [])
    return [", ".join([str(s.get("name"))] + [f"{k}={v}" for k, v in s.items() if k != "name"])
            for s in steps] or ["none (float)"]


def _checkpoint(path: Path) -> dict[str, Any]:
    from .train.checkpoint import final_metrics, load_checkpoint

    state = load_checkpoint(path)
    extra = state.get("extra_state") or {}
    recipe = extra.get("recipe") or {}
    return {"recipe": recipe.get("name"), "model": recipe.get("model"),
            "methods": _methods(recipe.get("method")), "dataset": (recipe.get("data") or {}),
            "task": state.get("task", {}).get("name"), "input_shape": extra.get("input_shape"),
            "num_classes": extra.get("num_classes"), "epoch": state["epoch"],
            "metrics": final_metrics(state),
            **({"prune_phase": extra["prune_phase"],
                "pruned": extra.get("masks") is not None} if extra.get("prune_phase") else {})}


def _prune_phase(path: Path) -> dict[str, Any]:
    import torch

    from .train.checkpoint import final_metrics

    with open(path, "rb") as f:
        state = torch.load(f, map_location="cpu", weights_only=True)
    if "masks" in state:  # a phase's model.pt
        return {"content": "the model of a pruning phase (state_dict and, after the surgery, the "
                           "kept-channel masks)", "pruned": state["masks"] is not None}
    return {"phase": (state.get("extra_state") or {}).get("prune_phase"),
            "epoch": state.get("epoch"), "metrics": final_metrics(state)}


def _frozen(path: Path) -> dict[str, Any]:
    from . import deploy
    from .deploy.benchmark import tensor_bytes

    model = deploy.load(path)
    metadata = deploy.load_metadata(path)
    report: dict[str, Any] = {
        "class": type(model).__name__, "tensor_bytes_in_memory": tensor_bytes(model),
        "input_shape": list(getattr(model, "input_shape", ()) or []) or None,
        "layers": layer_kinds(model),
        "packed_layers": sum(isinstance(m, deploy.PackedLayer) for m in model.modules())}
    if metadata is None:
        report["metadata"] = None
    else:
        meta = metadata.to_dict()
        recipe = meta.pop("recipe") or {}
        meta["recipe"] = recipe.get("name")
        meta["methods"] = _methods(recipe.get("method")) if recipe else None
        classes = meta.get("classes")
        if classes is not None and len(classes) > 20:
            meta["classes"] = [*classes[:20], f"... ({len(classes)} in all)"]
        report["metadata"] = meta
    return report


def _onnx(path: Path) -> dict[str, Any]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)

    def io(values: Any) -> list[dict[str, Any]]:
        out = []
        for v in values:
            t = v.type.tensor_type
            dims = [d.dim_param or d.dim_value for d in t.shape.dim]
            out.append({"name": v.name, "type": onnx.TensorProto.DataType.Name(t.elem_type),
                        "shape": dims})
        return out

    return {"ir_version": model.ir_version,
            "opsets": {o.domain or "ai.onnx": o.version for o in model.opset_import},
            "producer": f"{model.producer_name} {model.producer_version}".strip(),
            "inputs": io(model.graph.input), "outputs": io(model.graph.output),
            "nodes": len(model.graph.node)}


def _recipe(path: Path) -> dict[str, Any]:
    from .recipe import Recipe

    r = Recipe.from_yaml(path)
    return {"name": r.name, "model": r.model, "data": r.data, "methods": _methods(r.method),
            "epochs": r.epochs, "prune": r.prune is not None}


def _safetensors(path: Path) -> dict[str, Any]:
    header = safetensors_header(path) or {}
    return {"tensors": len([k for k in header if k != "__metadata__"]),
            "metadata_keys": sorted((header.get("__metadata__") or {}).keys())}


def _image(path: Path) -> dict[str, Any]:
    from .data.inputs import open_image

    with open_image(path) as image:
        return {"format": image.format, "mode": image.mode, "width": image.width,
                "height": image.height}


def _npy(path: Path) -> dict[str, Any]:
    array = np.load(path, mmap_mode="r", allow_pickle=False)
    return {"shape": list(array.shape), "dtype": str(array.dtype)}


def _wav(path: Path) -> dict[str, Any]:
    with wave.open(str(path), "rb") as f:
        return {"channels": f.getnchannels(), "bits": 8 * f.getsampwidth(),
                "sample_rate": f.getframerate(),
                "seconds": f.getnframes() / f.getframerate() if f.getframerate() else None}


_DESCRIBE: dict[FileKind, Callable[[Path], dict[str, Any]]] = {
    FileKind.CHECKPOINT: _checkpoint, FileKind.PRUNE_PHASE: _prune_phase,
    FileKind.FROZEN: _frozen, FileKind.ONNX: _onnx, FileKind.RECIPE: _recipe,
    FileKind.SAFETENSORS: _safetensors, FileKind.IMAGE: _image, FileKind.NPY: _npy,
    FileKind.WAV: _wav,
}


def inspect_file(path: str | Path) -> dict[str, Any]:
    """``{"path", "kind", "what", "hint", "bytes", **details}`` of ``path`` (see the module
    docstring). A missing path raises :class:`~edgecompress.errors.EdgecompressError`; a file
    of a known kind that fails to read raises that kind's own error."""
    from .errors import EdgecompressError

    path = Path(path)
    kind = detect_kind(path)
    if kind is FileKind.MISSING:
        raise EdgecompressError(f"file not found: {path}")
    report: dict[str, Any] = {"path": str(path), "kind": kind.label, "what": kind.what}
    if kind.hint:
        report["hint"] = kind.hint
    if kind is not FileKind.DIRECTORY:
        report["bytes"] = path.stat().st_size
    describe = _DESCRIBE.get(kind)
    if describe is not None:
        report.update(describe(path))
    return report


def format_report(report: dict[str, Any]) -> str:
    """The report as indented ``key: value`` lines, nested mappings indented further."""
    lines = [f"{report['path']}: {report['what']}"]

    def add(key: str, value: Any, indent: int) -> None:
        pad = "  " * indent
        if isinstance(value, dict) and value and key not in ("model", "data", "dataset"):
            lines.append(f"{pad}{key}:")
            for k, v in value.items():
                add(str(k), v, indent + 1)
        elif isinstance(value, float):
            lines.append(f"{pad}{key}: {value:.4g}")
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            lines.append(f"{pad}{key}:")
            for v in value:
                lines.append(f"{pad}  - " + ", ".join(f"{k}={x}" for k, x in v.items()))
        elif isinstance(value, list):
            lines.append(f"{pad}{key}: {', '.join(map(str, value))}")
        else:
            lines.append(f"{pad}{key}: {value}")

    for key, value in report.items():
        if key not in ("path", "what"):
            add(key, value, 1)
    return "\n".join(lines)
