"""Timing of the packed kernels and frozen models against torch float32, measured in one run.

Every comparison interleaves the candidate and its float baseline over several rounds and reports
the ratio of medians, so that a busy shared machine slows both alike.
"""

from __future__ import annotations

import copy
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch
from torch import nn

from .. import kernels
from .fileformat import _channels_last

# ResNet-18 3x3 convolutions as GEMMs at batch 1: M = H x W, K = 9 C_in, N = C_out
RESNET18_SHAPES = {"stage 1": (56 * 56, 9 * 64, 64), "stage 2": (28 * 28, 9 * 128, 128),
                   "stage 3": (14 * 14, 9 * 256, 256), "stage 4": (7 * 7, 9 * 512, 512)}


@dataclass
class Timing:
    name: str
    threads: int
    candidate_ms: float
    baseline_ms: float

    @property
    def speedup(self) -> float:
        return self.baseline_ms / self.candidate_ms

    def to_dict(self) -> dict:
        return {**asdict(self), "speedup": self.speedup}


def _median_ms(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return 1000 * statistics.median(times)


def compare(name: str, candidate: Callable[[], object], baseline: Callable[[], object],
            threads: int, rounds: int = 5, repeats: int = 5) -> Timing:
    """Median time of ``candidate`` and ``baseline`` with ``threads`` threads, interleaved
    rounds in alternating order (the second of a pair runs measurably slower on a shared
    host, about 10 % for millisecond calls, so a fixed order biases the ratio)."""
    for what, value in (("threads", threads), ("rounds", rounds), ("repeats", repeats)):
        if value < 1:
            raise ValueError(f"benchmark {what} must be >= 1, got {value!r}")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        candidate(), baseline()  # warm-up
        c, b = [], []
        for i in range(rounds):
            if i % 2:
                b.append(_median_ms(baseline, repeats))
                c.append(_median_ms(candidate, repeats))
            else:
                c.append(_median_ms(candidate, repeats))
                b.append(_median_ms(baseline, repeats))
        return Timing(name, threads, statistics.median(c), statistics.median(b))
    finally:
        torch.set_num_threads(previous)


def bench_gemm(batch: int = 1, threads: tuple[int, ...] = (1, 2), path: str | None = None,
               rounds: int = 5) -> list[Timing]:
    """Binary GEMM (packed operands, int32 out) vs float32 ``x @ w.T`` at ResNet-18 shapes."""
    out = []
    for label, (m, k, n) in RESNET18_SHAPES.items():
        m *= batch
        g = torch.Generator().manual_seed(0)
        x, w = torch.randn(m, k, generator=g), torch.randn(n, k, generator=g)
        a, b = kernels.pack_signs(x), kernels.pack_signs(w)
        panels = kernels.pack_panels(b)
        wt = w.t().contiguous()
        for t in threads:
            out.append(compare(
                f"{label} M={m} K={k} N={n}",
                lambda: kernels.binary_gemm(a, b, k, panels=panels, path=path, threads=t),
                lambda: torch.matmul(x, wt), t, rounds))
    return out


# W1A32 (binary weights, float inputs) GEMM shapes: (K, N) of fully connected layers
W1A32_SHAPES = {"FC 4096-4096": (4096, 4096), "ResNet-18 classifier 512-1000": (512, 1000),
                "ResNet-18 stage-4 conv as GEMM": (4608, 512), "MLP 784-512": (784, 512)}


def bench_w1a32(batches: tuple[int, ...] = (1, 8, 64), threads: tuple[int, ...] = (1, 2),
                path: str | None = None, rounds: int = 5) -> list[Timing]:
    """Sign-select W1A32 GEMM (float rows x packed +-1 weights) vs float32 ``x @ w.T``."""
    out = []
    for label, (k, n) in W1A32_SHAPES.items():
        g = torch.Generator().manual_seed(0)
        w = torch.randn(n, k, generator=g)
        panels = kernels.sign_panels(kernels.pack_signs(w), k)
        wt = torch.where(w >= 0, 1.0, -1.0).t().contiguous()
        for m in batches:
            x = torch.randn(m, k, generator=g)
            for t in threads:
                out.append(compare(
                    f"{label} M={m}",
                    lambda: kernels.w1a32_gemm(x, panels, n, path=path, threads=t),
                    lambda: torch.matmul(x, wt), t, rounds))
    return out


def low_bit_stem(model: nn.Module, bits: int = 8) -> dict[str, Any]:
    """The ``convert`` step that puts ``model``'s first convolution at ``bits`` bits: weights
    and signed inputs through the uniform quantizers, the input step calibrated (run
    :func:`~edgecompress.quantizers.calibrate` after converting). Frozen, it runs the integer
    convolution (:func:`~edgecompress.kernels.int8_conv`) where the CPU has AVX-512 VNNI.
    ValueError if the model has no convolution."""
    first = next((name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)
    if first is None:
        raise ValueError(f"{type(model).__name__} has no convolution")
    return {"name": "uniform", "bits": bits, "activation_bits": bits, "activation_signed": True,
            "activation_range": "calibrated", "include": [first], "keep_first_last": False}


def bench_model(float_model: nn.Module, frozen: nn.Module, shape: tuple[int, ...],
                batches: tuple[int, ...] = (1, 8), threads: tuple[int, ...] = (1, 2),
                rounds: int = 3, channels_last_baseline: bool = True) -> list[Timing]:
    """Whole frozen model vs the float model in torch (eval, no grad), and (named
    "..., float channels-last") vs the float model in channels-last memory format, torch's
    faster layout for pooling on CPU, which the frozen model uses."""
    out = []
    float_model.eval()
    frozen.eval()
    last = copy.deepcopy(float_model).to(memory_format=torch.channels_last)
    for batch in batches:
        x = torch.randn(batch, *shape)
        for t in threads:
            with torch.no_grad():
                out.append(compare(f"batch {batch}", lambda: frozen(x), lambda: float_model(x),
                                   t, rounds, repeats=3))
                if channels_last_baseline:
                    out.append(compare(f"batch {batch}, float channels-last", lambda: frozen(x),
                                       lambda: last(x), t, rounds, repeats=3))
    return out


def fastest_layout(frozen: nn.Module, example: torch.Tensor, threads: int | None = None,
                   rounds: int = 5) -> tuple[nn.Module, Timing]:
    """The frozen model in the faster of its two memory layouts for inputs like ``example``
    on this CPU: as it is (channels-last, as :func:`~edgecompress.deploy.freeze` returns
    feature-map models) or a copy in the other layout (torch's default, contiguous), both
    timed here, interleaved, with ``threads`` threads (default: torch's current number).
    Which one wins depends on the CPU and the batch (docs/shift.md: a shift ResNet-20 at
    batch 1 on an AVX2-only AMD EPYC ran 10 % faster contiguous, at batch 32 12-19 % faster
    channels-last). Every packed layer follows its input's layout, so both give the same
    outputs up to the float rounding of torch's own convolutions, which may differ between
    layouts on some CPUs. The two differ by a few to 15 %: on a busy machine the choice can
    be noise (more ``rounds`` help; run it where the model will run). Returns the model
    (``frozen`` itself or the copy) and the :class:`Timing` (candidate: the copy, baseline:
    ``frozen``)."""
    if not isinstance(example, torch.Tensor) or example.dim() != 4:
        got = tuple(example.shape) if isinstance(example, torch.Tensor) else type(example)
        raise ValueError(f"fastest_layout needs an example batch (N, C, H, W), got {got}")
    maps = [t for t in (*frozen.parameters(), *frozen.buffers()) if t.dim() == 4]
    if not maps:
        raise ValueError(f"{type(frozen).__name__} holds no 4-D tensor: its memory layout "
                         f"changes nothing")
    last = any(_channels_last(t) for t in maps)
    other_format = torch.contiguous_format if last else torch.channels_last
    other = copy.deepcopy(frozen).eval().to(memory_format=other_format)
    frozen.eval()
    x = example.contiguous()
    names = ("contiguous", "channels-last") if last else ("channels-last", "contiguous")
    with torch.no_grad():
        timing = compare(f"{names[0]} vs {names[1]}", lambda: other(x), lambda: frozen(x),
                         threads or torch.get_num_threads(), rounds, repeats=3)
    return (other if timing.speedup > 1 else frozen), timing


def tensor_bytes(model: nn.Module) -> int:
    """Bytes of every tensor the model holds (parameters and buffers, derived ones included)."""
    seen, total = set(), 0
    for t in [*model.parameters(), *model.buffers()]:
        if t is not None and t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total
