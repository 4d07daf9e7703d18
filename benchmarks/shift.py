"""Shift-network benchmark: float vs DeepShift-Q / DeepShift-PS / S3 / DenseShift at 2, 3 and 4
bits, >= 3 seeds, on the same model, data and budget; writes docs/shift.md.

    python benchmarks/shift.py run cifar --data-root ../shared/data/cifar10_subset
    python benchmarks/shift.py run speech --data-root ../shared/data/fsdd
    python benchmarks/shift.py deploy     # packed sizes and inference time vs float
    python benchmarks/shift.py report

``run`` appends to benchmarks/results/shift_<suite>.json after every training run and skips runs
already there (seed-major order, so complete seeds come first). One thread per run: the two
suites can run side by side on two cores.
"""

from __future__ import annotations

import argparse
import json
import statistics
from typing import Any

import torch
from common import (RESULTS, ROOT, load_results, machine, method_table, save_results,
                    suite_section, train_and_record)

from edgecompress.analysis import plot_flip_rates
from edgecompress.quantizers.shift import SHIFT_METHODS
from edgecompress.recipe import Recipe

DOC = ROOT / "docs" / "shift.md"
IMG = ROOT / "docs" / "img"
BITS = (2, 3, 4)

SUITES: dict[str, dict[str, Any]] = {
    "cifar": {
        "prefix": "cifar10_resnet20", "epochs": 6, "model": {},
        "title": "ResNet-20 on the CIFAR-10 subset (first 4,000 train / first 1,000 test images)",
        "reduced": "4,000 of the 50,000 training images and 6 epochs instead of 200 (so every "
                   "accuracy is far below the papers' ~90 %: compare methods, not absolutes)",
    },
    "speech": {
        "prefix": "fsdd_kws", "epochs": 8, "model": {"channels": 16},
        "title": "Keyword-spotting ResNet (res8-style, 16 channels) on the Free Spoken Digit "
                 "Dataset (2,700 train / 300 test clips, 40 log-mel bins x 101 frames)",
        "reduced": "spoken digits (FSDD) instead of Fluent Speech Commands, which is not "
                   "available here; 16 channels instead of res8's 45 and 8 epochs instead of 40",
    },
}


def runs() -> list[tuple[str, str | None, int | None]]:
    """(label, method, bits) of every configuration, float first."""
    return [("float", None, None)] + [(f"{m} {b}-bit", m, b) for m in SHIFT_METHODS
                                      for b in BITS]


def recipe_for(suite: str, method: str | None, bits: int | None, seed: int) -> Recipe:
    spec = SUITES[suite]
    stem = "float" if method is None else f"{method.replace('-', '_')}_{bits}bit"
    recipe = Recipe.from_yaml(ROOT / "recipes" / "shift" / f"{spec['prefix']}_{stem}.yaml")
    recipe.epochs, recipe.seed = spec["epochs"], seed
    recipe.model = {**recipe.model, **spec["model"]}
    return recipe


def suite_results(suite: str) -> dict[str, Any]:
    """All results of a suite: shift_<suite>.json plus any shift_<suite>-<part>.json written by
    a parallel ``run --part``."""
    merged = load_results(f"shift_{suite}")
    for path in sorted(RESULTS.glob(f"shift_{suite}-*.json")):
        merged.update(load_results(path.stem))
    return merged


