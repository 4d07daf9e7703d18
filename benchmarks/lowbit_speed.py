"""Low-bit kernel speed: a frozen 3-bit shift linear layer (PackedShiftLinear, FC 4096 x 4096)
and a frozen 4-bit uniform one (PackedUniformLinear, float inputs) against the float nn.Linear
of the same shape; writes benchmarks/results/lowbit_speed.json.

    python benchmarks/lowbit_speed.py
    python benchmarks/lowbit_speed.py --rounds 3 --calls 20     # quicker, noisier

At batch <= 16 the frozen layer runs the low-bit kernel (kernels.lowbit_gemm: 4 bits read per
weight, decoded in registers); the row ``decoded`` is the same layer on its decoded float path
(what it ran before the kernel, and still runs above batch 16); ``uniform4`` the uniform layer
on the kernel (4-bit codes: on AVX2 two permutes and a blend per decode, one on AVX-512). Batch
1 and 8, 1 and 2 threads.
Every round times each variant in turn (interleaved, so the load of other jobs falls on all
alike); the result is the median over rounds of float time / variant time measured in the same
round (the speed-up: > 1 is faster than float). Random codes and weights: speed does not depend
on the values. The machine line records the CPU model, its vector flags and the kernel path.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from common import interleaved, machine, save_results
from torch import nn

from edgecompress import kernels
from edgecompress.deploy import PackedShiftLinear, PackedUniformLinear

FEATURES, BITS, METHOD = 4096, 3, "deepshift-ps"
UNIFORM_BITS = 4
BATCHES, THREADS = (1, 8), (1, 2)
FLAGS = ("avx2", "fma", "avx512f", "avx512_vpopcntdq", "avx512vbmi")




def cpu_flags() -> list[str]:
    line = next((line for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("flags")), "flags:")
    present = set(line.split(":", 1)[1].split())
    return [flag for flag in FLAGS if flag in present]


def layers() -> tuple[nn.Linear, PackedShiftLinear, PackedUniformLinear]:
    torch.manual_seed(0)
    dense = nn.Linear(FEATURES, FEATURES).requires_grad_(False)
    frozen = PackedShiftLinear(FEATURES, FEATURES, method=METHOD, bits=BITS)
    frozen.codes.copy_(torch.randint(0, len(frozen.table), frozen.codes.shape))
    frozen.bias.copy_(dense.bias)
    frozen.prepare()
    uniform = PackedUniformLinear(FEATURES, FEATURES, bits=UNIFORM_BITS)
    half = 2 ** (UNIFORM_BITS - 1)
    uniform.codes.copy_(torch.randint(-half, half, uniform.codes.shape))
    uniform.scale.copy_(torch.rand(FEATURES) * 0.01)
    uniform.bias.copy_(dense.bias)
    uniform.prepare()
    return dense, frozen, uniform


def case(dense: nn.Linear, frozen: PackedShiftLinear, uniform: PackedUniformLinear, batch: int,
         threads: int, rounds: int, calls: int) -> dict[str, Any]:
    torch.set_num_threads(threads)
    x = torch.randn(batch, FEATURES)
    out = interleaved({
        "float": lambda: dense(x),
        "lowbit": lambda: frozen(x),
        "decoded": lambda: nn.functional.linear(x, frozen.weight, frozen.bias),
        "uniform4": lambda: uniform(x),
    }, rounds, calls, baseline="float")
    return {"batch": batch, "threads": threads,
            "speedup": {k: 1 / v["ratio"] for k, v in out.items() if k != "float"},
            "seconds": {k: v["seconds"] for k, v in out.items()},
            "all_seconds": {k: v["all"] for k, v in out.items()}}


def table(rows: list[dict[str, Any]]) -> str:
    lines = [f"frozen {BITS}-bit shift and {UNIFORM_BITS}-bit uniform linear {FEATURES} x "
             f"{FEATURES}, float time / time",
             "batch  threads  low-bit kernel  decoded float  4-bit uniform  "
             "(ms: float / low-bit)"]
    for r in rows:
        s = r["seconds"]
        lines.append(f"{r['batch']:>5}  {r['threads']:>7}  {r['speedup']['lowbit']:>14.2f}  "
                     f"{r['speedup']['decoded']:>13.2f}  {r['speedup']['uniform4']:>13.2f}  "
                     f"({s['float'] * 1e3:.2f} / "
                     f"{s['lowbit'] * 1e3:.2f})")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=9, help="Interleaved rounds (median).")
    parser.add_argument("--calls", type=int, default=50, help="Calls per variant and round.")
    args = parser.parse_args()
    if not kernels.available():
        raise SystemExit("the C kernels are not built: nothing to measure")
    dense, frozen, uniform = layers()
    results: dict[str, Any] = {
        "machine": machine(), "cpu_flags": cpu_flags(),
        "kernel_path": kernels.supported_paths()[-1], "rounds": args.rounds,
        "calls": args.calls, "method": METHOD, "bits": BITS, "uniform_bits": UNIFORM_BITS,
        "features": FEATURES, "rows": []}
    with torch.no_grad():
        for batch in BATCHES:
            for threads in THREADS:
                results["rows"].append(case(dense, frozen, uniform, batch, threads,
                                            args.rounds, args.calls))
                save_results("lowbit_speed", results)
    print(results["machine"], "|", " ".join(results["cpu_flags"]), "| path",
          results["kernel_path"])
    print(table(results["rows"]))


if __name__ == "__main__":
    main()
