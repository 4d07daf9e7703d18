"""ONNX export of float and fake-quantized (training-form) models, for interoperability.

A binarized model exports as ordinary ONNX operators: the latent float weights are constants and
the quantizers are computed in the graph (``Where(x >= 0, 1, -1)`` for sign, and with
``hard=False`` the proximal maps and their current schedule values), so any ONNX runtime runs it
and gets what PyTorch computes. This is the interoperable form, not the fast one: ONNX has no
1-bit tensors or popcount GEMM, so the packed models of :func:`~edgecompress.deploy.freeze` are
for edgecompress's own kernels.

    from edgecompress.deploy import export_onnx
    export_onnx(binary_model, "model.onnx", (1, 28, 28))      # deployed signs; batch is dynamic
"""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from ..errors import ConversionError
from ..layers import harden
from .packed import PackedLayer


def export_onnx(model: nn.Module, path: str | Path, input_shape: Sequence[int] | None = None, *,
                hard: bool = True, dynamic_batch: bool = True,
                opset: int | None = None) -> Path:
    """Write ``model`` (float, or converted by :func:`edgecompress.convert`) to ``path`` as ONNX.

    input_shape: one example's shape, e.g. (3, 32, 32) (default: the zoo model's
    ``input_shape``). hard: export the deployed forward (every quantizer pair exactly sign,
    as after :func:`~edgecompress.layers.harden`); ``hard=False`` exports the current training
    forward F = P o B with its schedule values. dynamic_batch: the first dimension is symbolic.
    The model itself is not modified (a copy is exported, in eval mode). Needs the ``onnx`` and
    ``onnxscript`` packages (``pip install "edgecompress[onnx]"``).
    """
    missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
    if missing:
        raise ConversionError(f"ONNX export needs {', '.join(missing)}: "
                              'pip install "edgecompress[onnx]"')
    shape = tuple(input_shape if input_shape is not None else getattr(model, "input_shape", ()))
    if not shape or not all(isinstance(d, int) and d > 0 for d in shape):
        raise ConversionError(f"input_shape must be the positive sizes of one example, e.g. "
                              f"(3, 32, 32); got {input_shape!r}")
    for name, m in model.named_modules():
        if isinstance(m, PackedLayer) and not m.onnx_exportable:
            raise ConversionError(f"layer {name!r} ({type(m).__name__}) of the frozen model runs "
                                  f"edgecompress's packed kernels, which ONNX has no operators "
                                  f"for; export the model before freeze()")
    exported = copy.deepcopy(model).eval()
    if hard:
        harden(exported)
    example = (torch.randn(2, *shape),)  # batch 2: a batch of 1 would be specialised away
    dynamic = ({0: torch.export.Dim("batch")},) if dynamic_batch else None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.onnx.export(exported, example, str(path), dynamo=True, dynamic_shapes=dynamic,
                          opset_version=opset, verbose=False)
    except Exception as exc:  # the exporter's own errors are long; keep the first line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConversionError(f"ONNX export of {type(model).__name__} failed: {first}") from exc
    return path
