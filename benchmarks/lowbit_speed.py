"""Low-bit kernel speed: a frozen 3-bit shift linear layer (PackedShiftLinear, FC 4096 x 4096)
and a frozen 4-bit uniform one (PackedUniformLinear, float inputs) against the float nn.Linear
of the same shape, and a frozen 3-bit shift LSTM against the frozen float nn.LSTM; writes
benchmarks/results/lowbit_speed.json (``--only linear`` / ``--only lstm``: one part, to
lowbit_speed-linear.json / lowbit_speed-lstm.json).

    python benchmarks/lowbit_speed.py
    python benchmarks/lowbit_speed.py --rounds 3 --calls 20     # quicker, noisier
    python benchmarks/lowbit_speed.py --other amd-epyc-avx2     # another machine's file

At batch <= 16 the frozen layer runs the low-bit kernel (kernels.lowbit_gemm: 4 bits read per
weight, decoded in registers); the row ``decoded`` is the same layer on its decoded float path
(what it ran before the kernel, and still runs above batch 16); ``uniform4`` the uniform layer
on the kernel (4-bit codes; integer levels, which the AVX2 path decodes by byte shuffles like
the shift layers' powers of two, and AVX-512 by one permute). Batch
1 and 8, 1 and 2 threads.
Every round times each variant in turn (interleaved, so the load of other jobs falls on all
alike); the result is the median over rounds of float time / variant time measured in the same
round (the speed-up: > 1 is faster than float). Random codes and weights: speed does not depend
on the values. The machine line records the CPU model, its vector flags and the kernel path.

The LSTM rows: one layer, input 256, hidden 512 (``convert(..., "deepshift-ps", bits=3)`` then
``freeze``: a PackedGateLSTM whose two gate maps, 2048 x 256 and 2048 x 512, run the low-bit
kernel), one token per call with the state carried (autoregressive decoding), batch 1 and 8, 1
thread, against nn.LSTM of the same size (frozen, it stays nn.LSTM: torch's fused kernel). The
size is one where the gate matrices dominate a step: 1.5 M weights (6 MiB in float32, beyond
the L2 cache; 0.75 MiB as 4-bit panels) against 4 x 512 element-wise gate operations.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from common import interleaved, machine, results_name, save_results
from torch import nn

import edgecompress as ec
from edgecompress import kernels
from edgecompress.deploy import PackedShiftLinear, PackedUniformLinear, freeze

FEATURES, BITS, METHOD = 4096, 3, "deepshift-ps"
UNIFORM_BITS = 4
BATCHES, THREADS = (1, 8), (1, 2)
LSTM_INPUT, LSTM_HIDDEN = 256, 512
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


def lstms() -> tuple[nn.LSTM, nn.Module]:
    """(the float nn.LSTM, the frozen 3-bit shift LSTM converted from it)."""
    torch.manual_seed(0)
    dense = nn.LSTM(LSTM_INPUT, LSTM_HIDDEN).eval()
    shift = ec.convert(nn.Sequential(dense), METHOD, bits=BITS, keep_first_last=False)
    return freeze(nn.Sequential(dense))[0], freeze(shift)[0]


def lstm_case(dense: nn.LSTM, shift: nn.Module, batch: int, rounds: int,
              calls: int) -> dict[str, Any]:
    """One token per call (1, batch, input) with a state, 1 thread."""
    torch.set_num_threads(1)
    x = torch.randn(1, batch, LSTM_INPUT)
    state = (torch.randn(1, batch, LSTM_HIDDEN), torch.randn(1, batch, LSTM_HIDDEN))
    out = interleaved({"float": lambda: dense(x, state), "lowbit": lambda: shift(x, state)},
                      rounds, calls, baseline="float")
    return {"batch": batch, "threads": 1, "speedup": 1 / out["lowbit"]["ratio"],
            "seconds": {k: v["seconds"] for k, v in out.items()},
            "all_seconds": {k: v["all"] for k, v in out.items()}}


def lstm_table(rows: list[dict[str, Any]]) -> str:
    lines = [f"frozen {BITS}-bit shift LSTM {LSTM_INPUT} -> {LSTM_HIDDEN}, one token per call, "
             f"float nn.LSTM time / time", "batch  threads  speed-up  (ms: float / low-bit)"]
    lines += [f"{r['batch']:>5}  {r['threads']:>7}  {r['speedup']:>8.2f}  "
              f"({r['seconds']['float'] * 1e3:.3f} / {r['seconds']['lowbit'] * 1e3:.3f})"
              for r in rows]
    return "\n".join(lines)


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
    parser.add_argument("--only", choices=("linear", "lstm"), default=None,
                        help="Time one part only (its own results file).")
    parser.add_argument("--other", metavar="MACHINE", default=None,
                        help="Another machine's run: results in lowbit_speed-MACHINE.json "
                             "(e.g. amd-epyc-avx2), the main file left as it is.")
    args = parser.parse_args()
    if not kernels.available():
        raise SystemExit("the C kernels are not built: nothing to measure")
    name = results_name("lowbit_speed", part=args.only)
    if args.other:
        name += f"-{args.other}"
    results: dict[str, Any] = {
        "machine": machine(), "cpu_flags": cpu_flags(),
        "kernel_path": kernels.supported_paths()[-1], "rounds": args.rounds,
        "calls": args.calls, "method": METHOD, "bits": BITS, "uniform_bits": UNIFORM_BITS,
        "features": FEATURES, "rows": [], "lstm_size": [LSTM_INPUT, LSTM_HIDDEN],
        "lstm_rows": []}
    with torch.no_grad():
        if args.only != "lstm":
            dense, frozen, uniform = layers()
            for batch in BATCHES:
                for threads in THREADS:
                    results["rows"].append(case(dense, frozen, uniform, batch, threads,
                                                args.rounds, args.calls))
                    save_results(name, results)
        if args.only != "linear":
            float_lstm, shift_lstm = lstms()
            for batch in BATCHES:
                results["lstm_rows"].append(lstm_case(float_lstm, shift_lstm, batch,
                                                      args.rounds, args.calls))
                save_results(name, results)
    print(results["machine"], "|", " ".join(results["cpu_flags"]), "| path",
          results["kernel_path"])
    if results["rows"]:
        print(table(results["rows"]))
    if results["lstm_rows"]:
        print(lstm_table(results["lstm_rows"]))

if __name__ == "__main__":
    main()
