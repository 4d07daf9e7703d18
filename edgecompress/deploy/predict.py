"""Top-k classes of input files by a frozen classifier (``edgecompress predict``).

:func:`predict_files` reads each file with :func:`edgecompress.data.inputs.read_input` (the
preprocessing of the model's :class:`~edgecompress.deploy.ModelMetadata`, as in training), runs
the model and names the ``k`` most probable classes (softmax of the outputs) of every input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from ..data.inputs import read_input
from ..errors import DataError, ModelFileError
from .metadata import ModelMetadata

__all__ = ["predict_files", "top_k"]


def top_k(logits: Tensor, classes: Sequence[str] | None, k: int) -> list[list[dict[str, Any]]]:
    """Per row of ``logits`` (N, classes): the ``k`` (at most the number of classes) most
    probable classes, ``{"class", "index", "probability"}``, most probable first."""
    if logits.dim() != 2:
        raise ModelFileError(f"the model gives outputs of shape {tuple(logits.shape)}; "
                             f"predict needs one score per class (N, classes)")
    probabilities = torch.softmax(logits.float(), dim=1)
    values, indices = probabilities.topk(min(k, logits.shape[1]), dim=1)
    return [[{"class": classes[i] if classes is not None and i < len(classes) else str(i),
              "index": i, "probability": p} for p, i in zip(row_v.tolist(), row_i.tolist())]
            for row_v, row_i in zip(values, indices)]


def predict_files(model: nn.Module, metadata: ModelMetadata, paths: Sequence[str | Path],
                  k: int = 5) -> list[dict[str, Any]]:
    """``{"input": path, "item": i, "top": [...]}`` for every input in ``paths`` (a file may
    hold several, e.g. a batch in a .npy array: ``item`` numbers them); see :func:`top_k`."""
    if metadata.task != "classification":
        raise ModelFileError(f"predict ranks the classes of a classifier; this model's task is "
                             f"{metadata.task!r}")
    if k < 1:
        raise DataError(f"top-k must be at least 1, got {k}")
    dtype = getattr(torch, metadata.input_dtype)
    results = []
    model.eval()
    for path in paths:
        x = read_input(path, metadata.input_shape, metadata.preprocessing, dtype)
        with torch.no_grad():
            ranked = top_k(model(x), metadata.classes, k)
        results.extend({"input": str(path), "item": i, "top": top}
                       for i, top in enumerate(ranked))
    return results
