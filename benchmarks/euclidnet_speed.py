"""Speed of the EuclidNet and AdderNet layers against nn.Conv2d at ResNet-20's conv shapes
(3x3, padding 1: 16 channels at 32x32, 32 at 16x16, 64 at 8x8), issue 13's cost claim
(targets: EuclidConv2d's training step <= 1.2x the convolution's, inference <= 1.1x).

    python benchmarks/euclidnet_speed.py           # batches 4, 32 and 128, 21 rounds, 1 thread
    python benchmarks/euclidnet_speed.py --quick   # batches 4 and 32, 3 rounds

For each shape and batch, one training step (forward + backward to the input and the weights)
and one inference pass (forward under no_grad) of: nn.Conv2d; EuclidConv2d (GEMM form);
the naive Euclid form (unfold and difference; only where its difference tensor stays under
--naive-limit elements); AdderConv2d (fast path: the C kernels at these float32 shapes,
adaptive scaling on) and its naive form (same limit, which by default admits batch 4 only);
inference also times the frozen layers (``deploy.freeze``'s forms: euclid-frozen, the GEMM form
with ||w||^2 computed once; adder-frozen, the direct C kernel's L1 form). Every round times
each layer in turn (interleaved, so load changes hit all alike, the order reversed every other
round: benchmarks/common.py's ``interleaved``), each for at least ``--calls`` calls and, but for
the naive forms, enough calls that nn.Conv2d's share of a round lasts ``--min-ms``
milliseconds (a 0.7 ms call timed three times is at the mercy of one scheduler tick); the
table shows the median time per call and the median over rounds of its ratio to nn.Conv2d's
time in the same round. The naive forms are timed in a run of their own against nn.Conv2d: their
hundred-megabyte difference tensors would leave cold caches to whatever runs after them.
Wall-clock on a shared machine: the ratios are the result, the milliseconds are context.
Writes benchmarks/results/euclidnet_speed.json (euclidnet_speed_quick.json with --quick).
"""

from __future__ import annotations

import argparse
import math
import os
from typing import Callable

import torch
from common import interleaved, machine, save_results, seconds_per_call
from torch import Tensor, nn

from edgecompress.deploy import PackedAdderConv2d, PackedEuclidConv2d
from edgecompress.layers import AdderConv2d, EuclidConv2d

SHAPES = [(16, 32), (32, 16), (64, 8)]  # (channels, height = width) of ResNet-20's stages


class _Naive(nn.Module):
    """A layer's naive reference form as the module to time."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: Tensor) -> Tensor:
        return self.layer.reference_forward(x)


def layers(channels: int, naive: bool) -> dict[str, nn.Module]:
    """The layers compared at one shape, with the same weights."""
    torch.manual_seed(0)
    conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
    out: dict[str, nn.Module] = {"conv": conv, "euclid": EuclidConv2d.from_float(conv)}
    if naive:
        out["euclid-naive"] = _Naive(EuclidConv2d.from_float(conv))
    out["adder"] = AdderConv2d.from_float(conv)
    if naive:
        out["adder-naive"] = _Naive(AdderConv2d.from_float(conv))
    return out


def frozen(modules: dict[str, nn.Module]) -> dict[str, nn.Module]:
    """The inference forms freeze gives the distance layers (inference rows only)."""
    return {"euclid-frozen": PackedEuclidConv2d.from_trained(modules["euclid"].eval()),
            "adder-frozen": PackedAdderConv2d.from_trained(modules["adder"].eval())}


def train_step(layer: nn.Module, x: Tensor, grad: Tensor) -> Callable[[], None]:
    def step() -> None:
        x.grad = None
        layer.zero_grad(set_to_none=True)
        layer(x).backward(grad)
    return step


def inference(layer: nn.Module, x: Tensor) -> Callable[[], None]:
    def forward() -> None:
        with torch.no_grad():
            layer(x)
    return forward


def calls_for(conv: Callable[[], None], least: int, min_ms: float) -> int:
    """Calls per round: at least ``least``, and enough that ``conv``'s calls last ``min_ms``."""
    seconds = seconds_per_call(conv, 3)
    return max(least, math.ceil(min_ms / 1000 / seconds))


def main() -> None:
    parser = argparse.ArgumentParser(prog="euclidnet_speed.py",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="batches 4 and 32, 3 rounds")
    parser.add_argument("--batches", default="4,32,128", help="comma-separated batch sizes")
    parser.add_argument("--rounds", type=int, default=21,
                        help="interleaved rounds (at 7 the medians moved by about 0.04 from run "
                             "to run, as much as the cells' distance to the targets)")
    parser.add_argument("--calls", type=int, default=3, help="least calls per layer and round")
    parser.add_argument("--min-ms", type=float, default=30.0,
                        help="least milliseconds of nn.Conv2d calls per round (the other "
                             "layers, but for the naive forms, make as many calls)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch (and kernel) threads (default 1: one core, as on an edge CPU)")
    parser.add_argument("--naive-limit", type=int, default=2 ** 25,
                        help="largest difference tensor (elements) the naive forms may build")
    args = parser.parse_args()
    batches = [4, 32] if args.quick else [int(b) for b in args.batches.split(",")]
    rounds = 3 if args.quick else args.rounds
    torch.set_num_threads(args.threads)

    rows = []
    print(f"machine: {machine()}")
    header = (f"{'batch':>5} {'ch':>3} {'hw':>3} {'mode':<9} {'layer':<13} {'ms':>9} "
              f"{'x conv':>8}")
    print(header + "\n" + "-" * len(header))
    for batch in batches:
        for channels, hw in SHAPES:
            differences = batch * channels * channels * 9 * hw * hw
            modules = layers(channels, naive=differences <= args.naive_limit)
            x = torch.randn(batch, channels, hw, hw, requires_grad=True)
            grad = torch.randn(batch, channels, hw, hw)
            for mode, make in (("train", lambda m: train_step(m, x, grad)),
                               ("inference", lambda m: inference(m, x))):
                timed = modules if mode == "train" else {**modules, **frozen(modules)}
                fast = {k: m for k, m in timed.items() if not k.endswith("-naive")}
                calls = calls_for(make(modules["conv"]), args.calls, args.min_ms)
                timings = interleaved({name: make(m) for name, m in fast.items()}, rounds,
                                      calls, "conv")
                if len(fast) < len(timed):  # the naive forms against a convolution of their own
                    naive = {k: m for k, m in timed.items() if k == "conv" or k not in fast}
                    timings.update({k: t for k, t in interleaved(
                        {name: make(m) for name, m in naive.items()}, rounds, args.calls,
                        "conv").items() if k != "conv"})
                for name, t in timings.items():
                    seconds, ratio = t["seconds"], t["ratio"]
                    rows.append(dict(batch=batch, channels=channels, hw=hw, mode=mode,
                                     layer=name, ms=1000 * seconds, ratio_vs_conv=ratio))
                    print(f"{batch:>5} {channels:>3} {hw:>3} {mode:<9} {name:<13} "
                          f"{1000 * seconds:>9.2f} {ratio:>7.2f}x")
    save_results("euclidnet_speed_quick" if args.quick else "euclidnet_speed",
                 {"machine": machine(), "threads": args.threads, "rounds": rounds,
                  "calls": args.calls, "min_ms": args.min_ms,
                  "load_average": os.getloadavg(), "naive_limit": args.naive_limit,
                  "rows": rows})


if __name__ == "__main__":
    main()
