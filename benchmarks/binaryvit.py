"""BinaryViT ablation benchmark: float teachers, binary DeiT -> + avg pool -> + pooling branches
-> + affine -> + pyramid (= BinaryViT), BinaryViT distilled from either teacher, and a binary
ResNet of similar MACs, all on the CIFAR-10 subset with one budget and >= 2 seeds; writes
docs/binaryvit.md.

    python benchmarks/binaryvit.py time --data-root ../shared/data/cifar10_subset
    python benchmarks/binaryvit.py run --data-root ../shared/data/cifar10_subset \\
        --seeds 0 --part s0     # and --seeds 1 --part s1 beside it (two cores)
    python benchmarks/binaryvit.py report

Every row is a recipe of recipes/binaryvit/ or recipes/binarization/ with the benchmark's
epochs and seed; students are distilled only (kd alpha 1, temperature 1) from a float teacher of
the same seed trained first in the same process (its checkpoint goes to ``--work``).

``run`` writes benchmarks/results/binaryvit[-limit<N>][-<part>].json after every run and skips
runs already in any of them, so a killed benchmark resumes; one thread per process, so the two
seeds run side by side. ``time`` trains every row for a fraction of an epoch and estimates its
per-epoch time (benchmarks/results/binaryvit_timing.json), from which EPOCHS was chosen.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from common import (ROOT, add_run_arguments, command_parser, dispatch, hours_per_seed, load_results,
                    machine, mean_std, merged_results, resume_results, runs_line, save_results,
                    seconds_per_seed, train_and_record, train_checkpoint, write_doc)

from edgecompress.analysis.summary import summary
from edgecompress.recipe import Recipe
from edgecompress.train import Callback

DOC = ROOT / "docs" / "binaryvit.md"
IMG = ROOT / "docs" / "img"
PLOT = "binaryvit_ablation.png"
#: epochs of every row (why: CHOICE, measured with ``time`` on 2026-12-06)
EPOCHS = 20
CHOICE = (
    "{epochs} epoch(s) per row. The default, 20, comes from `time`: 704 s per epoch for all nine "
    "rows together (one thread, load average 8 on the two cores from other jobs, about 2x "
    "slower than a process alone on a core), so about 350 s alone: about 2 hours for 20 epochs "
    "of two seeds in two processes. A first run beside other jobs took 3.2 h; the table is "
    "from a re-run with the two processes alone on the cores, after the binary ViTs' "
    "elementwise steps stopped using torch.where (ApproxSign, Clip, RPReLU: the same values, "
    "a ~20 % faster training step), whose time is measured below. CIFAR is kept rather than "
    "MNIST: the paper's claims are about natural images, and on MNIST the binarization "
    "benchmark's methods all land within half a point of each other")
SEEDS = (0, 1)
TRAIN_IMAGES, TEST_IMAGES, BATCH = 4000, 1000, 128
INPUT, CLASSES = (3, 32, 32), 10
DISTILL = {"alpha": 1.0, "temperature": 1.0}  # the spec's distillation-only loss
#: ResNet-20 width whose binary MACs are closest to BinaryViT mini's on 32x32 with round
#: channel counts: 10-20-40 channels, 16.0 M MACs vs BinaryViT's 14.4 M
CNN_WIDTH = 0.625


@dataclass(frozen=True)
class Row:
    """One row of the table: a recipe, its model overrides and its teacher (a row key)."""

    key: str
    label: str
    recipe: str
    teacher: str | None = None
    model: dict[str, Any] = field(default_factory=dict)


ROWS = (
    Row("teacher-resnet20", "float ResNet-20 (teacher)", "cifar10_resnet20_float.yaml"),
    Row("teacher-deit", "float DeiT mini (teacher)", "binaryvit/cifar10_deit_float.yaml"),
    Row("binary-deit", "binary DeiT", "binaryvit/cifar10_binary_deit.yaml", "teacher-resnet20"),
    Row("avgpool", "+ avg pool", "binaryvit/cifar10_binary_deit_avgpool.yaml",
        "teacher-resnet20"),
    Row("branches", "+ pooling branches", "binaryvit/cifar10_binary_deit_avgpool_branches.yaml",
        "teacher-resnet20"),
    Row("affine", "+ affine", "binaryvit/cifar10_binary_deit_avgpool_branches_affine.yaml",
        "teacher-resnet20"),
    Row("binaryvit", "+ pyramid = BinaryViT", "binaryvit/cifar10_binaryvit.yaml",
        "teacher-resnet20"),
    Row("binaryvit-deit-teacher", "BinaryViT, DeiT teacher", "binaryvit/cifar10_binaryvit.yaml",
        "teacher-deit"),
    Row("binary-resnet20", f"binary ResNet-20 x{CNN_WIDTH} (bnn W1A1)",
        "binarization/cifar10_resnet20_bnn_w1a1.yaml", "teacher-resnet20",
        {"width": CNN_WIDTH}),
)
BY_KEY = {row.key: row for row in ROWS}
ABLATION = ("binary-deit", "avgpool", "branches", "affine", "binaryvit")

REDUCED = (
    "data: the CIFAR-10 subset (first 4,000 train / first 1,000 test images, 32x32, random crop "
    "+ flip) instead of ImageNet-1k at 224x224 (1.28 M images, random-resized-crop + flip); "
    "budget: {epochs} epochs at batch 128 instead of 300 epochs at batch 512 (AdamW, lr 5e-4, "
    "weight decay 0, cosine, kept); models: the *mini* sizes of `edgecompress.models.vit` - "
    "flat rows dim 64, depth 6, 2 heads, 4x4 patches (8x8 tokens); BinaryViT's pyramid dims "
    "32/64/128/128, depths 1/1/2/1, heads 1/2/4/4, MLP ratio 4, 2x2 patch stem, tokens "
    "16/8/4/2, key/value pooling 4/2/1/1 - instead of the paper's 64/128/256/512, depths "
    "3/4/8/4, tokens 56/28/14/7 on 224x224 inputs; teacher: a float ResNet-20 (or the float "
    "DeiT mini) trained on the same data and budget, not an ImageNet model; binary CNN: "
    f"ResNet-20 at width {CNN_WIDTH} (10-20-40 channels) binarized with bnn W1A1 (first "
    "convolution and classifier float), distilled like the ViTs, instead of the paper's "
    "ImageNet binary CNNs")


def teacher_dir(work: Path, key: str, seed: int, epochs: int, limit: int | None) -> Path:
    return work / (f"{key}-s{seed}-e{epochs}" + (f"-limit{limit}" if limit else ""))


def recipe_for(row: Row, seed: int, epochs: int, limit: int | None = None,
               work: Path | None = None, teacher_epochs: int | None = None) -> Recipe:
    """The row's recipe at the benchmark's budget; a warmup keeps its share of the epochs. A
    student learns from its teacher trained for ``teacher_epochs`` (default ``epochs``)."""
    recipe = Recipe.from_yaml(ROOT / "recipes" / row.recipe)
    warmup = recipe.schedule.get("warmup_epochs")
    if warmup:
        recipe.schedule = {**recipe.schedule, "warmup_epochs": warmup * epochs // recipe.epochs}
    recipe.epochs, recipe.seed = epochs, seed
    recipe.model = {**recipe.model, **row.model}
    if limit:
        recipe.data = {**recipe.data, "limit": limit}
    recipe.distill = None
    if row.teacher is not None:
        where = teacher_dir(work or Path(), row.teacher, seed, teacher_epochs or epochs, limit)
        recipe.distill = {"teacher": str(where / "checkpoint.pt"), **DISTILL}
    return recipe


def one_run(row: Row, seed: int, epochs: int, limit: int | None, work: Path, data_root: str,
            callbacks: tuple[Callback, ...] = (), teacher_epochs: int | None = None
            ) -> dict[str, Any]:
    """Train one row (its teacher first, for ``teacher_epochs``, default ``epochs``, if that
    checkpoint is missing, e.g. after a fresh checkout); a teacher row keeps its checkpoint in
    ``work``."""
    teacher_epochs = teacher_epochs or epochs
    if row.teacher is not None:
        teacher = BY_KEY[row.teacher]
        out = teacher_dir(work, teacher.key, seed, teacher_epochs, limit)
        train_checkpoint(recipe_for(teacher, seed, teacher_epochs, limit, work), data_root, out)
    out = teacher_dir(work, row.key, seed, epochs, limit) if row.teacher is None else None
    return train_and_record(recipe_for(row, seed, epochs, limit, work, teacher_epochs),
                            data_root, out, callbacks, row=row.key, epochs=epochs, limit=limit)


def cmd_run(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    name, done, results = resume_results("binaryvit", args.limit, args.part, args.epochs)
    rows = [BY_KEY[k] for k in args.rows] if args.rows else ROWS
    for seed in args.seeds:
        for row in rows:
            key = f"{row.key}|{seed}"
            if key in done or key in results:
                continue
            results[key] = one_run(row, seed, args.epochs, args.limit, Path(args.work),
                                   args.data_root)
            save_results(name, results)
            r = results[key]
            print(f"[binaryvit] {key}: top-1 {r['top1']:.2f} ({r['seconds']:.0f} s)", flush=True)


class StepClock(Callback):
    """Times the training steps and the test evaluation of an epoch."""

    def on_epoch_start(self, trainer: Any, epoch: int) -> None:
        self.marks = [time.perf_counter()]

    def on_step_end(self, trainer: Any, step: int, loss: float) -> None:
        self.marks.append(time.perf_counter())

    def on_epoch_end(self, trainer: Any, epoch: int, metrics: dict[str, Any]) -> None:
        self.eval_seconds = time.perf_counter() - self.marks[-1]

    def step_seconds(self) -> float:
        """Median step time, the first step (warm-up) left out."""
        steps = [b - a for a, b in zip(self.marks, self.marks[1:])]
        return statistics.median(steps[1:] or steps)

    def epoch_seconds(self, limit: int) -> float:
        """An epoch's time on the benchmark's 4,000 train / 1,000 test images, from a run
        on ``limit`` images of each."""
        return (self.step_seconds() * math.ceil(TRAIN_IMAGES / BATCH)
                + self.eval_seconds * TEST_IMAGES / min(limit, TEST_IMAGES))


def cmd_time(args: argparse.Namespace) -> None:
    """Per-epoch time of every row from a 1-epoch run on ``--limit`` images (train and test),
    scaled to 4,000 train / 1,000 test images; then the epochs that fit ``--hours``."""
    torch.set_num_threads(1)
    out: dict[str, Any] = {"machine": machine(), "load_average": os.getloadavg(),
                           "limit": args.limit, "rows": {}}
    with tempfile.TemporaryDirectory() as work:
        for row in ROWS:
            clock = StepClock()
            one_run(row, 0, 1, args.limit, Path(work), args.data_root, (clock,))
            step, evaluation = clock.step_seconds(), clock.eval_seconds
            epoch = clock.epoch_seconds(args.limit)
            out["rows"][row.key] = {"step_seconds": step, "eval_seconds": evaluation,
                                    "epoch_seconds": epoch}
            print(f"{row.label:<40} step {step:6.3f} s, epoch ~{epoch:6.1f} s", flush=True)
    total = sum(r["epoch_seconds"] for r in out["rows"].values())
    out["load_average_after"] = os.getloadavg()
    epochs = int(args.hours * 3600 * args.processes / (len(SEEDS) * total))
    out["suggested_epochs"] = epochs
    print(f"all rows: {total:.0f} s per epoch; {len(SEEDS)} seeds on {args.processes} "
          f"processes in {args.hours} h: {epochs} epochs (load average "
          f"{out['load_average'][0]:.1f} before, {out['load_average_after'][0]:.1f} after)")
    save_results("binaryvit_timing", out)


def profile(row: Row) -> dict[str, Any]:
    """MACs per image by precision, stored bytes and parameters of the row's model."""
    model, _ = recipe_for(row, 0, EPOCHS).build_model(CLASSES, INPUT)
    s = summary(model, INPUT)
    return {"macs": s.macs_by_precision, "total_macs": s.total_macs, "bytes": s.bytes,
            "params": s.total_params}


