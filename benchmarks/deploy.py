"""Deployment benchmark: binary GEMM and whole frozen W1A1 ResNet-18 vs torch float32, batch
chunking at batch 8 (chunked vs the whole batch at once), file sizes and tensor memory, and
where the frozen model's time goes; writes docs/deploy.md and its plots in
docs/img/deploy_*.png.

    python benchmarks/deploy.py              # measure, then write the doc
    python benchmarks/deploy.py --doc-only   # rewrite the doc from benchmarks/results/deploy.json
    python benchmarks/deploy.py --profile    # only the per-part breakdown, then rewrite the doc
    python benchmarks/deploy.py --other amd-epyc-avx2   # another machine: its own results file
    python benchmarks/deploy.py --profile --other amd-epyc-avx2   # and its breakdown
    python benchmarks/deploy.py --stem8      # only the model with an 8-bit stem (int8_stem.py)

The breakdown (``--profile``) goes to benchmarks/results/deploy_profile.json (with ``--other
MACHINE``, deploy_profile-MACHINE.json, shown in that machine's section), one batch and thread
setting at a time; a rerun measures only the settings missing from it (delete the file to
measure again).

Ratios are measured in one run (candidate and baseline interleaved), on 1 and 2 threads.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from common import load_results, machine as common_machine, machine_label, save_results

import edgecompress as ec
from edgecompress import kernels
from edgecompress.deploy import chunking
from edgecompress.deploy.benchmark import (bench_gemm, bench_model, bench_w1a32, compare,
                                          low_bit_stem, tensor_bytes)
from edgecompress.deploy.profile import FLOAT_LAYERS, IM2COL, OTHER, PACK, STEM, profile_model
from edgecompress.quantizers import calibrate

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "deploy.md"
IMG = ROOT / "docs" / "img" / "deploy_gemm.png"
IMG_MODEL = ROOT / "docs" / "img" / "deploy_model.png"
IMG_PROFILE = ROOT / "docs" / "img" / "deploy_profile.png"
RESULTS = ROOT / "benchmarks" / "results" / "deploy.json"
PROFILE = "deploy_profile"  # benchmarks/results/deploy_profile.json


def machine() -> str:
    return f"{common_machine()}, kernel paths {kernels.supported_paths()}"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)


def _bars(path: Path, labels: list[str], series: dict[str, list[float]], ylabel: str,
          target: float) -> None:
    """Grouped bars: one group per label, one bar per series; a dashed line at the target."""
    fig, ax = _pyplot().subplots(figsize=(7, 3.8))
    width = 0.8 / len(series)
    for i, (name, values) in enumerate(series.items()):
        ax.bar([j + i * width for j in range(len(labels))], values, width, label=name)
    ax.axhline(target, color="gray", linestyle="--", linewidth=1)
    ax.set_xticks([j + (len(series) - 1) * width / 2 for j in range(len(labels))], labels)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1.25 * max(max(v) for v in series.values()))  # room for the legend
    ax.legend(fontsize=8, ncol=2, loc="upper left")
    ax.grid(alpha=0.3, axis="y")
    _save(fig, path)


def plot(results: dict) -> None:
    """docs/img/deploy_gemm.png (GEMM per stage) and deploy_model.png (whole model)."""
    rows = results["gemm"]
    labels = sorted({r["name"].split(" M=")[0] for r in rows})
    series = {f"batch {b}, {t} thread(s)": [
        next(r["speedup"] for r in rows if r["name"].startswith(label) and r["batch"] == b
             and r["threads"] == t) for label in labels]
        for b, t in sorted({(r["batch"], r["threads"]) for r in rows})}
    _bars(IMG, labels, series, "speed-up vs float32 matmul", 10)
    model = results["model"]
    cells = sorted({(r["name"].split(",")[0], r["threads"]) for r in model},
                   key=lambda c: (int(c[0].split()[-1]), c[1]))
    labels = [f"{name}, {t} thread(s)" for name, t in cells]
    series = {layout: [next(r["speedup"] for r in model if r["threads"] == t
                            and r["name"] == name + suffix) for name, t in cells]
              for layout, suffix in (("vs float NCHW", ""),
                                     ("vs float channels-last", ", float channels-last"))}
    _bars(IMG_MODEL, labels, series, "frozen W1A1 ResNet-18 speed-up", 5)


# Run in a fresh interpreter: resident memory (RSS) before and after loading a model and after
# one batch-1 inference; freed heap is returned to the OS first (malloc_trim) so RSS counts what
# the model keeps.
RSS_PROBE = """
import ctypes, gc, json, os, sys, torch, edgecompress as ec
torch.set_num_threads(1)
page = os.sysconf("SC_PAGE_SIZE")
def rss():
    gc.collect(); ctypes.CDLL("libc.so.6").malloc_trim(0)
    return int(open("/proc/self/statm").read().split()[1]) * page