def cmd_run(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    name = f"shift_{args.suite}" + (f"-{args.part}" if args.part else "")
    done = suite_results(args.suite)
    results = load_results(name)
    for seed in args.seeds:
        for label, method, bits in runs():
            key = f"{label}|{seed}"
            if key in results or key in done:
                continue
            results[key] = train_and_record(recipe_for(args.suite, method, bits, seed),
                                            args.data_root, label=label, method=method, bits=bits)
            save_results(name, results)
            print(f"[{args.suite}] {key}: top-1 {results[key]['top1']:.2f} "
                  f"({results[key]['seconds']:.0f} s)", flush=True)


def _scores(results: dict[str, Any], method: str | None, bits: int | None) -> list[float]:
    return [r["top1"] for r in results.values() if r["method"] == method and r["bits"] == bits]


def _claims(results: dict[str, Any]) -> list[str]:
    """The papers' claims, checked against this run's numbers (gaps compared with the larger
    of the two standard deviations over seeds)."""
    def stats(method: str | None, bits: int | None) -> tuple[float, float]:
        v = _scores(results, method, bits)
        if not v:
            return float("nan"), float("nan")
        return statistics.mean(v), statistics.stdev(v) if len(v) > 1 else float("nan")

    def versus(a: tuple[float, float], b: tuple[float, float]) -> str:
        gap, spread = a[0] - b[0], max(a[1], b[1])
        size = "more than" if abs(gap) > spread else "within"
        return f"{gap:+.2f} points, {size} one standard deviation ({spread:.2f})"

    out = []
    floats = stats(None, None)
    for method in ("s3", "denseshift"):
        mine = stats(method, 3)
        parts = [f"vs float {versus(mine, floats)}"]
        parts += [f"vs {base} {versus(mine, stats(base, 3))}"
                  for base in ("deepshift-q", "deepshift-ps")]
        out.append(f"- {method} 3-bit ({mine[0]:.2f}): " + "; ".join(parts) + ".")
    flips = {}
    for method in ("deepshift-ps", "s3", "denseshift"):
        rows = [r["flip_rate"] for r in results.values() if r["method"] == method
                and r["bits"] == 3 and r["flip_rate"]]
        if rows:
            flips[method] = statistics.mean(r[-1] for r in rows)
    if flips:
        out.append("- weights whose 3-bit value changed in the last epoch (mean over seeds): "
                   + ", ".join(f"{m} {100 * v:.2f} %" for m, v in flips.items())
                   + " (the papers: S3 and DenseShift keep flipping where DeepShift-PS "
                     "freezes).")
    return out


def cmd_report(args: argparse.Namespace) -> None:
    IMG.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Power-of-two (shift) networks: DeepShift-Q/PS, S3, DenseShift",
        "",
        "Every method turns each weight of the converted layers into 0 or +-2^k "
        "(`edgecompress.convert(model, \"s3\", bits=3)`; formulas, encodings and value sets in "
        "`edgecompress/quantizers/shift.py`). Policy: first conv, classifier and BatchNorm "
        "float; every other conv (1x1 downsampling ones included) quantized; activations float.",
        "",
        "Top-1 test accuracy (%), mean ± standard deviation over seeds. Same model, data, "
        "optimizer (Adam, cosine schedule), budget and seeds for every method. Initialisation "
        "as in each paper (`init=\"paper\"`): DeepShift-Q starts from the float model's weights, "
        "DeepShift-PS from P ~ U(-10, -1), S ~ U(-1, 1), S3 from He-normal latents and "
        "DenseShift from N(0, 1e-3) latents. The budgets here are a few epochs, far from the "
        "papers' hundreds, so read the tables as short-budget comparisons. The runs were made "
        "on two 2-core machines of this project, an Intel Xeon and an AMD EPYC (the "
        "DeepShift-PS rows, rerun after a fix to the clamping of its latent P, on the latter): "
        "rows can differ by float rounding in the kernels, not by setup.",
        "",
    ]
    for suite, spec in SUITES.items():
        results = suite_results(suite)
        if not results:
            continue
        lines += suite_section("##", spec, results, method_table(
            results, SHIFT_METHODS, "bits", BITS, [f"{b}-bit" for b in BITS]))
        lines += ["", "Paper claims, checked on these numbers:", "", *_claims(results), ""]
        for metric in ("flip_rate", "unchanged_since_epoch_1"):
            curves, skipped = {}, 0
            for method in SHIFT_METHODS:
                rows = [r[metric] for r in results.values()
                        if r["method"] == method and r["bits"] == 3 and r.get(metric)]
                if not rows:
                    continue
                skipped = sum(v is None for v in rows[0])  # epochs before the metric starts
                curves[method] = [statistics.mean(v) for v in zip(*[row[skipped:]
                                                                    for row in rows])]
            if not curves:
                continue
            if metric == "flip_rate":
                title, options = "weights whose value changed during the epoch", dict(
                    ylabel="weights changed (%)")
            else:
                title = f"weights unchanged since the end of epoch {skipped}"
                options = dict(ylabel="weights unchanged (%)", first_epoch=skipped + 1, log=False)
            name = f"shift_{metric}_{suite}.png"
            plot_flip_rates(IMG / name, curves, f"{spec['prefix']} 3-bit: {title}", **options)
            lines += [f"![{metric} {suite}](img/{name})", ""]
        lines += [f"Regenerate: `python benchmarks/shift.py run {suite} --data-root <dir>` then "
                  f"`python benchmarks/shift.py report`.", ""]
    packed = RESULTS / "shift_deploy.json"
    if packed.is_file():
        data = json.loads(packed.read_text())
        lines += ["## Packed inference", "", data["text"], "",
                  f"Machine of these timings: {data['machine']}.", ""]
    DOC.write_text("\n".join(lines))
    print(f"wrote {DOC}")


