"""What kind of file a path holds, recognised by magic bytes and structure, never by unpickling
objects: :func:`detect_kind` -> :class:`FileKind`.

Every command that reads a file asks it, so a file of another kind than expected is named as such
("run/checkpoint.pt: this is a training checkpoint, not a frozen model file; run `edgecompress
freeze` on it") instead of being called corrupt (:func:`mismatch`). The kinds:

- ``checkpoint``: a training checkpoint (``torch.save`` of tensors and plain values with the
  format tag :data:`CHECKPOINT_FORMAT`, read back with ``weights_only``);
- ``prune-phase``: a phase file of ``edgecompress prune`` written before phase checkpoints
  carried their recipe (a trainer checkpoint without it, or a ``model.pt`` of state and masks);
  today's phase files are training checkpoints;
- ``frozen``: a frozen model file (safetensors whose header names :data:`FROZEN_FORMAT`);
  ``safetensors``: any other safetensors file;
- ``torch``: another ``torch.save`` file (e.g. a pickled whole model, which edgecompress never
  unpickles);
- ``onnx``; ``recipe`` (YAML mapping with ``model`` and ``data``); model inputs ``image``
  (PNG / JPEG), ``npy``, ``npz``, ``wav``; ``text``; ``unknown`` (damaged or foreign);
  ``missing`` and ``directory``.
"""

from __future__ import annotations

import codecs
import importlib.util
import json
import pickle
import struct
import zipfile
from enum import Enum
from pathlib import Path
from typing import Any, Iterable

#: the format tag of training checkpoints (:mod:`edgecompress.train.checkpoint`)
CHECKPOINT_FORMAT = "edgecompress-checkpoint"
#: the format tag of frozen model files (:mod:`edgecompress.deploy.fileformat`)
FROZEN_FORMAT = "edgecompress-frozen"

_HEAD = 16
_TEXT_LIMIT = 1 << 20  # a recipe is read whole only up to this size


class FileKind(Enum):
    """A kind of file: ``label`` (short name, e.g. for ``--json``), ``what`` (how a message names
    it) and ``hint`` (what to do with it, or "")."""

    CHECKPOINT = ("checkpoint", "a training checkpoint",
                  "run `edgecompress freeze` on it to get a frozen model file")
    PRUNE_PHASE = ("prune-phase", "a pruning-phase file of an older edgecompress (it does not "
                   "hold its recipe)", "run `edgecompress prune` again to get phase checkpoints "
                   "that `eval` and `freeze` read")
    FROZEN = ("frozen", "a frozen model file",
              "use it with `edgecompress predict`, `eval`, `summary`, `bench model` or "
              "`edgecompress.deploy.load`")
    SAFETENSORS = ("safetensors", "a safetensors file that is not an edgecompress frozen model",
                   "")
    TORCH = ("torch", "a torch.save file that is not an edgecompress checkpoint",
             "edgecompress never unpickles Python objects; save a model's state_dict, or a frozen "
             "model with edgecompress.deploy.save")
    ONNX = ("onnx", "an ONNX model", "run it with an ONNX runtime")
    RECIPE = ("recipe", "a recipe", "train it with `edgecompress train`")
    IMAGE = ("image", "an image", "")
    NPY = ("npy", "a numpy array (.npy)", "")
    NPZ = ("npz", "a numpy archive (.npz)", "")
    WAV = ("wav", "a WAV clip", "")
    TEXT = ("text", "a text file", "")
    UNKNOWN = ("unknown", "not a file kind edgecompress knows (damaged or foreign)", "")
    MISSING = ("missing", "a path that does not exist", "")
    DIRECTORY = ("directory", "a directory", "")

    def __init__(self, label: str, what: str, hint: str) -> None:
        self.label, self.what, self.hint = label, what, hint


