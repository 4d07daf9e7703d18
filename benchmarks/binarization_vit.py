"""ProxConnect++ on vision transformers: the seven binarization methods as the weight quantizer
of the binary DeiT and of BinaryViT (W1A1, the CIFAR-10 subset, the sizes, data and recipes of
benchmarks/binaryvit.py), >= 2 seeds; its table and verdict are a section of
docs/binarization.md.

    python benchmarks/binarization_vit.py time --data-root ../shared/data/cifar10_subset
    python benchmarks/binarization_vit.py run --data-root ../shared/data/cifar10_subset \\
        --seeds 0 --part s0     # and --seeds 1 --part s1 beside it (two cores)
    python benchmarks/binarization.py report       # writes docs/binarization.md, this section too
    python benchmarks/binarization_vit.py section  # prints this section only

A script of its own, not a command of binaryvit.py: its runs (method x model x seed) have
their own budget, results file and report (docs/binarization.md, next to the CNN suites),
while binaryvit.py's rows, recipes, teacher and timing clock are imported from there. Every
student is a row of binaryvit.py with ``model.weight_method`` set to the method, distilled only
(kd alpha 1, temperature 1) from binaryvit.py's float ResNet-20 teacher of the same seed and
epochs (its checkpoint in ``--work`` is reused when there, else trained first and recorded).

``run`` writes benchmarks/results/binarization_vit[-limit<N>][-<part>].json after every run
and skips runs already in any of them, so a killed benchmark resumes; one thread per process.
``time`` trains every method x model for one epoch on ``--limit`` images and suggests the
epochs that fit (benchmarks/results/binarization_vit_timing.json), from which EPOCHS was chosen.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from binaryvit import BY_KEY, EPOCHS as TEACHER_EPOCHS, StepClock, one_run, teacher_dir
from common import (add_run_arguments, checkpoint_complete, command_parser, competitive_claim,
                    dispatch, hours_per_seed, load_results, machine, merged_results, method_table,
                    resume_results, save_results, seconds_per_seed, suite_section)

from edgecompress.analysis.diagnostics import DEFAULT_EDGES
from edgecompress.quantizers import METHODS

MODELS = {"binary-deit": "binary DeiT", "binaryvit": "BinaryViT"}  # binaryvit.py row keys
TEACHER = "teacher-resnet20"
SEEDS = (0, 1)
#: epochs of every student. ``time`` on 2026-12-06 at load average ~9.5 on the two cores
#: (other benchmarks and tests beside it) measured 2,392 s for one epoch of the 14 student runs
#: of a seed and 49 s per teacher epoch, suggesting 2 epochs at that load; binaryvit.py's timing
#: found such a load about 2x slower than a process alone on a core, where 5 epochs take about
#: 5 x 1,200 + 490 s = 1.8 h per process. Re-run ``time`` on a quieter machine to re-check.
EPOCHS = 5
REDUCED = (
    "{epochs} epochs per student instead of binaryvit.py's {teacher} (its float ResNet-20 "
    "teachers are reused as they are: {teacher} epochs), the rest as in docs/binaryvit.md: the "
    "CIFAR-10 subset (first 4,000 train / first 1,000 test 32x32 images) instead of "
    "ImageNet-1k at 224x224, batch 128 instead of 512, the *mini* model sizes (binary DeiT: "
    "dim 64, depth 6, 2 heads, 8x8 tokens; BinaryViT: dims 32/64/128/128, depths 1/1/2/1, "
    "tokens 16/8/4/2) instead of the paper's, a float ResNet-20 teacher trained on the same "
    "data instead of an ImageNet model")


def student(model: str, method: str):
    """binaryvit.py's row ``model`` with ``method`` as its weight quantizer."""
    row = BY_KEY[model]
    return dataclasses.replace(row, model={**row.model, "weight_method": method})


def train(model: str, method: str | None, seed: int, epochs: int, teacher_epochs: int,
          limit: int | None, work: Path, data_root: str, callbacks: tuple = ()) -> dict[str, Any]:
    """One run: binaryvit.py's float ResNet-20 teacher (``method`` None; its checkpoint goes to
    ``work``, where binaryvit.py's own runs find it too), or ``model`` with ``method`` distilled
    from the teacher of ``teacher_epochs`` (trained first if its checkpoint is missing)."""
    if method is None:
        # binaryvit.py's run of the same teacher, when its checkpoint is still in ``work``
        ablation = merged_results("binaryvit", limit).get(f"{TEACHER}|{seed}")
        if (ablation is not None and ablation.get("epochs") == teacher_epochs
                and checkpoint_complete(teacher_dir(work, TEACHER, seed, teacher_epochs, limit)
                                        / "checkpoint.pt", teacher_epochs)):
            return {**ablation, "method": None}
        return {**one_run(BY_KEY[TEACHER], seed, teacher_epochs, limit, work, data_root,
                          callbacks), "method": None}
    return {**one_run(student(model, method), seed, epochs, limit, work, data_root, callbacks,
                      teacher_epochs), "method": method}