kind, path = sys.argv[1], sys.argv[2]
# warm-up: run a tiny float and a tiny frozen model first, so that lazily imported modules and
# one-time initialisations (custom-op dispatch, oneDNN) are not counted as the model's memory
tiny = ec.models.create("resnet20", width=0.25, activation="hardtanh").eval()
with torch.no_grad():
    tiny(torch.randn(1, 3, 32, 32))
    ec.deploy.freeze(ec.convert(tiny, "bnn", mode="w1a1"))(torch.randn(1, 3, 32, 32))
del tiny
before = rss()
if kind == "float":
    model = ec.models.create("resnet18", num_classes=1000, activation="hardtanh")
    model.load_state_dict(torch.load(path, weights_only=True))
else:
    model = ec.deploy.load(path)
model.eval()
loaded = rss()
with torch.no_grad():
    model(torch.randn(1, 3, 224, 224))
print(json.dumps({"load": loaded - before, "after_inference": rss() - before}))
"""


def resident(kind: str, path: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", RSS_PROBE, kind, str(path)], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(out: Path = RESULTS) -> None:
    """Measure everything and write ``out``; then the doc (and, for the main results file,
    its plots) from the main results file, which lists ``deploy-<machine>.json`` files as
    other machines."""
    gemm = []
    for batch in (1, 8):
        for t in bench_gemm(batch=batch, threads=(1, 2), rounds=7):
            gemm.append({"batch": batch, **t.to_dict()})
    w1a32 = [t.to_dict() for t in bench_w1a32(threads=(1, 2), rounds=5)]
    float_model, frozen = resnet18()
    model = [t.to_dict() for t in bench_model(float_model, frozen, (3, 224, 224), (1, 8), (1, 2),
                                              rounds=9)]
    chunks = bench_chunking(frozen)
    stem8 = bench_8bit_stem(float_model, frozen)
    with tempfile.TemporaryDirectory() as tmp:
        float_path, frozen_path = Path(tmp) / "float.pt", Path(tmp) / "frozen.safetensors"
        torch.save(float_model.state_dict(), float_path)
        ec.deploy.save(frozen, frozen_path)
        sizes = {"float_file": float_path.stat().st_size, "frozen_file": frozen_path.stat().st_size,
                 "float_tensors": tensor_bytes(float_model), "frozen_tensors": tensor_bytes(frozen),
                 "float_rss": resident("float", float_path),
                 "frozen_rss": resident("frozen", frozen_path)}
    s = ec.summary(frozen, (3, 224, 224))
    sizes["analytic"] = s.bytes + sum(b.numel() * b.element_size() for n, b in
                                      frozen.named_buffers() if "running" in n or "batches" in n)
    results = {"machine": machine(), "gemm": gemm, "w1a32": w1a32, "model": model,
               "chunking": chunks, "stem8": stem8, "sizes": sizes}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    if out == RESULTS:
        plot(results)
    if not RESULTS.is_file():  # another machine's run before any main run: no doc to write
        print(f"wrote {out.relative_to(ROOT)} ({RESULTS.relative_to(ROOT)} is missing: doc "
              "not rewritten)")
        return
    write_doc(json.loads(RESULTS.read_text()))
    print(f"wrote {out.relative_to(ROOT)} and {DOC.relative_to(ROOT)}")


def bench_chunking(frozen: torch.nn.Module, batch: int = 8, rounds: int = 15) -> list[dict]:
    """The frozen model at ``batch`` in chunks (``batch_chunk = "auto"``, the default) against
    the whole batch at once (``None``), interleaved, at 1 and 2 threads."""
    x = torch.randn(batch, 3, 224, 224)

    def run(setting: object) -> object:
        def call() -> object:
            frozen.batch_chunk = setting
            return frozen(x)
        return call

    out = []
    with torch.no_grad():
        for threads in (1, 2):
            t = compare(f"batch {batch}", run("auto"), run(None), threads, rounds)
            torch.set_num_threads(threads)
            chunk = frozen._batch_chunks[((3, 224, 224), torch.float32, threads)]
            out.append({**t.to_dict(), "chunk": chunking.equal_chunk(batch, chunk)})
    frozen.batch_chunk = "auto"
    return out


def resnet18() -> tuple[torch.nn.Module, torch.nn.Module]:
    """The float ResNet-18 (1000 classes, hardtanh, seed 0) and its frozen W1A1 form, as
    ``edgecompress bench model resnet18`` builds them."""
    torch.manual_seed(0)
    float_model = ec.models.create("resnet18", num_classes=1000, activation="hardtanh").eval()
    return float_model, ec.deploy.freeze(ec.convert(float_model, "bnn", mode="w1a1"))


def resnet18_8bit_stem(float_model: torch.nn.Module) -> torch.nn.Module:
    """The frozen W1A1 ResNet-18 of :func:`resnet18` with its stem convolution at 8 bits
    (``low_bit_stem``: 8-bit weights and signed inputs, the input step calibrated on 8 random
    images), as a user builds it; its integer kernel as ``integer_kernel="auto"``
    chooses (where the CPU has AVX-512 VNNI)."""
    torch.manual_seed(1)
    model = ec.convert(float_model, [{"name": "bnn", "mode": "w1a1"},
                                     low_bit_stem(float_model, 8)])
    calibrate(model, [torch.randn(8, 3, 224, 224)])
    return ec.deploy.freeze(model.eval())


def bench_8bit_stem(float_model: torch.nn.Module, frozen: torch.nn.Module,
                    rounds: int = 9) -> dict:
    """The frozen model with an 8-bit stem against the float model (both layouts) and against
    the frozen model with its float stem, interleaved, at batch 1 and 8, 1 and 2 threads."""
    eight = resnet18_8bit_stem(float_model)
    versus_float = [t.to_dict() for t in bench_model(float_model, eight, (3, 224, 224), (1, 8),
                                                     (1, 2), rounds=rounds)]
    versus_frozen = []
    for batch in (1, 8):
        x = torch.randn(batch, 3, 224, 224)
        with torch.no_grad():
            for threads in (1, 2):
                versus_frozen.append(compare(f"batch {batch}", lambda: eight(x),
                                             lambda: frozen(x), threads, rounds,
                                             repeats=3).to_dict())
    return {"vnni": kernels.int8_conv_vnni(), "model": versus_float, "stem": versus_frozen}


def measure_profile(rounds: int, name: str = PROFILE) -> dict:
    """The frozen model's per-part breakdown at batch 1 and 8, 1 and 2 threads, into
    benchmarks/results/<name>.json; each setting is saved when done, and settings already in
    the results file are skipped."""
    results = load_results(name)
    results.setdefault("machine", machine())
    results.setdefault("cores", len(os.sched_getaffinity(0)))
    settings = results.setdefault("settings", {})
    frozen = resnet18()[1]
    for batch in (1, 8):
        for threads in (1, 2):
            key = f"batch {batch}, {threads} thread(s)"
            if key in settings:
                continue
            load = os.getloadavg()[0]
            (p,) = profile_model(frozen, (3, 224, 224), (batch,), (threads,), rounds)
            settings[key] = {**p.to_dict(), "load_average": [load, os.getloadavg()[0]]}
            save_results(name, results)
            print(f"{key}: {p.total_ms:.2f} ms")
    return results


def plot_profile(settings: dict) -> None:
    """docs/img/deploy_profile.png: per setting, a bar stacked from each part's share of the
    time, the total in milliseconds above it."""
    plt = _pyplot()
    labels = [key.replace(", ", "\n") for key in settings]
    parts = list(next(iter(settings.values()))["parts"])
    stages = [p for p in parts if p.endswith(" GEMM")]
    fixed = {STEM: "tab:red", PACK: "tab:orange", IM2COL: "gold", FLOAT_LAYERS: "tab:purple",
             OTHER: "lightgray"}
    blues = plt.get_cmap("Blues")
    fig, ax = plt.subplots(figsize=(8, 4.2))
    bottom = [0.0] * len(labels)
    for part in parts:  # the stages' GEMMs in shades of blue, from light (first) to dark
        color = fixed.get(part) or blues(0.35 + 0.6 * stages.index(part) / max(1, len(stages) - 1))
        shares = [100 * s["parts"][part] / s["total_ms"] for s in settings.values()]
        ax.bar(labels, shares, 0.6, bottom=bottom, label=part, color=color)
        bottom = [b + v for b, v in zip(bottom, shares)]
    for j, s in enumerate(settings.values()):
        ax.text(j, 101, f"{s['total_ms']:.1f} ms", ha="center", va="bottom", fontsize=8)
    ax.set_ylim(0, 108)
    ax.set_ylabel("share of a forward pass (%)")
    ax.set_title("frozen W1A1 ResNet-18 (224x224): time per part", fontsize=10)
    handles, names = ax.get_legend_handles_labels()  # listed top to bottom, as stacked
    ax.legend(handles[::-1], names[::-1], fontsize=8, loc="center left",
              bbox_to_anchor=(1.01, 0.5))
    _save(fig, IMG_PROFILE)


def profile_section() -> list[str]:
    """The doc's breakdown section, from benchmarks/results/deploy_profile.json (none if the
    breakdown was not measured)."""
    r = load_results(PROFILE)
    if not r.get("settings"):
        return []
    settings = r["settings"]
    loads = [x for s in settings.values() for x in s["load_average"]]
    rounds = sorted({s["rounds"] for s in settings.values()})
    lines = ["## Where the time goes: frozen W1A1 ResNet-18 per part", "",
             "`edgecompress bench model resnet18 --profile` (`edgecompress.deploy.profile`) "
             "times every module a forward pass calls, and the binary layers time their own "
             "kernel calls: **stem** is everything before the first binary layer (the float "
             "7x7 convolution and its max-pool); **stages.N GEMM** the binary GEMMs of stage N "
             "(scale, bias, residual and clamp run in the GEMM's store loop and are counted "
             "with it); **pack activations** the packing of float activations into sign words "
             "(each block's input and the downsampling shortcuts' input; a block's first "
             "convolution hands packed signs to its second); **im2col rows** the rows gathered "
             "for an explicit GEMM (none where the implicit GEMM reads the packed pixels in "
             "place, the default; only with `implicit_gemm = False`); **float layers** the "
             "other modules (the float classifier); **other** the rest of the measured time: the functions of the graph "
             "outside modules (average pool, flatten), the layers' own python, and the "
             "profiling hooks (the unprofiled time is in the last row). To time its steps, a "
             "profiled binary convolution calls them one by one; unprofiled, it makes them one "
             "planned C call (`kernels.BinaryConvPlan`), so part of **other** and of the "
             "profiled total is not in the unprofiled time.", "",
             f"Machine: {r['machine']}. Per setting, the profiled pass of median total time "
             f"among {', '.join(map(str, rounds))}, on a machine loaded by other jobs (load "
             f"average "
             f"{min(loads):.1f}-{max(loads):.1f} on its cores during the run): the shares are "
             "indicative, not a benchmark. Measure with `python benchmarks/deploy.py "
             "--profile`." + (" With more jobs than cores, a 2-thread kernel waits for its "
                              "second thread's core: the 2-thread columns show that wait more "
                              "than the model." if max(loads) > r["cores"] else ""), "",
             *profile_table(settings), "", "![Time per part](img/deploy_profile.png)", ""]
    return lines


def profile_table(settings: dict) -> list[str]:
    """The per-part table of a breakdown: a row per part (ms and share), a column per setting,
    then the profiled and unprofiled totals."""
    lines = ["| part | " + " | ".join(settings) + " |", "|---|" + "---:|" * len(settings)]
    for part in next(iter(settings.values()))["parts"]:
        lines.append(f"| {part} | " + " | ".join(
            f"{s['parts'][part]:.2f} ms ({100 * s['parts'][part] / s['total_ms']:.0f} %)"
            for s in settings.values()) + " |")
    return lines + ["| total (profiled) | " + " | ".join(f"{s['total_ms']:.2f} ms"
                                                        for s in settings.values()) + " |",
                    "| total (unprofiled) | " + " | ".join(f"{s['unprofiled_ms']:.2f} ms"
                                                          for s in settings.values()) + " |"]


def write_doc(r: dict) -> None:
    lines = [
        "# Deployment: packed binary models on real XOR-popcount kernels",
        "",
        "`edgecompress.deploy.freeze(model)` turns a trained binarized model into an inference "
        "model: binary weights packed 1 bit each (64 per word), run by the C kernels of "
        "`edgecompress.kernels` (AVX-512 VPOPCNTDQ, AVX2 or scalar, chosen at run time; OpenMP "
        "threads); `deploy.save` / `deploy.load` write and read it as safetensors plus JSON "
        "metadata. Every kernel is tested bit-exact against a plain PyTorch reference.",
        "",
        f"Machine: {r['machine']}. Regenerate with `python benchmarks/deploy.py` (also "
        "`edgecompress bench kernels` and `edgecompress bench model`). Each ratio compares "
        "medians of the candidate and its float32 baseline measured interleaved in the same run "
        "(rounds alternating their order; in each, the median of 3-5 consecutive calls of one "
        "model: warm caches, as a model serving repeated requests. On the shared Zen 5 host "
        "on 2026-12-07, "
        "each frozen call made right after a float one, with caches holding the float model, "
        "ran 4.0-4.4x at batch 8 on one thread against channels-last float).",
        "",
        "## Binary GEMM vs float32 matmul at ResNet-18 layer shapes",
        "",
        "M = batch x H x W, K = 9 C_in, N = C_out of the 3x3 convolutions of each stage. The "
        "binary GEMM takes packed operands and returns int32; the baseline is `torch.matmul` on "
        "float32 (oneDNN/MKL). Target: >= 10x.",
        "",
        "| shape | batch | threads | binary (ms) | float32 (ms) | speed-up |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for g in r["gemm"]:
        lines.append(f"| {g['name']} | {g['batch']} | {g['threads']} | {g['candidate_ms']:.3f} | "
                     f"{g['baseline_ms']:.3f} | {g['speedup']:.1f}x |")
    lines += ["", "![GEMM speed-ups](img/deploy_gemm.png)", "",
              "## W1A32: binary weights, float inputs", "",
              "`kernels.w1a32_gemm` computes x S^T for +-1 weights S as total(x) - 2 x (the sum "
              "of the inputs whose weight is -1): one masked add per 16 multiply-adds, reading "
              "1 bit per weight instead of 32. It wins where the float GEMM is bound by reading "
              "its weights (small batches) and loses where the float GEMM is compute-bound (large "
              "M), so frozen W1A32 linear layers use it up to "
              "`PackedBinaryLinear.W1A32_KERNEL_MAX_ROWS` = 16 rows and torch's float GEMM on "
              "the +-1 weights above that; W1A32 convolutions (M = H x W rows) use the float "
              "convolution.", "",
              "| shape | threads | sign-select (ms) | float32 (ms) | speed-up |",
              "|---|---:|---:|---:|---:|"]
    for g in r["w1a32"]:
        lines.append(f"| {g['name']} | {g['threads']} | {g['candidate_ms']:.3f} | "
                     f"{g['baseline_ms']:.3f} | {g['speedup']:.2f}x |")
    lines += ["", "## Whole model: frozen W1A1 ResNet-18 (224x224) vs the float model in torch", "",
              "First conv and classifier float (the usual policy). `freeze` folds every "
              "BatchNorm (into the binary layers' per-channel scale and offset, and into the "
              "float stem conv), applies scale and offset in the GEMM's store loop, lets the "
              "first convolution of each residual block hand its output to the second as packed "
              "signs straight from the GEMM (no float tensor, no hardtanh, no re-packing), computes "
              "each block's end, hardtanh(conv2(.) + shortcut), in the second convolution's "
              "store loop, keeps activations in channels-last layout and runs a batch whose "
              "activations exceed a cache budget in chunks of images (below); the binary 3x3 "
              "convolutions read their windows in place and correct for the zero padding "
              "arithmetically (no gathered border windows). What still runs in "
              "torch: the float stem's 7x7 convolution, the average pool and the float "
              "classifier; the stem's max-pool runs the library's kernel (`kernels.max_pool2d`: "
              "torch's values bit for bit, without its per-value index). The float baseline is timed as torch runs "
              "it by default (NCHW) and in channels-last format (torch's faster layout for its "
              "max-pool on CPU). Target: >= 5x.", "",
              "| batch | threads | float layout | frozen (ms) | float (ms) | speed-up |",
              "|---:|---:|---|---:|---:|---:|"]
    for m in r["model"]:
        layout = "channels-last" if "channels-last" in m["name"] else "NCHW (default)"
        batch = m["name"].split(",")[0].split()[-1]
        lines.append(f"| {batch} | {m['threads']} | {layout} | {m['candidate_ms']:.1f} | "
                     f"{m['baseline_ms']:.1f} | {m['speedup']:.2f}x |")
    lines += ["", "![Whole-model speed-ups](img/deploy_model.png)", ""]
    if r.get("chunking"):
        lines += ["Batch chunking (`edgecompress.deploy.chunking`, on by default since 2026-12-07): "
                  "the frozen model runs a large batch a few images at a time, so each chunk's "
                  "activations stay in cache from layer to layer; the frozen times above are "
                  "with it. Against the same model running the whole batch at once "
                  "(`batch_chunk = None`), interleaved:", "",
                  "| batch | threads | images per chunk | chunked (ms) | at once (ms) | speed-up |",
                  "|---:|---:|---:|---:|---:|---:|"]
        for c in r["chunking"]:
            lines.append(f"| {c['name'].split()[-1]} | {c['threads']} | {c['chunk']} | "
                         f"{c['candidate_ms']:.1f} | {c['baseline_ms']:.1f} | "
                         f"{c['speedup']:.2f}x |")
        lines.append("")
    lines += stem8_section(r)
    lines += profile_section()
    s = r["sizes"]
    lines += ["## Memory", "",
              "| | float ResNet-18 | frozen W1A1 ResNet-18 |", "|---|---:|---:|",
              f"| file | {s['float_file'] / 2**20:.2f} MiB (torch.save state dict) | "
              f"{s['frozen_file'] / 2**20:.2f} MiB (safetensors) |",
              f"| tensors in memory | {s['float_tensors'] / 2**20:.2f} MiB | "
              f"{s['frozen_tensors'] / 2**20:.2f} MiB |",
              f"| resident memory after loading | {s['float_rss']['load'] / 2**20:.1f} MiB | "
              f"{s['frozen_rss']['load'] / 2**20:.1f} MiB |",
              f"| resident memory after one 224x224 inference | "
              f"{s['float_rss']['after_inference'] / 2**20:.1f} MiB | "
              f"{s['frozen_rss']['after_inference'] / 2**20:.1f} MiB |",
              "",
              f"Analytic size of the frozen model (1 bit per binary weight, 4 bytes per float "
              f"parameter and BatchNorm statistic): {s['analytic'] / 2**20:.2f} MiB; the file is "
              f"{100 * (s['frozen_file'] / s['analytic'] - 1):+.2f} % off. In memory the frozen "
              "model also keeps the weights in the kernel layout (panels), a second packed copy. Resident "
              "memory is measured in a fresh process (RSS growth over the interpreter with torch "
              "and edgecompress imported, after returning freed heap to the OS); after an "
              "inference it includes what the allocator keeps of the activations.",
              ""]
    lines += lowbit_section()
    lines += other_machines()
    DOC.write_text("\n".join(lines))


def stem8_section(r: dict) -> list[str]:
    """The frozen model with its stem convolution at 8 bits: speed (this results file) and
    accuracy (benchmarks/results/int8_stem.json)."""
    if not r.get("stem8"):
        return []
    st = r["stem8"]
    lines = ["### The stem at 8 bits (optional)", "",
             "The stem's 7x7 convolution is the largest float cost left (the breakdown below). "
             "Converted to 8-bit weights and 8-bit signed inputs by the library's uniform "
             "quantizers, with the input step calibrated, it runs as an integer convolution "
             "(`kernels.int8_conv`: exact int32 sums of the codes, one float scale per channel; "
             "on CPUs with AVX-512 VNNI, "
             + ("as here" if st["vnni"] else "not this one, where the float path ran") + "):",
             "", "```python",
             "import torch",
             "import edgecompress as ec",
             "",
             "float_model = ec.models.create(\"resnet18\", num_classes=10, "
             "activation=\"hardtanh\")",
             "model = ec.convert(float_model, [{\"name\": \"bnn\", \"mode\": \"w1a1\"},",
             "                                 {\"name\": \"uniform\", \"bits\": 8, "
             "\"activation_bits\": 8, \"activation_signed\": True,",
             "                                  \"activation_range\": \"calibrated\", "
             "\"include\": [\"stem.0\"], \"keep_first_last\": False}])",
             "ec.quantizers.calibrate(model, [torch.randn(8, 3, 224, 224)])  # your images here",
             "frozen = ec.deploy.freeze(model.eval())",
             "print(type(frozen.get_submodule(\"stem.0\")).__name__)  # PackedUniformConv2d",
             "```", "",
             "| batch | threads | float layout | frozen, 8-bit stem (ms) | float (ms) | speed-up "
             "| vs the float stem |", "|---:|---:|---|---:|---:|---:|---:|"]
    stem = {(s["name"].split()[-1], s["threads"]): s for s in st["stem"]}
    for m in st["model"]:
        layout = "channels-last" if "channels-last" in m["name"] else "NCHW (default)"
        batch = m["name"].split(",")[0].split()[-1]
        lines.append(f"| {batch} | {m['threads']} | {layout} | {m['candidate_ms']:.1f} | "
                     f"{m['baseline_ms']:.1f} | {m['speedup']:.2f}x | "
                     f"{stem[(batch, m['threads'])]['speedup']:.2f}x |")
    accuracy = load_results("int8_stem")
    runs = list(accuracy.get("runs", {}).values())
    if runs:
        def stat(key: str) -> str:
            values = [run[key] for run in runs]
            mean = sum(values) / len(values)
            spread = (sum((v - mean) ** 2 for v in values) / max(len(values) - 1, 1)) ** 0.5
            return f"{mean:.2f} +- {spread:.2f}"
        errors = [run["stem_relative_error"] for run in runs]
        lines += ["", f"Accuracy (`python benchmarks/int8_stem.py`, {len(runs)} seeds): a "
                  f"{accuracy['model']} trained {accuracy['epochs']} epochs on the "
                  f"{accuracy['data']} (reduced: a 32x32 dataset and a short training, not "
                  f"ImageNet), frozen with "
                  f"its float stem and with the stem at 8 bits (input step calibrated by min/max "
                  f"on {accuracy['calibration_images']} training images): top-1 "
                  f"{stat('top1_float_stem')} % with the float stem, "
                  f"{stat('top1_8bit_stem')} % with the 8-bit stem; "
                  f"{stat('same_class')} % of the test images get the same class; the stem's "
                  f"output is off by {min(errors) * 100:.2f}-{max(errors) * 100:.2f} % "
                  f"(relative L2). For scale, the float stem's output plus Gaussian noise of the "
                  f"same relative size: top-1 {stat('top1_noise')} %, "
                  f"{stat('same_class_noise')} % of the classes unchanged (a W1A1 network's "
                  f"classes move with any perturbation of its first binary layer's input "
                  f"signs; the accuracy does not)."]
    return lines + [""]


def lowbit_section() -> list[str]:
    """The low-bit kernels' speed, one table per machine, from benchmarks/results/
    lowbit_speed.json and lowbit_speed-<machine>.json (``benchmarks/lowbit_speed.py``)."""
    files = [RESULTS.parent / "lowbit_speed.json",
             *sorted(RESULTS.parent.glob("lowbit_speed-*.json"))]
    runs = [(f, json.loads(f.read_text())) for f in files if f.is_file()]
    runs = [(f, r) for f, r in runs if r.get("rows")]
    if not runs:
        return []
    r0 = runs[0][1]
    lines = ["## Low-bit weight kernels: shift and uniform linear layers", "",
             f"`python benchmarks/lowbit_speed.py` (`--other MACHINE` on another machine): a "
             f"frozen {r0['bits']}-bit shift linear layer ({r0['method']}, "
             f"FC {r0['features']} x {r0['features']}) on `kernels.lowbit_gemm` (4 bits read "
             f"per weight, decoded in registers; the frozen layer's path at batch <= 16), the "
             f"same layer on its decoded float weights, and a {r0['uniform_bits']}-bit uniform "
             "layer on the kernel, each as float nn.Linear time / its time, median of "
             "interleaved rounds; and a frozen 3-bit shift LSTM (one token per call, 1 thread) "
             "against nn.LSTM. Targets (issue 15): the shift layer >= 3x float at batch 1, "
             ">= 1.5x at batch 8.", ""]
    for f, r in runs:
        lines += [f"### {machine_label(r)}: kernel path {r['kernel_path']} "
                  f"(`{f.name}`)", "",
                  "| batch | threads | shift, low-bit kernel | shift, decoded float | "
                  "uniform, low-bit kernel | float (ms) |", "|---:|---:|---:|---:|---:|---:|"]
        for row in r["rows"]:
            x = row["speedup"]
            lines.append(f"| {row['batch']} | {row['threads']} | {x['lowbit']:.2f}x | "
                         f"{x['decoded']:.2f}x | {x['uniform4']:.2f}x | "
                         f"{row['seconds']['float'] * 1e3:.2f} |")
        lstm = ", ".join(f"batch {row['batch']} {row['speedup']:.2f}x"
                         for row in r.get("lstm_rows", []))
        lines += ["", f"3-bit shift LSTM {r['lstm_size'][0]} -> {r['lstm_size'][1]} vs nn.LSTM: "
                  f"{lstm}." if lstm else "", ""]
    return lines


def model_cells(rows: list[dict]) -> dict[tuple[str, int], dict]:
    """The whole-model rows per (batch, threads): the frozen model against the faster of the
    two float layouts (NCHW and channels-last), each ratio measured in its own interleaved
    run."""
    cells: dict[tuple[str, int], dict] = {}
    for r in rows:
        key = (r["name"].split(",")[0].split()[-1], r["threads"])
        if key not in cells or r["speedup"] < cells[key]["speedup"]:
            cells[key] = r
    return cells


def span(ratios: list[float]) -> str:
    return f"{min(ratios):.1f}-{max(ratios):.1f}x"


def other_machines() -> list[str]:
    """Earlier full runs kept as ``benchmarks/results/deploy-<machine>.json`` (``--other``):
    a summary row and a whole-model table per machine, the main machine's summary first."""
    files = sorted(RESULTS.parent.glob("deploy-*.json"))
    if not files:
        return []
    main = json.loads(RESULTS.read_text())
    runs = [(f"{machine_label(main)} (the tables above)", main, RESULTS.name)]
    runs += [(None, json.loads(f.read_text()), f.name) for f in files]
    lines = ["## Every machine measured", "",
             "The same benchmark on each 2-core machine this project has run on (full results "
             "in the JSON files named; `python benchmarks/deploy.py --other NAME` adds one). "
             "Whole model: the frozen W1A1 ResNet-18 against the faster of the two float "
             "layouts at each batch and thread count (target >= 5x), ordered by the lowest "
             "cell. The ratios move with the CPU's vector units: the binary GEMM runs "
             "VPOPCNTQ on AVX-512 CPUs that have it, and on AVX2 a nibble-lookup count beside "
             "scalar POPCNT, which on AMD Zen 1 (256-bit operations split in two halves) "
             "stays 7-11x torch's float GEMM, and the float stem's 7x7 convolution (torch's in "
             "both models) is a larger share of a slower frozen model. The Intel Xeon "
             "was measured with an earlier version of the kernels and has not been available "
             "since; the AVX2-only AMD EPYC (Zen 1) before batch chunking and the padding "
             "correction (2026-12-07; chunking is on for batches whose activations exceed its "
             "budget, batch 8 of ResNet-18). The AVX-512 AMD EPYC of 2026-11-30 (the main "
             "tables then; its CPU family was not recorded) ran earlier kernels (before the "
             "max-pool kernel, the planned layer calls and batch chunking) and a float model "
             "half as fast as on the Zen 5 (family 26) of the main tables now (likely its "
             "full-width 512-bit FMA units: torch's float convolutions about twice as fast, the "
             "binary kernels less).", "",
             "| machine | binary GEMM speed-up (all cells) | whole model vs the faster float "
             "layout | results |", "|---|---|---|---|"]
    summaries = []
    for label, r, name in runs:
        cells = model_cells(r["model"])
        ratios = [c["speedup"] for c in cells.values()]
        summaries.append((min(ratios), f"| {label or machine_label(r)} | "
                          f"{span([g['speedup'] for g in r['gemm']])} | {span(ratios)} | "
                          f"`benchmarks/results/{name}` |"))
    lines += [row for _, row in sorted(summaries)] + [""]
    for _, r, name in runs[1:]:
        lines += [f"### {machine_label(r)} (`{name}`)", "", f"Machine: {r['machine']}.",
                  "", "| batch | threads | frozen (ms) | float NCHW (ms) | float channels-last "
                  "(ms) | vs the faster |", "|---:|---:|---:|---:|---:|---:|"]
        for (batch, threads), cell in model_cells(r["model"]).items():
            nchw, last = (next(m["baseline_ms"] for m in r["model"] if m["threads"] == threads
                               and m["name"] == f"batch {batch}{suffix}")
                          for suffix in ("", ", float channels-last"))
            lines.append(f"| {batch} | {threads} | {cell['candidate_ms']:.1f} | {nchw:.1f} | "
                         f"{last:.1f} | {cell['speedup']:.2f}x |")
        lines.append("")
        profile_name = f"{PROFILE}-{name[len('deploy-'):-len('.json')]}"
        profile = load_results(profile_name)
        if profile.get("settings"):
            loads = [x for s in profile["settings"].values() for x in s["load_average"]]
            lines += [f"Where the time goes on this machine (`benchmarks/results/"
                      f"{profile_name}.json`, `python benchmarks/deploy.py --profile --other "
                      f"{name[len('deploy-'):-len('.json')]}`; parts as in the section above; "
                      f"load average {min(loads):.1f}-{max(loads):.1f} during the run):", "",
                      *profile_table(profile["settings"]), ""]
    return lines


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--doc-only", action="store_true",
                        help=f"rewrite {DOC.relative_to(ROOT)} from the last run's results "
                             f"({RESULTS.relative_to(ROOT)}) without measuring")
    parser.add_argument("--profile", action="store_true",
                        help="only measure where the frozen ResNet-18's time goes (the "
                             "settings missing from benchmarks/results/deploy_profile.json), "
                             "then rewrite the doc")
    parser.add_argument("--stem8", action="store_true",
                        help="only measure the frozen model with its stem at 8 bits, into the "
                             "results file (with --other, that machine's), then rewrite the doc")
    parser.add_argument("--rounds", type=int, default=5,
                        help="--profile: profiled passes per setting (default 5)")
    parser.add_argument("--other", metavar="MACHINE",
                        help="measure into benchmarks/results/deploy-MACHINE.json (e.g. "
                             "amd-epyc-avx2), a table of the doc's section on every machine "
                             "measured, leaving the main results and plots as they are; with "
                             "--profile, only that machine's breakdown, into "
                             "deploy_profile-MACHINE.json")
    args = parser.parse_args()
    if args.stem8:
        target = RESULTS.parent / f"deploy-{args.other}.json" if args.other else RESULTS
        results = json.loads(target.read_text())
        results["stem8"] = bench_8bit_stem(*resnet18())
        target.write_text(json.dumps(results, indent=1))
        write_doc(json.loads(RESULTS.read_text()))
        print(f"wrote {target} and {DOC}")
    elif args.other and args.profile:
        measure_profile(args.rounds, f"{PROFILE}-{args.other}")
        write_doc(json.loads(RESULTS.read_text()))
        print(f"wrote {DOC}")
    elif args.other:
        main(RESULTS.parent / f"deploy-{args.other}.json")
    elif args.profile:
        plot_profile(measure_profile(args.rounds)["settings"])
        write_doc(json.loads(RESULTS.read_text()))
        print(f"wrote {DOC} and {IMG_PROFILE}")
    elif args.doc_only:
        results = json.loads(RESULTS.read_text())
        plot(results)
        profiled = load_results(PROFILE).get("settings")
        if profiled:
            plot_profile(profiled)
        write_doc(results)
    else:
        main()