def cmd_deploy(args: argparse.Namespace) -> None:
    """Packed shift ResNet-20 vs the float ResNet-20: file size, time per batch (interleaved)."""
    import tempfile
    from pathlib import Path

    from edgecompress import convert, deploy, models
    from edgecompress.deploy.benchmark import compare

    torch.manual_seed(0)
    torch.set_num_threads(1)  # the timings are 1-thread; machine() below says so
    rows, sizes = [], {}
    float_model = models.create("resnet20").eval()
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(float_model.state_dict(), Path(tmp) / "float.pt")
        sizes["float"] = (Path(tmp) / "float.pt").stat().st_size
        for method, bits in (("s3", 3), ("denseshift", 3), ("deepshift-ps", 3), ("s3", 2),
                             ("denseshift", 4)):
            frozen = deploy.freeze(convert(float_model, method, bits=bits))
            path = Path(tmp) / f"{method}{bits}.safetensors"
            deploy.save(frozen, path)
            sizes[f"{method} {bits}-bit"] = path.stat().st_size
            if (method, bits) == ("s3", 3):
                for batch in (1, 32):
                    x = torch.randn(batch, 3, 32, 32)
                    with torch.no_grad():
                        t = compare(f"batch {batch}", lambda: frozen(x), lambda: float_model(x),
                                    threads=1, rounds=5, repeats=5)
                    rows.append(t.to_dict())
    lines = ["ResNet-20 (CIFAR), frozen with `edgecompress.deploy.freeze` and written with "
             "`deploy.save`: each converted weight is its value code (3 bits for a 3-bit "
             "method), the first conv, classifier and BatchNorms stay float.", "",
             "| model | file | vs float |", "|---|---:|---:|"]
    for name, size in sizes.items():
        lines.append(f"| {name} | {size / 1024:.1f} KiB | {sizes['float'] / size:.1f}x |")
    lines += ["", "Inference time of the packed S3 3-bit model vs the float model, 1 thread, "
              "measured interleaved in one run (`python benchmarks/shift.py deploy`). The packed "
              "layers decode their codes once into exact powers of two and run torch's float "
              "kernels on them, so they match the training-form forward bit for bit and run at "
              "float speed: on this CPU a multiply by +-2^k costs the same as any multiply, and "
              "a shift/exponent-add kernel would not beat the FMA units; the gain is size.", "",
              "| batch | packed (ms) | float (ms) | speed ratio |", "|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['name'].split()[-1]} | {r['candidate_ms']:.2f} | "
                     f"{r['baseline_ms']:.2f} | {r['speedup']:.2f}x |")
    save_results("shift_deploy", {"sizes": sizes, "timings": rows, "machine": machine(),
                                  "text": "\n".join(lines)})
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="train every method x bits x seed of a suite")
    p.add_argument("suite", choices=sorted(SUITES))
    p.add_argument("--data-root", required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--part", help="write to shift_<suite>-<part>.json, so that a second process "
                   "can run other seeds of the same suite at the same time")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("deploy", help="packed file sizes and inference time vs float")
    p.set_defaults(func=cmd_deploy)
    p = sub.add_parser("report", help="write docs/shift.md and its plots")
    p.set_defaults(func=cmd_report)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