def cmd_run(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    name, done, results = resume_results("binarization_vit", args.limit, args.part)
    for seed in args.seeds:
        jobs = [("teacher", None)] + [(m, method) for method in METHODS for m in MODELS]
        for model, method in jobs:
            key = f"{model}|{method}|{seed}" if method else f"{TEACHER}|{seed}"
            if key in done or key in results:
                continue
            results[key] = train(model, method, seed, args.epochs, args.teacher_epochs,
                                 args.limit, Path(args.work), args.data_root)
            save_results(name, results)
            r = results[key]
            print(f"[binarization_vit] {key}: top-1 {r['top1']:.2f} ({r['seconds']:.0f} s)",
                  flush=True)


def cmd_time(args: argparse.Namespace) -> None:
    """Per-epoch time of every method x model from a 1-epoch run on ``--limit`` images, scaled
    to binaryvit.py's 4,000 / 1,000 images; then the student epochs that fit ``--hours``."""
    torch.set_num_threads(1)
    out: dict[str, Any] = {"machine": machine(), "load_average": os.getloadavg(),
                           "limit": args.limit, "runs": {}}
    with tempfile.TemporaryDirectory() as work:
        clock = StepClock()  # the teacher first (one epoch, in the temporary folder)
        train(TEACHER, None, 0, 1, 1, args.limit, Path(work), args.data_root, (clock,))
        out["teacher_epoch_seconds"] = clock.epoch_seconds(args.limit)
        for method in METHODS:
            for model in MODELS:
                clock = StepClock()
                train(model, method, 0, 1, 1, args.limit, Path(work), args.data_root, (clock,))
                seconds = clock.epoch_seconds(args.limit)
                out["runs"][f"{model}|{method}"] = seconds
                print(f"{MODELS[model]:<12} {method:<12} epoch ~{seconds:6.1f} s", flush=True)
    total = sum(out["runs"].values())
    teacher = args.teacher_epochs * out["teacher_epoch_seconds"]
    seeds_per_process = len(SEEDS) / args.processes
    out["load_average_after"] = os.getloadavg()
    out["epoch_seconds_all"] = total
    out["suggested_epochs"] = int((args.hours * 3600 / seeds_per_process - teacher) / total)
    print(f"one epoch of every student: {total:.0f} s; teacher {teacher:.0f} s; "
          f"{len(SEEDS)} seeds on {args.processes} processes in {args.hours} h: "
          f"{out['suggested_epochs']} epochs")
    save_results("binarization_vit_timing", out)


def section(limit: int | None = None) -> list[str]:
    """The docs/binarization.md section of this benchmark (empty before any run)."""
    results = {k: r for k, r in merged_results("binarization_vit", limit).items()
               if k != "machine"}
    if not results:
        return []
    def listed(teachers: bool) -> str:
        return ", ".join(map(str, sorted({r["epochs"] for r in results.values()
                                          if (r["method"] is None) == teachers})))

    spec = {"title": "Binary DeiT and BinaryViT, W1A1, on the CIFAR-10 subset",
            "reduced": REDUCED.format(epochs=listed(False), teacher=listed(True))}
    lines = suite_section("###", spec, results, method_table(
        results, METHODS, "row", list(MODELS), list(MODELS.values()),
        reference="float ResNet-20 (the teacher)"))
    lines += [
        "", "The method binarizes the weights of every binary linear (q, k, v, projection, MLP, "
        "patch merging: `model.weight_method` of the recipes in recipes/binaryvit/, the "
        "mean-centred weights times their per-row scale); activations are BinaryViT's "
        "learnable-threshold sign with the ApproxSign backward for every method, the attention "
        "binary (q k^T on +-1, probabilities in {0, a}); stem, norms and classifier float. "
        "Students learn from the distillation loss only (kd alpha 1, temperature 1) against the "
        "float ResNet-20 teacher of their seed, with the binary ViTs' AdamW (lr 5e-4, no weight "
        "decay, cosine) for every method, not the CNN suites' Adam; the methods' schedules run "
        "over the student epochs as above. Top-1 of the deployed model (weights sign).", ""]
    lines += bnn_is_bc(results)
    for model, label in MODELS.items():
        claim = competitive_claim({m: [r["top1"] for r in results.values()
                                       if r["method"] == m and r["row"] == model]
                                   for m in METHODS}, "bnn++", label)
        lines += [claim] if claim else []
    lines += budget()
    lines += measured(results)
    lines += ["", "Regenerate: `python benchmarks/binarization_vit.py run --data-root "
              "<cifar10_subset directory> --seeds 0 --part s0` and, beside it, `--seeds 1 --part "
              "s1`, then `python benchmarks/binarization.py report`.", ""]
    return lines


def bnn_is_bc(results: dict[str, Any]) -> list[str]:
    """A note when bnn's runs equal bc's (same top-1 and train top-1 for every model and seed),
    with the reason read from bnn's latent-weight histograms: BNN's backward is BinaryConnect's
    times 1{|w| <= 1}, so the two train alike while no latent weight leaves [-1, 1]."""
    pairs = [(r, results.get(f"{r['row']}|bc|{r['seed']}")) for r in results.values()
             if r["method"] == "bnn"]
    if not pairs or any(bc is None or (bc["top1"], bc["train_top1"]) != (r["top1"],
                                                                          r["train_top1"])
                        for r, bc in pairs):
        return []
    hists = [r["latent_hist"] for r, _ in pairs if r.get("latent_hist")]
    if not hists:
        return []
    edges = DEFAULT_EDGES  # bins of 0.1 from -2 to 2; the end bins hold everything beyond
    outside = sum(c for h in hists for c, lo, hi in zip(h, edges[:-1], edges[1:])
                  if hi <= -1.0 or lo >= 1.0)
    total = sum(map(sum, hists))
    return ["", f"bnn and bc ran identically here (the same top-1 and train top-1 on every "
            f"model and seed): BNN's weight backward is BinaryConnect's times 1{{|w| <= 1}} "
            f"(Clip), and at the end of training {outside} of bnn's {total:,} latent weights "
            f"(over its {len(hists)} runs) lay outside [-1, 1]: the mean-centred latent weights "
            f"start small and stay inside at this budget, so Clip's derivative is 1 everywhere "
            f"and the two methods compute the same updates."]


def measured(results: dict[str, Any]) -> list[str]:
    """The hours the runs on record took, per seed (students and the teacher row)."""
    hours = hours_per_seed(seconds_per_seed(results.values()))
    return ["", f"Measured in the runs: {hours} (every student and the teacher; one process "
            "per seed, side by side on the two cores, partly beside other jobs)."]


def budget() -> list[str]:
    """Why the student epochs: the latest ``time`` measurement (nothing before one)."""
    t = load_results("binarization_vit_timing")
    if not t:
        return []
    slowest = max(t["runs"], key=t["runs"].get)
    return ["", f"Budget: the latest `python benchmarks/binarization_vit.py time` (each run one "
            f"epoch on {t['limit']} images, one thread, times scaled to 4,000 / 1,000 images; "
            f"load average {t['load_average'][0]:.1f} on the machine's cores) measured "
            f"{t['epoch_seconds_all']:.0f} s for one epoch of all 14 student runs of a seed "
            f"(slowest {slowest.replace('|', ' ')}: {t['runs'][slowest]:.0f} s) and "
            f"{t['teacher_epoch_seconds']:.0f} s per teacher epoch: {t['suggested_epochs']} "
            f"student epochs fit two seeds in two processes in 2 hours with the teachers at "
            f"that load; the default, {EPOCHS}, assumes processes alone on the cores, about 2x "
            f"faster than under a load average of 8 to 10. Machine: {t['machine']}."]


def cmd_section(args: argparse.Namespace) -> None:
    print("\n".join(section(args.limit)))


def main() -> None:
    parser, sub = command_parser(__doc__)
    p = sub.add_parser("run", help="train the teacher and every method x model, per seed "
                       "(resumable)")
    add_run_arguments(p, "binarization_vit", SEEDS, work="binaryvit",
                      work_help="where the teachers' checkpoints go (binaryvit.py's, shared)")
    p.add_argument("--epochs", type=int, default=EPOCHS, help="student epochs")
    p.add_argument("--teacher-epochs", type=int, default=TEACHER_EPOCHS)
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("time", help="estimate every run's time per epoch, suggest epochs")
    p.add_argument("--data-root", required=True)
    p.add_argument("--limit", type=int, default=384, help="images per timing run")
    p.add_argument("--teacher-epochs", type=int, default=TEACHER_EPOCHS)
    p.add_argument("--hours", type=float, default=2.0)
    p.add_argument("--processes", type=int, default=2)
    p.set_defaults(func=cmd_time)
    p = sub.add_parser("section", help="print this benchmark's section of docs/binarization.md "
                       "(python benchmarks/binarization.py report writes it there)")
    p.add_argument("--limit", type=int, help="the smoke results of run --limit N")
    p.set_defaults(func=cmd_section)
    dispatch(parser)


if __name__ == "__main__":
    main()
