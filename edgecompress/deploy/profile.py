"""Per-part time breakdown of a frozen model (``edgecompress bench model --profile``): where a
forward pass spends its time, so that the cost left outside the packed kernels is visible.

A profiled forward pass times every module it calls with forward pre / post hooks (the packed
layers as a whole, and the leaf modules outside them), and the packed layers time their own
sub-steps through :func:`timed` (one ``None`` check when profiling is off). The parts:

- ``stem``: every module called before the first low-bit packed layer (``weight_bits < 32``)
  of the pass: the float first convolution, its activation, the max-pool;
- ``<stage> GEMM``: the kernels of the packed layers of each stage (the epilogue, i.e. scale,
  bias, residual and clamp, runs in the GEMM's store loop and is counted with it); a packed
  layer that reports no sub-steps (float, shift and uniform layers, W1A32 paths) counts here
  as a whole. The stages are the children of the deepest module that holds every low-bit
  packed layer (``stages.0`` ... ``stages.3`` of the zoo ResNets, ``layer1`` ... of
  torchvision's); a packed layer outside it is a stage of its own top-level name;
- ``pack activations``: float activations packed into sign words by the packed layers;
- ``im2col rows``: im2col rows gathered for a binary convolution's explicit GEMM (none on
  the implicit-GEMM path, which reads the packed pixels in place);
- ``float layers``: the other modules after the stem (BatchNorm, pooling, activations, a float
  classifier);
- ``other (python / glue)``: the measured total minus the parts: functions the graph calls
  outside modules (additions, ``adaptive_avg_pool2d``, ``flatten``), the packed layers' own
  python (reshapes, casts), and the hooks' overhead.
"""

from __future__ import annotations

import statistics
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator, TypeVar

import torch
from torch import nn

from .packed import PackedLayer

__all__ = ["PACK", "IM2COL", "GEMM", "STEM", "FLOAT_LAYERS", "OTHER", "Profile", "Recorder",
           "timed", "begin_pass", "recording", "profile_model", "format_profiles"]

#: sub-steps a packed layer reports through :func:`timed`
PACK, IM2COL, GEMM = "pack activations", "im2col rows", "GEMM"
STEM, FLOAT_LAYERS, OTHER = "stem", "float layers", "other (python / glue)"

T = TypeVar("T")


class Recorder:
    """Nanoseconds per part, summed over the forward passes run while it is active."""

    def __init__(self, stages: dict[str, str]) -> None:
        #: part name -> nanoseconds
        self.parts: dict[str, int] = {}
        self._stages = stages  # packed layer's module name -> its stage
        self._running: list[tuple[str, int, int]] = []  # (part, start ns, reported ns before)
        self._reported = 0  # ns that sub-steps reported so far
        self._in_stem = True

    def _add(self, part: str, ns: int) -> None:
        self.parts[part] = self.parts.get(part, 0) + ns

    def step(self, step: str, ns: int) -> None:
        """A packed layer's sub-step took ``ns``: a GEMM counts for the running layer's stage."""
        if step == GEMM:
            self._add(self._running[-1][0] if self._running else GEMM, ns)
        else:
            self._add(step, ns)
        self._reported += ns

    def _begin_pass(self, module: nn.Module | None, args: Any) -> None:
        self._in_stem = True

    def _before(self, name: str) -> Callable[..., None]:
        def hook(m: nn.Module, args: Any) -> None:
            low_bit = isinstance(m, PackedLayer) and getattr(m, "weight_bits", 32) < 32
            if low_bit:
                self._in_stem = False
            if self._in_stem:
                part = STEM
            elif isinstance(m, PackedLayer):
                part = f"{self._stages[name]} {GEMM}"
            else:
                part = FLOAT_LAYERS
            self._running.append((part, time.perf_counter_ns(), self._reported))
        return hook

    def _after(self, module: nn.Module, args: Any, output: Any) -> None:
        end = time.perf_counter_ns()
        part, start, reported = self._running.pop()
        if self._reported == reported:  # no sub-steps: all of it is its part (else: its
            self._add(part, end - start)  # sub-steps were counted, the rest is other)


_recorder: Recorder | None = None


def profiling() -> bool:
    """Whether a profile is being recorded (the packed layers then run their steps one call
    each, so that :func:`timed` can time them)."""
    return _recorder is not None


def begin_pass() -> None:
    """A new pass of the graph begins without a call of the model itself (a chunk of the batch,
    :mod:`~edgecompress.deploy.chunking`): its first modules are a stem again."""
    if _recorder is not None:
        _recorder._begin_pass(None, None)


