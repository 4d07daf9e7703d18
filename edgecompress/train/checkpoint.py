"""Checkpoints: atomic writes, safe loading (``weights_only``), clear rejection of bad files.

A checkpoint is a dict of tensors and plain Python values, written with ``torch.save`` and read
back with ``torch.load(weights_only=True)``, so loading one never runs code from the file.
"""

from __future__ import annotations

import math
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from ..errors import CheckpointError
from ..files import CHECKPOINT_FORMAT as FORMAT
from ..files import FileKind, mismatch
VERSION = 1


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file next to ``path``, fsync it, then rename it over
    ``path``: readers see the old file or the new one, never a partial one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Atomically write ``state`` (plus format tag and version) to ``path``."""
    payload = {"format": FORMAT, "version": VERSION, **state}
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and validate a checkpoint written by :func:`save_checkpoint`; a file of another
    kind (a frozen model, a recipe, a text file...) is named as such."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(mismatch(path, FileKind.CHECKPOINT) or
                              f"checkpoint not found: {path}")
    try:
        with open(path, "rb") as f:  # a file object: torch.load picks a reader by the suffix
            state = torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # another kind of file, or pickled objects
        raise CheckpointError(mismatch(path, (FileKind.CHECKPOINT, FileKind.TORCH)) or (
            f"{path}: refused to load: the file holds objects that only unsafe unpickling could "
            f"rebuild ({str(exc).splitlines()[0]})")) from None
    except Exception as exc:  # another kind of file, or any parse failure of a damaged one
        # (random bytes reach the legacy unpickler, which can fail with IndexError, KeyError...)
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(mismatch(path, FileKind.CHECKPOINT) or f"{path}: not a readable "
                              f"checkpoint (truncated or corrupt?): {reason}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(mismatch(path, FileKind.CHECKPOINT) or
                              f"{path}: not an edgecompress checkpoint (format tag "
                              f"{state.get('format') if isinstance(state, dict) else None!r}, "
                              f"expected {FORMAT!r})")
    version = state.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {version!r} is newer than this "
                              f"edgecompress supports ({VERSION}); upgrade edgecompress")
    for key in ("model", "epoch"):
        if key not in state:
            raise CheckpointError(f"{path}: checkpoint has no {key!r} entry")
    return state


def final_metrics(state: Mapping[str, Any]) -> dict[str, float]:
    """The last epoch's finite ``train_*`` / ``test_*`` numbers of a checkpoint's history."""
    history = state.get("history") or [{}]
    return {k: v for k, v in history[-1].items()
            if k.startswith(("train_", "test_")) and isinstance(v, (int, float))
            and not isinstance(v, bool) and math.isfinite(v)}


def load_model_state(model: nn.Module, state: Mapping[str, torch.Tensor],
                     path: str | Path) -> None:
    """``model.load_state_dict(state)``, but a mismatch names the file and every bad key."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: model {tuple(own[k].shape)} vs file {tuple(state[k].shape)}"
              for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys: {', '.join(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {', '.join(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches: {'; '.join(shapes)}")
        raise CheckpointError(f"{path}: checkpoint does not match the model "
                              f"({type(model).__name__}): " + " | ".join(parts))
    model.load_state_dict(state)
