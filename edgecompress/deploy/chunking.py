"""Batch chunking: a frozen CNN runs a large batch a few images at a time.

A frozen network's layers are fast enough that, at batch 8, moving its float activations
between the caches and memory costs as much as computing them: a ResNet-18's stage-0 maps are
0.8 MB per image, so a block reading and writing them for 8 images streams 6.4 MB arrays from
layer to layer, out of every core's L2 cache. Run image by image (a few at a time), the whole
network keeps each chunk's maps in L2 from one layer to the next. Measured on a 2-core AMD EPYC
(Zen 5, 1 MB L2 per core), frozen W1A1 ResNet-18 at batch 8: stage 0 took 14.0 ms at once and
8.1 ms image by image; the whole model 1.1-1.26x faster at one thread in chunks of 2 images,
about even (0.97-1.10x) at two threads in chunks of 4 (docs/deploy.md).

:func:`freeze` installs it on a frozen feature-map model (a ``torch.fx.GraphModule`` with one
4-D image input and one tensor output), and so does :func:`load`: the generated ``forward`` first
asks :func:`run_chunked`, which splits the batch when a chunk of fewer images would fit the
cache budget and otherwise lets the graph run the batch at once. Every layer of a frozen
inference model treats each image on its own, so the results are those of running the chunks
one by one (the binary layers' integers exactly; torch's float layers may round differently
at another batch size, to float rounding).

The chunk size, per input shape and thread count, from the first such call, which runs image 0
once more, alone, to find the largest activation of one image (the output of a module the
graph calls) against ``BUDGET_BYTES_PER_THREAD`` x the threads, so a batch whose activations
fit is never split (batch 1 never; a CIFAR ResNet-20's 64 kB maps rarely). Set
``model.batch_chunk`` to ``None`` to run every batch at once, or to an int for a fixed chunk
size (a run-time setting: :func:`save` and ``copy.deepcopy`` do not keep it; the model they
give chunks by ``"auto"``). Skipped while torch.compile, torch.export or a tracer records the
model (they see the whole batch).
"""

from __future__ import annotations

import math
import threading

import torch
from torch import Tensor, fx, nn
from torch.fx.graph import CodeGen

from .. import kernels
from .profile import begin_pass

#: bytes a chunk's largest activation may take, per thread: on Zen 5 (1 MB L2 per core, 32 MB
#: L3), ResNet-18 (3.2 MB per image out of the stem's convolution, 0.8 MB through stage 0) ran
#: fastest in chunks of 2 images at one thread and 4 at two; 1 image per chunk pays the graph's
#: Python (about 0.6 ms per pass) eight times.
BUDGET_BYTES_PER_THREAD = 8 << 20

AUTO = "auto"


def chunk_for(largest: int, threads: int) -> int:
    """Images per chunk for a model whose largest activation is ``largest`` bytes per image."""
    return max(1, BUDGET_BYTES_PER_THREAD * threads // max(1, largest))


def equal_chunk(n: int, chunk: int) -> int:
    """Images per chunk when ``n`` images run in chunks of at most ``chunk``, made equal: the
    fewest chunks, the largest one as small as it can be (8 by 5: 4 + 4)."""
    return math.ceil(n / math.ceil(n / chunk))


_RUNNING = threading.local()  # inside run_chunked: the graph runs what it is given


def _forward(model: fx.GraphModule, x: Tensor) -> Tensor:
    """The graph on ``x`` at once."""
    _RUNNING.on = True
    begin_pass()
    try:
        return model.forward(x)
    finally:
        _RUNNING.on = False


def _largest_activation(model: fx.GraphModule, x: Tensor) -> int:
    """The bytes of the largest tensor a module the graph calls returns on ``x``."""
    largest = 0

    def record(module: nn.Module, args: object, out: object) -> None:
        nonlocal largest
        if isinstance(out, Tensor):
            largest = max(largest, out.numel() * out.element_size())

    targets = {str(n.target) for n in model.graph.nodes if n.op == "call_module"}
    handles = [model.get_submodule(t).register_forward_hook(record) for t in targets]
    try:
        _forward(model, x)
    finally:
        for h in handles:
            h.remove()
    return largest


def run_chunked(model: fx.GraphModule, x: object) -> Tensor | None:
    """``model(x)`` run in chunks of images, or None where the graph should run ``x`` at once
    (batch-chunking off, a batch that fits, not a 4-D tensor, inside a chunk, or the model
    being recorded)."""
    setting = getattr(model, "batch_chunk", AUTO)  # (deepcopy drops plain attributes)
    if (setting is None or getattr(_RUNNING, "on", False) or not isinstance(x, Tensor)
            or x.dim() != 4 or x.shape[0] < 2 or kernels.recording()):
        return None
    if setting == AUTO:
        key = (tuple(x.shape[1:]), x.dtype, torch.get_num_threads())
        sizes = model.__dict__.setdefault("_batch_chunks", {})
        if key not in sizes:  # image 0 measures (its result is not used: every call of a
            sizes[key] = chunk_for(_largest_activation(model, x[:1]),  # shape splits alike)
                                   torch.get_num_threads())
        chunk = sizes[key]
    elif isinstance(setting, int) and not isinstance(setting, bool) and setting >= 1:
        chunk = setting
    else:
        raise ValueError(f"batch_chunk must be 'auto', None or an int >= 1, got {setting!r}")
    n = x.shape[0]
    if chunk >= n:
        return None
    return torch.cat([_forward(model, part) for part in x.split(equal_chunk(n, chunk))])


class ChunkingCodeGen(CodeGen):
    """The graph's code with, first in ``forward``, ``run_chunked(self, x)`` (see the module
    docstring)."""

    def gen_fn_def(self, free_vars: list[str], maybe_return_annotation: str,
                   **kwargs: object) -> str:
        head = super().gen_fn_def(free_vars, maybe_return_annotation, **kwargs)
        return (f"{head}\n    _chunks = _edgecompress_run_chunked(self, {free_vars[1]})\n"
                f"    if _chunks is not None:\n        return _chunks")

    def additional_globals(self) -> list[tuple[str, object]]:
        return [*super().additional_globals(), ("_edgecompress_run_chunked", run_chunked)]


def chunkable(model: nn.Module) -> bool:
    """Whether :func:`install` takes ``model``: a GraphModule of one input and one output
    value (not a tuple)."""
    if not isinstance(model, fx.GraphModule) or type(model.graph._codegen) not in (
            CodeGen, ChunkingCodeGen):
        return False
    nodes = list(model.graph.nodes)
    inputs = [n for n in nodes if n.op == "placeholder"]
    output = next(n for n in reversed(nodes) if n.op == "output")
    return len(inputs) == 1 and isinstance(output.args[0], fx.Node)


def install(model: fx.GraphModule, batch_chunk: int | str | None = AUTO) -> None:
    """Make ``model`` (see :func:`chunkable`) run large batches in chunks (``batch_chunk``:
    ``"auto"``, a fixed number of images, or None for off)."""
    if not chunkable(model):
        raise ValueError(f"batch chunking takes a GraphModule of one input and one tensor "
                         f"output, not {type(model).__name__}")
    model.graph.set_codegen(ChunkingCodeGen())
    model.recompile()
    model.batch_chunk = batch_chunk