def detect_kind(path: str | Path) -> FileKind:
    """The kind of file at ``path`` (see the module docstring). Never raises for a file's
    content; reads the header bytes, and for ``torch.save`` files loads them with
    ``weights_only=True`` (tensors and plain values only)."""
    path = Path(path)
    if not path.exists():
        return FileKind.MISSING
    if path.is_dir():
        return FileKind.DIRECTORY
    try:
        with open(path, "rb") as f:
            head = f.read(_HEAD)
    except OSError:
        return FileKind.UNKNOWN
    if head.startswith(b"PK\x03\x04"):
        return _zip_kind(path)
    if head.startswith(b"\x93NUMPY"):
        return FileKind.NPY
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return FileKind.WAV
    if head.startswith((b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")):
        return FileKind.IMAGE
    kind = _safetensors_kind(path, head)
    if kind is not None:
        return kind
    if head[:1] == b"\x08" and _is_onnx(path):  # protobuf field 1 (ir_version) comes first
        return FileKind.ONNX
    return _text_kind(path)


def mismatch(path: str | Path, expected: FileKind | Iterable[FileKind],
             kind: FileKind | None = None) -> str | None:
    """The one-line message for ``path`` when it is a recognised file of another kind than
    ``expected`` ("PATH: this is a training checkpoint, not a frozen model file; run ..."), or
    None when it is of an expected kind or unrecognisable (then the caller's own reason, e.g.
    "truncated or corrupt", says more). ``kind``: the already detected kind of ``path``."""
    expected = (expected,) if isinstance(expected, FileKind) else tuple(expected)
    kind = detect_kind(path) if kind is None else kind
    if kind in expected or kind is FileKind.UNKNOWN:
        return None
    if kind is FileKind.MISSING:
        return f"file not found: {path}"
    wanted = " or ".join(k.what for k in expected)
    return f"{path}: this is {kind.what}, not {wanted}" + (f"; {kind.hint}" if kind.hint else "")


def _zip_kind(path: Path) -> FileKind:
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return FileKind.UNKNOWN
    if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
        return _torch_kind(path)
    if names and all(n.endswith(".npy") for n in names):
        return FileKind.NPZ
    return FileKind.UNKNOWN


def _torch_kind(path: Path) -> FileKind:
    """A torch.save zip file, told apart by its content loaded with ``weights_only``."""
    import torch

    try:
        with open(path, "rb") as f:  # a file object: torch.load picks a reader by the suffix
            state = torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # objects only unsafe unpickling could rebuild
        return FileKind.TORCH
    except Exception:  # a damaged archive
        return FileKind.UNKNOWN
    if isinstance(state, dict) and state.get("format") == CHECKPOINT_FORMAT:
        extra = state.get("extra_state")
        if isinstance(extra, dict) and "prune_phase" in extra and "recipe" not in extra:
            return FileKind.PRUNE_PHASE
        return FileKind.CHECKPOINT
    if isinstance(state, dict) and set(state) == {"model", "masks"}:
        return FileKind.PRUNE_PHASE
    return FileKind.TORCH


def safetensors_header(path: str | Path) -> dict[str, Any] | None:
    """The JSON header of a safetensors file (tensor entries and ``__metadata__``), or None if
    ``path`` does not start like one. Reads the header only, not the tensors."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            size = Path(path).stat().st_size
            if len(head) < 8:
                return None
            (length,) = struct.unpack("<Q", head)
            if not 2 <= length <= min(size - 8, 100 << 20):
                return None
            raw = f.read(length)
    except OSError:
        return None
    if not raw.startswith(b"{"):
        return None
    try:
        header = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return header if isinstance(header, dict) else None


def _safetensors_kind(path: Path, head: bytes) -> FileKind | None:
    if len(head) < 9 or head[8:9] != b"{":
        return None
    header = safetensors_header(path)
    if header is None:
        return FileKind.UNKNOWN  # a safetensors start, but no readable header: damaged
    meta = header.get("__metadata__")
    raw = meta.get("edgecompress") if isinstance(meta, dict) else None
    try:
        ours = json.loads(raw) if isinstance(raw, str) else None
    except json.JSONDecodeError:
        ours = None
    if isinstance(ours, dict) and ours.get("format") == FROZEN_FORMAT:
        return FileKind.FROZEN
    return FileKind.SAFETENSORS


def _is_onnx(path: Path) -> bool:
    """Parses as an ONNX ModelProto with a graph (by suffix when onnx is not installed)."""
    if importlib.util.find_spec("onnx") is None:
        return path.suffix.lower() == ".onnx"
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # protobuf's decode errors
        return False
    return model.ir_version > 0 and model.HasField("graph")


def _text_kind(path: Path) -> FileKind:
    try:
        with open(path, "rb") as f:
            raw = f.read(_TEXT_LIMIT + 1)
        # a long file is cut, maybe inside a character: decode the start only
        text = codecs.getincrementaldecoder("utf-8")().decode(
            raw[:_TEXT_LIMIT], final=len(raw) <= _TEXT_LIMIT)
    except (OSError, UnicodeDecodeError):
        return FileKind.UNKNOWN
    if "\x00" in text:
        return FileKind.UNKNOWN
    if len(raw) <= _TEXT_LIMIT:
        import yaml

        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError:
            loaded = None
        if isinstance(loaded, dict) and "model" in loaded and "data" in loaded:
            return FileKind.RECIPE
    return FileKind.TEXT