def verdicts(scores: dict[str, list[float]]) -> list[str]:
    """The paper's claims, each judged by the rule stated in its sentence."""
    def mean(key: str) -> float:
        return statistics.mean(scores[key])

    def spread(*keys: str) -> float:
        return max(statistics.stdev(scores[k]) for k in keys)

    ready = {k for k, v in scores.items() if len(v) >= 2}
    out = []
    if set(ABLATION) <= ready:
        helped = []
        for prev, key in zip(ABLATION, ABLATION[1:]):
            gap, s = mean(key) - mean(prev), spread(prev, key)
            effect = "helps" if gap > s else "hurts" if gap < -s else "no clear effect"
            helped.append(effect == "helps")
            out.append(f"- {BY_KEY[key].label} after {BY_KEY[prev].label}: {gap:+.2f} points "
                       f"against a spread of {s:.2f}: {effect}.")
        verdict = ("holds" if all(helped) else "holds partly" if any(helped)
                   else "not reproduced")
        out.append(f"- Claim \"each change improves a binary ViT\": **{verdict}** "
                   f"({sum(helped)} of {len(helped)} changes help; rule: a change helps if it "
                   f"raises the mean top-1 by more than the larger standard deviation of the two "
                   f"rows, hurts if it lowers it by more; the claim holds if all four help, "
                   f"holds partly if some do, is not reproduced if none does).")
    if {"binary-deit", "binaryvit", "binary-resnet20"} <= ready:
        deit, vit, cnn = mean("binary-deit"), mean("binaryvit"), mean("binary-resnet20")
        s = spread("binary-deit", "binaryvit", "binary-resnet20")
        closed = (vit - deit) / (cnn - deit) if cnn - deit > s else None
        if vit >= cnn - s:
            verdict = "holds (BinaryViT matches or beats the binary CNN)"
        elif closed is not None and closed >= 0.5:
            verdict = "holds"
        elif closed is not None and vit - deit > s:
            verdict = "holds partly"
        else:
            verdict = "not reproduced"
        share = f"closes {closed:.0%} of the binary DeiT's gap" if closed is not None else (
            "the binary DeiT was not behind the binary CNN by more than the spread")
        out.append(f"- Claim \"BinaryViT closes most of the gap to binary CNNs\": **{verdict}** "
                   f"(binary DeiT {deit:.2f}, BinaryViT {vit:.2f}, binary ResNet-20 "
                   f"x{CNN_WIDTH} {cnn:.2f}; BinaryViT {share}; rule: holds if BinaryViT is "
                   f"within the largest standard deviation {s:.2f} of the binary CNN or above "
                   f"it, or closes at least half of the binary DeiT's gap; holds partly if it "
                   f"closes less but gains more than that deviation; else not reproduced).")
    if {"binaryvit", "binaryvit-deit-teacher"} <= ready:
        gap = mean("binaryvit") - mean("binaryvit-deit-teacher")
        s = spread("binaryvit", "binaryvit-deit-teacher")
        choice = ("the float ResNet-20" if gap > s else "the float DeiT" if gap < -s
                  else "neither (within the spread)")
        out.append(f"- Teacher: BinaryViT distilled from the float ResNet-20 minus from the float "
                   f"DeiT: {gap:+.2f} points against a spread of {s:.2f}; the better teacher on "
                   f"this data: **{choice}** (rule: better if the gap exceeds the larger standard "
                   f"deviation).")
    return out