def timed(step: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)``; while profiling, its time counts for ``step`` (:data:`PACK`,
    :data:`IM2COL` or :data:`GEMM`) of the packed layer running. Off: one ``None`` check."""
    recorder = _recorder
    if recorder is None:
        return fn(*args, **kwargs)
    start = time.perf_counter_ns()
    out = fn(*args, **kwargs)
    recorder.step(step, time.perf_counter_ns() - start)
    return out


def _timed_modules(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """The packed layers (as a whole) and the leaf modules outside them, except Identity."""
    def walk(prefix: str, module: nn.Module) -> Iterator[tuple[str, nn.Module]]:
        children = list(module.named_children())
        if isinstance(module, PackedLayer) or not children:
            if not isinstance(module, nn.Identity):
                yield prefix, module
            return
        for name, child in children:
            yield from walk(f"{prefix}.{name}" if prefix else name, child)
    yield from walk("", model)


def _stages(model: nn.Module) -> dict[str, str]:
    """Packed layer name -> its stage: a child of the deepest module holding every low-bit
    packed layer; a packed layer outside that module: its top-level name."""
    modules = list(_timed_modules(model))
    low_bit = {tuple(n.split(".")) if n else () for n, m in modules
               if isinstance(m, PackedLayer) and getattr(m, "weight_bits", 32) < 32}
    prefix: tuple[str, ...] = ()
    while True:
        below = {n[:len(prefix) + 1] for n in low_bit}
        if len(below) != 1 or below <= low_bit:
            break
        (prefix,) = below
    out = {}
    for name, m in modules:
        if isinstance(m, PackedLayer):
            parts = tuple(name.split(".")) if name else ()
            inside = parts[:len(prefix)] == prefix and len(parts) > len(prefix)
            out[name] = ".".join(parts[:len(prefix) + 1] if inside else parts[:1]) or "model"
    return out


@contextmanager
def recording(model: nn.Module) -> Iterator[Recorder]:
    """Within the block, every forward pass of ``model`` adds its parts to the recorder
    yielded (all but :data:`OTHER`, which needs the total). The hooks are removed and
    profiling switched off when the block ends, also by an exception; blocks do not nest."""
    global _recorder
    if _recorder is not None:
        raise RuntimeError("a profile is already being recorded")
    recorder = Recorder(_stages(model))
    handles = [model.register_forward_pre_hook(recorder._begin_pass)]
    try:
        for name, module in _timed_modules(model):
            handles.append(module.register_forward_pre_hook(recorder._before(name)))
            handles.append(module.register_forward_hook(recorder._after))
        _recorder = recorder
        yield recorder
    finally:
        _recorder = None
        for handle in handles:
            handle.remove()


@dataclass
class Profile:
    """One setting's breakdown: the milliseconds of each part (the stem, the stages' GEMMs in
    forward order, packing, im2col, float layers, :data:`OTHER`; every part but the stages
    always present) in the profiled pass of median total time among ``rounds``: one whole
    pass, so that the parts add up to ``total_ms``, and a pass that another process
    interrupted is left out. ``unprofiled_ms``: the median time of the unprofiled passes run
    between the profiled ones (the hooks' overhead is the gap)."""

    batch: int
    threads: int
    rounds: int
    total_ms: float
    unprofiled_ms: float
    parts: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def profile_model(model: nn.Module, shape: tuple[int, ...], batches: tuple[int, ...] = (1, 8),
                  threads: tuple[int, ...] = (1, 2), rounds: int = 5) -> list[Profile]:
    """The per-part breakdown of ``model`` (eval, no grad) on random float inputs of
    ``(batch, *shape)`` for every batch and thread count, from ``rounds`` profiled passes,
    each after an unprofiled one (one warm-up pass per setting first)."""
    for what, values in (("batches", batches), ("threads", threads), ("rounds", (rounds,))):
        if not values or min(values) < 1:
            raise ValueError(f"profile {what} must be >= 1, got {values!r}")
    model.eval()
    previous = torch.get_num_threads()
    out = []
    try:
        for batch in batches:
            x = torch.randn(batch, *shape)
            for t in threads:
                torch.set_num_threads(t)
                out.append(_profile_setting(model, x, t, rounds))
    finally:
        torch.set_num_threads(previous)
    return out


def _profile_setting(model: nn.Module, x: torch.Tensor, threads: int, rounds: int) -> Profile:
    passes: list[tuple[int, dict[str, int]]] = []  # (total ns, ns per part) of each round
    plain = []
    with torch.no_grad():
        model(x)  # warm-up
        for _ in range(rounds):
            start = time.perf_counter_ns()
            model(x)
            plain.append(time.perf_counter_ns() - start)
            with recording(model) as recorder:
                start = time.perf_counter_ns()
                model(x)
                passes.append((time.perf_counter_ns() - start, recorder.parts))
    total, parts = sorted(passes, key=lambda p: p[0])[(rounds - 1) // 2]
    fixed = (STEM, PACK, IM2COL, FLOAT_LAYERS)
    order = [STEM, *(p for p in parts if p not in fixed), PACK, IM2COL, FLOAT_LAYERS]
    ms = {part: parts.get(part, 0) / 1e6 for part in order}
    ms[OTHER] = total / 1e6 - sum(ms.values())
    return Profile(x.shape[0], threads, rounds, total / 1e6, statistics.median(plain) / 1e6, ms)


def format_profiles(profiles: list[Profile]) -> str:
    """A table per setting: each part's milliseconds and share of the total."""
    lines = []
    for p in profiles:
        lines.append(f"batch {p.batch}, {p.threads} thread(s): {p.total_ms:.3f} ms profiled "
                     f"({p.unprofiled_ms:.3f} ms unprofiled), median of {p.rounds} pass(es)")
        width = max(len(part) for part in p.parts)
        for part, ms in p.parts.items():
            lines.append(f"  {part:<{width}}  {ms:9.3f} ms  {100 * ms / p.total_ms:5.1f} %")
    return "\n".join(lines)