def _plot(rows: list[tuple[Row, list[float]]]) -> str | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(rows) + 1))
    labels = [row.label for row, _ in rows][::-1]
    means = [statistics.mean(v) for _, v in rows][::-1]
    stds = [statistics.stdev(v) if len(v) > 1 else 0.0 for _, v in rows][::-1]
    colors = ["gray" if row.teacher is None else "tab:orange" if "resnet" in row.key
              else "tab:blue" for row, _ in rows][::-1]
    ax.barh(labels, means, xerr=stds, color=colors, capsize=3)
    ax.set(xlabel="test top-1 (%), mean ± std over seeds", title="BinaryViT ablation, "
           "CIFAR-10 subset")
    fig.tight_layout()
    IMG.mkdir(parents=True, exist_ok=True)
    fig.savefig(IMG / PLOT, dpi=110)
    plt.close(fig)
    return PLOT


def _macs(n: int) -> str:
    return f"{n / 1e6:.2f}" if n else "-"


def cmd_report(args: argparse.Namespace) -> None:
    results = merged_results("binaryvit", args.limit)
    runs = [r for k, r in results.items() if k != "machine"]
    epochs = sorted({r["epochs"] for r in runs})
    scores = {row.key: [r["top1"] for r in runs if r["row"] == row.key] for row in ROWS}
    shown = [(row, scores[row.key]) for row in ROWS if scores[row.key]]
    precisions = ("w1a1", "u1a1", "w32a32")
    lines = [
        "# BinaryViT: ablation on the CIFAR-10 subset", "",
        "Generated by `python benchmarks/binaryvit.py report` from benchmarks/results/"
        "binaryvit*.json. Rows are the recipes of `recipes/binaryvit/` (BinaryViT, Le & Li, "
        "CVPR 2023 Workshops, arXiv 2306.16678) and a binary ResNet of similar MACs, "
        "all trained on the same data with the same epochs, batch and seeds. Students learn "
        "from the distillation loss only (soft-target cross-entropy, kd alpha 1, temperature 1) "
        "against a float teacher of the same seed trained first on the same data and budget: "
        "the float ResNet-20 for every student, and once the float DeiT for BinaryViT (the "
        "teacher choice). Each row keeps its recipe's optimizer: AdamW lr 5e-4 without weight "
        "decay for the binary ViTs (the paper's), AdamW with weight decay 0.05 and a warmup of "
        "5 % of the epochs for the float DeiT, SGD lr 0.1 for the float ResNet-20, Adam lr 1e-3 "
        "for the binary ResNet (recipes/binarization); all cosine. Top-1 is the deployed "
        "model's (binary forward exactly sign).", "",
        f"Reduced compared with the paper: {REDUCED.format(epochs=', '.join(map(str, epochs)))}.",
        "", f"Budget: {CHOICE.format(epochs=', '.join(map(str, epochs)))}.", "",
        "| row | teacher | top-1 (%) | MACs w1a1 (M) | MACs u1a1 (M) | MACs w32a32 (M) | "
        "stored bytes | params | s / epoch |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row, values in shown:
        p = profile(row)
        secs = [r["seconds"] / r["epochs"] for r in runs if r["row"] == row.key]
        teacher = BY_KEY[row.teacher].label.split(" (")[0] if row.teacher else "-"
        lines.append(f"| {row.label} | {teacher} | {mean_std(values)} | "
                     + " | ".join(_macs(p["macs"].get(k, 0)) for k in precisions)
                     + f" | {p['bytes']:,.0f} | {p['params']:,} | "
                     f"{statistics.mean(secs):.1f} |")
    lines += [
        "", "MACs per 32x32 image by precision (`edgecompress summary`): w1a1 binary weights "
        "and binary inputs (XNOR-popcount), u1a1 the binary attention's {0, a} probabilities "
        "times +-1 values (add only), w32a32 float (the stems, classifiers and the float "
        "models). Stored bytes: parameters at their precision, packed (binary weights 1 bit, "
        "the rest 32 bits). s / epoch: training plus test evaluation, measured in the runs.", "",
    ]
    lines += verdicts(scores)
    plot = _plot(shown) if shown else None
    if plot:
        lines += ["", f"![BinaryViT ablation](img/{plot})"]
    timing = load_results("binaryvit_timing")
    if timing:
        lines += [
            "", "## Budget", "",
            f"Latest `python benchmarks/binaryvit.py time` (each row "
            f"trained one epoch on {timing['limit']} images, step and evaluation times scaled to "
            f"4,000 / 1,000 images; load average {timing['load_average'][0]:.1f} on the "
            f"machine's cores while timing): " + ", ".join(
                f"{BY_KEY[k].label} {v['epoch_seconds']:.0f} s" for k, v in
                timing["rows"].items()) + f" per epoch: {timing['suggested_epochs']} epochs for "
            f"two seeds in two processes in 2 hours at that load. "
            f"Machine: {timing['machine']}."]
    per_seed = seconds_per_seed(runs)
    if per_seed:
        lines += ["", f"Measured in the runs: {hours_per_seed(per_seed)} of training and "
                  "evaluation (one process per seed, side by side on the two cores), so the "
                  f"table regenerates in about {max(per_seed.values()) / 3600:.1f} h on two "
                  "cores."]
    lines += ["", runs_line(results), "",
              "Regenerate: `python benchmarks/binaryvit.py run --data-root "
              "../shared/data/cifar10_subset --seeds 0 --part s0` and, beside it, `--seeds 1 "
              "--part s1`, then `python benchmarks/binaryvit.py report`.", ""]
    write_doc(DOC, lines)


def main() -> None:
    parser, sub = command_parser(__doc__)
    p = sub.add_parser("run", help="train every row x seed (resumable)")
    add_run_arguments(p, "binaryvit", SEEDS, work="binaryvit",
                      work_help="where the teachers' checkpoints go")
    p.add_argument("--rows", nargs="+", choices=list(BY_KEY),
                   help="only these rows (their teachers are trained when missing)")
    p.add_argument("--epochs", type=int, default=EPOCHS)
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("time", help="estimate every row's time per epoch, suggest epochs")
    p.add_argument("--data-root", required=True)
    p.add_argument("--limit", type=int, default=640, help="images per timing run")
    p.add_argument("--hours", type=float, default=2.0)
    p.add_argument("--processes", type=int, default=2)
    p.set_defaults(func=cmd_time)
    p = sub.add_parser("report", help="write docs/binaryvit.md and its plot")
    p.add_argument("--limit", type=int, help="report the smoke results of run --limit N")
    p.set_defaults(func=cmd_report)
    dispatch(parser)


if __name__ == "__main__":
    main()
