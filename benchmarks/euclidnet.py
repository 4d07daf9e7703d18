"""EuclidNet benchmark: the CNN, EuclidNet from scratch, EuclidNet by homotopy from the trained
CNN and AdderNet, each float and 8-bit, >= 3 seeds, same data, model, optimizer and epochs for
every row, on ResNet-20 with the CIFAR-10 subset and on a small ConvNet with the bundled MNIST
subset; every trained model is also evaluated under the default input corruptions. Writes
docs/euclidnet.md (issue 13).

    python benchmarks/euclidnet.py run cifar --data-root ../shared/data/cifar10_subset \\
        --seeds 0 --part s0        # and --seeds 1 --part s1 beside it (two cores), then s2
    python benchmarks/euclidnet.py run mnist --seeds 0 --part s0   # s1, s2 likewise
    python benchmarks/euclidnet.py diagnose --data-root ../shared/data/cifar10_subset
    python benchmarks/euclidnet.py report

Rows (see ROWS): ``cnn`` the float model; ``euclid-scratch`` convert(model, "euclid", theta=1)
trained from random weights; ``euclid-homotopy`` the trained ``cnn`` of the same seed converted
with theta scheduled 0 -> 1 (linear per step, reaching 1 at half the run and held there) and
distilled from that CNN (kd alpha 0.5, temperature 4); ``euclid-homotopy-scaled`` the same
with ``weight_scale=WEIGHT_SCALE``; ``adder`` convert(model, "adder").
The 8-bit variant of a row is the same recipe with ``{name: uniform, bits: 8, activation_bits:
8}`` appended to its method chain (symmetric per-channel 8-bit weights, unsigned 8-bit inputs
with an LSQ-learned step), trained by quantization-aware training for the same epochs from the
same start (random weights, or the trained CNN for the homotopy); for AdderNet the adder layers'
forward and gradient rules act on the quantized weights and inputs (UniformAdderConv2d). First
and last layers stay float (the converters' default policy).

``run`` writes benchmarks/results/euclidnet_<suite>[-limit<N>][-<part>].json after every run and
skips runs already in any of those files, so a killed benchmark resumes; one thread per process.
``--limit N`` trains and tests on N images (a smoke test, its own file) and prints the time the
full run would take, scaled from the smoke run (train time by images x epochs, robustness time
by test images; an upper bound at tiny N). The full run's time is in ESTIMATE (about 1.9 h
per CIFAR seed on one core under load) and the report gives each seed's measured time.

``diagnose`` measures why Euclid layers at a CNN's weight scale learn little (the per-patch
1/2 ||x||^2 that every output channel shares, against the channel-specific part, and the weight
gradients against the CNN's) and sweeps ``weight_scale`` on the trained CNN of seed 0 (converted
at theta = 1, BatchNorm statistics re-estimated, no training): the rule picking WEIGHT_SCALE.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from common import (RESULTS, ROOT, add_run_arguments, command_parser, dispatch, hours_per_seed,
                    load_results, machine, mean_std, merged_results, resume_results, runs_line,
                    save_results, seconds_per_seed, train_and_record, train_checkpoint, write_doc)

from edgecompress import convert, models
from edgecompress import data as data_lib
from edgecompress.frozen import load_model
from edgecompress.layers import EuclidConv2d

from edgecompress.analysis import RobustnessResult, evaluate_robustness, plot_robustness
from edgecompress.analysis.robustness import RobustnessRow
from edgecompress.recipe import Recipe
from edgecompress.train import Callback, evaluate

DOC = ROOT / "docs" / "euclidnet.md"
SEEDS = (0, 1, 2)
#: theta of the homotopy rows: 0 (the CNN, exactly) to 1 (EuclidNet) linearly per training step,
#: reached at half the run, then the EuclidNet trains at theta = 1 for the other half
HOMOTOPY = {"kind": "linear", "start": 0.0, "end": 1.0, "per": "step", "ramp_fraction": 0.5}
#: distillation of the homotopy rows from the trained CNN: the library's defaults
DISTILL = {"alpha": 0.5, "temperature": 4.0}
UNIFORM8 = {"name": "uniform", "bits": 8, "activation_bits": 8}
#: weight_scale of the scaled homotopy rows: the smallest factor of ``diagnose``'s sweep whose
#: converted CNN (theta = 1, no training, BatchNorm statistics re-estimated) keeps >= KEEP of the
#: CNN's top-1 on the measured training images (CIFAR, seed 0; the report checks it)
WEIGHT_SCALE = 300.0
KEEP = 0.9
SWEEP = (1.0, 10.0, 30.0, 100.0, 300.0, 1000.0)
#: the same optimizer and schedule for every row (the ResNet-20 recipe's)
OPTIMIZER = {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 0.0005}
#: the full run's time, measured as the docstring says
ESTIMATE = (
    "Measured on 2026-12-07 on a 2-core AMD EPYC with AVX2 (no AVX-512), one thread per "
    "process, two or three processes (and a test run most of the time) on the 2 cores: one "
    "CIFAR seed of the ten rows took 1.8-1.9 h (CNN 0.09-0.15 h, CNN 8-bit 0.13-0.18 h, each "
    "Euclid row 0.10-0.22 h, AdderNet 0.23-0.36 h; robustness is 76-309 s of each run); the "
    "MNIST suite's measured time is in its section. Three CIFAR seeds are therefore about 5.6 "
    "core-hours, about 2.8 h on two cores: more than the two hours of the guide. To fit, cut "
    "the same thing for every row (the robustness images, or the 8-bit rows of the near-chance "
    "Euclid rows), or measure on a quiet machine"
)


@dataclass(frozen=True)
class Row:
    """One row: its method chain (before the 8-bit step), whether it starts from the trained CNN
    (and distils from it), and its bits (None: float)."""

    base: str
    label: str
    method: tuple[dict[str, Any], ...]
    homotopy: bool = False
    bits: int | None = None

    @property
    def key(self) -> str:
        return self.base + (f"-{self.bits}bit" if self.bits else "")

    def methods(self) -> list[dict[str, Any]] | None:
        chain = [dict(m) for m in self.method] + ([dict(UNIFORM8)] if self.bits else [])
        return chain or None


BASES = (
    Row("cnn", "CNN (multiplication)", ()),
    Row("euclid-scratch", "EuclidNet, from scratch (theta = 1)", ({"name": "euclid",
                                                                 "theta": 1.0},)),
    Row("euclid-homotopy", "EuclidNet, homotopy from the CNN (+ KD)",
        ({"name": "euclid", "theta": HOMOTOPY},), homotopy=True),
    Row("euclid-homotopy-scaled", f"EuclidNet, homotopy, weights x{WEIGHT_SCALE:g} (+ KD)",
        ({"name": "euclid", "theta": HOMOTOPY, "weight_scale": WEIGHT_SCALE},), homotopy=True),
    Row("adder", "AdderNet", ({"name": "adder"},)),
)
# the float rows first (a seed's float results come early), AdderNet (the slowest) last, its
# 8-bit row after its float one (added later: a resumed run keeps the older rows' order)
# (the scaled homotopy rows, added after the diagnosis, come after them all)
_OTHERS, _SCALED, _ADDER = BASES[:3], BASES[3], BASES[4]
ROWS = (_OTHERS + tuple(replace(r, bits=8) for r in _OTHERS)
        + (_ADDER, replace(_ADDER, bits=8), _SCALED, replace(_SCALED, bits=8)))
BY_KEY = {row.key: row for row in ROWS}

SUITES: dict[str, dict[str, Any]] = {
    "cifar": {
        "model": {"name": "resnet20"}, "data": {"name": "cifar10", "augment": True},
        "batch": 128, "epochs": 5, "train": 4000, "test": 1000, "needs_root": True,
        "title": "ResNet-20 on the CIFAR-10 subset (first 4,000 train / first 1,000 test "
                 "images, random crop + flip)",
        "reduced": "4,000 of the 50,000 training images and 1,000 of the 10,000 test images, "
                   "{epochs} epochs instead of the hundreds of the EuclidNet and AdderNet papers "
                   "(AdderNet: 400 on CIFAR-10), so every accuracy is far below the papers' "
                   "~90 %: compare rows, not absolutes",
    },
    "mnist": {
        "model": {"name": "convnet"}, "data": {"name": "mnist-bundled"},
        "batch": 100, "epochs": 4, "train": 6000, "test": 1000, "needs_root": False,
        "title": "ConvNet (3x3 convs 32-64-128 with BatchNorm, ReLU, max-pool; global pool, "
                 "linear) on the bundled MNIST subset (6,000 train / 1,000 test images)",
        "reduced": "the bundled 6,000 / 1,000-image subset instead of the 60,000 / 10,000 "
                   "images, and {epochs} epochs (chosen when an AdderNet epoch cost about ten "
                   "CNN epochs; on the C kernels it costs about one); with the first conv and "
                   "the classifier float, two of the three "
                   "convolutions are converted",
    },
}


def work_dir(work: Path, suite: str, row: Row, seed: int, epochs: int,
             limit: int | None) -> Path:
    return work / (f"{suite}-{row.key}-s{seed}-e{epochs}" + (f"-limit{limit}" if limit else ""))


def recipe_for(suite: str, row: Row, seed: int, epochs: int, limit: int | None = None,
               work: Path = Path()) -> Recipe:
    """The row's recipe: the suite's model, data, batch and the common optimizer; a homotopy
    row distils from the CNN of the same seed (its checkpoint in ``work``)."""
    spec = SUITES[suite]
    raw: dict[str, Any] = {
        "name": f"euclidnet-{suite}-{row.key}", "model": dict(spec["model"]),
        "data": {**spec["data"], **({"limit": limit} if limit else {})},
        "method": row.methods(), "optimizer": dict(OPTIMIZER), "schedule": {"name": "cosine"},
        "epochs": epochs, "batch_size": spec["batch"], "seed": seed,
    }
    if row.homotopy:  # starts from the CNN's weights (head included) and distils from it
        cnn = str(teacher_checkpoint(work, suite, seed, epochs, limit))
        raw["pretrained"] = {"checkpoint": cnn, "reset_head": False}
        raw["distill"] = {"teacher": cnn, **DISTILL}
    return Recipe.from_dict(raw, f"euclidnet {suite} {row.key}")


def teacher_checkpoint(work: Path, suite: str, seed: int, epochs: int,
                       limit: int | None) -> Path:
    return work_dir(work, suite, BY_KEY["cnn"], seed, epochs, limit) / "checkpoint.pt"


class Robustness(Callback):
    """Evaluates the trained model under every default corruption, after the last epoch."""

    def on_fit_end(self, trainer: Any, metrics: dict[str, Any]) -> None:
        began = time.perf_counter()
        result = evaluate_robustness(trainer.model, trainer.test_set,
                                     batch_size=trainer.config.eval_batch_size,
                                     device=trainer.device, seed=0)
        self.result, self.seconds = result.to_dict(), time.perf_counter() - began


def one_run(suite: str, row: Row, seed: int, epochs: int, limit: int | None, work: Path,
            data_root: str | None) -> dict[str, Any]:
    """Train one row (for a homotopy row, the CNN of the same seed first if its checkpoint is
    missing), evaluate its robustness, return its record. The CNN keeps its checkpoint."""
    start = teacher_checkpoint(work, suite, seed, epochs, limit)
    if row.homotopy:
        train_checkpoint(recipe_for(suite, BY_KEY["cnn"], seed, epochs, limit, work), data_root,
                         start.parent)
    robustness = Robustness()
    out = start.parent if row.key == "cnn" else None
    record = train_and_record(recipe_for(suite, row, seed, epochs, limit, work), data_root, out,
                              (robustness,), suite=suite, row=row.key, base=row.base,
                              bits=row.bits, epochs=epochs, limit=limit)
    record["train_seconds"] = record["seconds"] - robustness.seconds
    record.update(robustness=robustness.result, robustness_seconds=robustness.seconds)
    return record


def full_seconds(suite: str, runs: list[dict[str, Any]], epochs: int) -> float:
    """One seed's time at the full budget (``epochs`` on the suite's images), scaled from smoke
    runs: training by images x epochs, robustness by test images."""
    spec = SUITES[suite]
    total = 0.0
    for r in runs:
        images = min(r["limit"], spec["train"])
        total += r["train_seconds"] * spec["train"] / images * epochs / r["epochs"]
        total += r["robustness_seconds"] * spec["test"] / min(r["limit"], spec["test"])
    return total


def cmd_run(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    spec = SUITES[args.suite]
    if spec["needs_root"] and not args.data_root:
        raise SystemExit(f"suite {args.suite!r} reads its images from --data-root (e.g. "
                         f"../shared/data/cifar10_subset)")
    epochs = args.epochs or spec["epochs"]
    base = f"euclidnet_{args.suite}"
    name, done, results = resume_results(base, args.limit, args.part, epochs)
    rows = [BY_KEY[k] for k in args.rows] if args.rows else ROWS
    for seed in args.seeds:
        for row in rows:
            key = f"{row.key}|{seed}"
            if key in done or key in results:
                continue
            results[key] = one_run(args.suite, row, seed, epochs, args.limit, Path(args.work),
                                   args.data_root)
            save_results(name, results)
            r = results[key]
            print(f"[euclidnet {args.suite}] {key}: top-1 {r['top1']:.2f}, train "
                  f"{r['train_seconds']:.0f} s, robustness {r['robustness_seconds']:.0f} s",
                  flush=True)
    if args.limit:
        runs = [r for k, r in results.items() if k != "machine" and r["seed"] == args.seeds[0]]
        seconds = full_seconds(args.suite, runs, spec["epochs"])
        print(f"[euclidnet {args.suite}] full budget ({spec['epochs']} epochs, "
              f"{spec['train']} / {spec['test']} images), scaled from this smoke run: "
              f"{seconds / 3600:.2f} h per seed on one core", flush=True)


# --- diagnose ----------------------------------------------------------------------------------

DIAGNOSIS = "euclidnet_diagnose"


def _batches(dataset: Any, size: int = 200) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader = torch.utils.data.DataLoader(dataset, batch_size=size, shuffle=False)
    return [(x, y) for x, y in loader]


def _recalibrate(model: torch.nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Re-estimate every BatchNorm's running statistics on ``batches`` (cumulative average)."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        for x, _ in batches:
            model(x)


def layer_shares(cnn: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[dict[str, Any]]:
    """Per converted layer of ``convert(cnn, "euclid")`` (same weights), on one batch in train
    mode: its ``shared_ratio`` on its input (what the library's warning measures), and its
    weight gradient's norm over the CNN layer's."""
    euclid = convert(copy.deepcopy(cnn), "euclid", theta=1.0)
    inputs: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: inputs.__setitem__(n, i[0].detach()))
             for n, m in euclid.named_modules() if isinstance(m, EuclidConv2d)]
    grads = {}
    for name, model in (("cnn", copy.deepcopy(cnn)), ("euclid", euclid)):
        model.train()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        grads[name] = {n: p.grad.norm().item() for n, p in model.named_parameters()
                       if n.endswith("weight") and p.dim() == 4}
    for h in hooks:
        h.remove()
    return [{"layer": name, "shared_ratio": euclid.get_submodule(name).shared_ratio(inp),
             "grad_ratio": grads["euclid"][f"{name}.weight"] / grads["cnn"][f"{name}.weight"]}
            for name, inp in inputs.items()]


def cmd_diagnose(args: argparse.Namespace) -> None:
    """Why the Euclid rows stay near chance, measured on the CIFAR suite's seed-0 models: the
    shared per-patch term at initialization, and the weight-scale sweep on the trained CNN."""
    torch.set_num_threads(1)
    if not args.data_root:
        raise SystemExit("diagnose reads the CIFAR-10 subset from --data-root (e.g. "
                         "../shared/data/cifar10_subset)")
    spec, seed, work = SUITES["cifar"], 0, Path(args.work)
    checkpoint = teacher_checkpoint(work, "cifar", seed, spec["epochs"], None)
    train_checkpoint(recipe_for("cifar", BY_KEY["cnn"], seed, spec["epochs"], None, work),
                     args.data_root, checkpoint.parent)
    train_set = data_lib.load("cifar10", root=args.data_root, split="train", limit=args.images)
    test_set = data_lib.load("cifar10", root=args.data_root, split="test")
    train = _batches(train_set)
    torch.manual_seed(seed)
    fresh = models.create("resnet20", num_classes=10, input_shape=(3, 32, 32))
    x, y = train[0]
    trained = load_model(checkpoint)
    result: dict[str, Any] = {
        "machine": machine(), "seed": seed, "images": args.images, "batch": len(y),
        "init": layer_shares(fresh, x, y), "trained": layer_shares(trained, x, y),
        "cnn": {"train_top1": evaluate(trained, train_set)["top1"],
                "test_top1": evaluate(trained, test_set)["top1"]},
        "sweep": []}
    for scale in SWEEP:
        euclid = convert(copy.deepcopy(trained), "euclid", theta=1.0, weight_scale=scale)
        _recalibrate(euclid, train)
        result["sweep"].append({"weight_scale": scale,
                                "train_top1": evaluate(euclid, train_set)["top1"],
                                "test_top1": evaluate(euclid, test_set)["top1"]})
        print(f"[euclidnet diagnose] weight_scale {scale:g}: {result['sweep'][-1]}", flush=True)
    result["chosen"] = chosen_scale(result)
    save_results(DIAGNOSIS, result)
    print(f"[euclidnet diagnose] chosen weight_scale {result['chosen']} (rows use "
          f"{WEIGHT_SCALE:g})", flush=True)


def diagnosis_section() -> list[str]:
    """What ``diagnose`` measured, if it has been run."""
    result = load_results(DIAGNOSIS)
    if not result:
        return []

    def spread(rows: list[dict[str, Any]], key: str) -> str:
        values = [r[key] for r in rows]
        return f"{min(values):.3g} to {max(values):.3g}"

    chosen = result["chosen"]
    check = ("the rows' `weight_scale` is this value" if chosen == WEIGHT_SCALE else
             f"**the rows use {WEIGHT_SCALE:g}: rerun them**")
    lines = [
        "## Why the Euclid rows stay near chance: the shared per-patch term", "",
        "Generated by `python benchmarks/euclidnet.py diagnose --data-root "
        "../shared/data/cifar10_subset` (CIFAR suite, seed 0; "
        f"{result['machine']}). At theta = 1 a Euclid layer outputs x.w - 1/2 ||x||^2 - "
        "1/2 ||w||^2 + b. The per-patch 1/2 ||x||^2 is the same for every output channel but "
        "varies from patch to patch, so the BatchNorm after the layer cannot remove it; beside "
        "it, x.w with weights at a CNN's scale is small. Measured per converted layer on one "
        f"batch of {result['batch']} training images in train mode (`shared_ratio`, as the "
        "library's warning: the spread of the output's channel mean, shared by all channels, "
        "over the spread of the rest, each channel's mean removed first; and the weight "
        "gradient's norm over the CNN layer's with the same weights):", "",
        "| weights | shared / channel-specific spread | Euclid / CNN weight-gradient norm |",
        "|---|---:|---:|",
        *[f"| {label} | {spread(result[k], 'shared_ratio')} | "
          f"{spread(result[k], 'grad_ratio')} |"
          for k, label in (("init", "ResNet-20 at init (kaiming)"),
                           ("trained", "the trained CNN (seed 0)"))], "",
        "So after BatchNorm every channel of a Euclid layer is nearly the same map (the "
        "library now warns about such layers on a converted model's first forward, "
        "`MeaninglessInputWarning`), and its weights learn tens to thousands of times more "
        "slowly than the CNN's: at this budget the from-scratch and homotopy rows stay near "
        "chance. Scaling the weights by alpha (`convert(model, \"euclid\", weight_scale=alpha)`, "
        "our reading; before a BatchNorm it leaves the product layer's function unchanged) "
        "makes x.w dominate. The trained CNN converted at theta = 1 with each alpha, no "
        f"training, BatchNorm statistics re-estimated on {result['images']} training images:",
        "", "| weight_scale | top-1, those training images | top-1, test |", "|---:|---:|---:|",
        f"| CNN (products) | {result['cnn']['train_top1']:.1f} | "
        f"{result['cnn']['test_top1']:.1f} |",
        *[f"| {r['weight_scale']:g} | {r['train_top1']:.1f} | {r['test_top1']:.1f} |"
          for r in result["sweep"]], "",
        f"Rule: the smallest swept alpha keeping >= {KEEP:.0%} of the CNN's top-1 on the "
        f"training images: **{chosen:g}** ({check}); the rows \"homotopy, weights x"
        f"{WEIGHT_SCALE:g}\" use it. The price is weights about that many times further from "
        "the inputs than the activations' own scale: a fixed-point squared-difference unit "
        "would need one number format covering both.", ""]
    return lines


def chosen_scale(result: dict[str, Any]) -> float | None:
    """The smallest swept weight_scale keeping >= KEEP of the CNN's training-image top-1."""
    bar = KEEP * result["cnn"]["train_top1"]
    return next((r["weight_scale"] for r in result["sweep"] if r["train_top1"] >= bar), None)


# --- report ------------------------------------------------------------------------------------

def _stats(values: list[float]) -> tuple[float, float]:
    mean = statistics.mean(values) if values else float("nan")
    return mean, statistics.stdev(values) if len(values) > 1 else float("nan")


def mean_drop(record: dict[str, Any]) -> float:
    """Clean top-1 minus the mean top-1 over every corruption setting (points)."""
    rob = record["robustness"]
    return rob["clean"]["top1"] - statistics.mean(r["top1"] for r in rob["rows"])


def family_drops(record: dict[str, Any]) -> dict[str, float]:
    """Per family: clean top-1 minus its mean top-1 over the family's severities."""
    rob = record["robustness"]
    fams = dict.fromkeys(r["family"] for r in rob["rows"])
    return {f: rob["clean"]["top1"] - statistics.mean(r["top1"] for r in rob["rows"]
                                                      if r["family"] == f) for f in fams}


def mean_curves(records: list[dict[str, Any]]) -> RobustnessResult:
    """The seeds' robustness results averaged setting by setting (for the plot)."""
    robs = [r["robustness"] for r in records]
    rows = [RobustnessRow(first["family"], first["severity"], first["unit"],
                          statistics.mean(rob["rows"][i]["top1"] for rob in robs),
                          statistics.mean(rob["rows"][i]["loss"] for rob in robs))
            for i, first in enumerate(robs[0]["rows"])]
    return RobustnessResult(statistics.mean(rob["clean"]["top1"] for rob in robs),
                            statistics.mean(rob["clean"]["loss"] for rob in robs),
                            robs[0]["samples"], robs[0]["seed"], rows)


#: claim (a): "close to the CNN" allows this many points below the CNN's mean top-1
CLOSE = 1.0
#: claim (c): "robust like the CNN" allows the mean drop under corruptions to exceed the CNN's
#: by this many points
ROBUST = 2.0
#: top-1 of guessing (both suites have 10 classes): claim (c) is judged only for a model whose
#: top-1 is at least half the CNN's margin above it
CHANCE = 10.0
RULES = (
    "Verdicts, from the per-seed numbers. The spread of a comparison is the larger of the two "
    "standard deviations over seeds. (a) *close to the CNN*: gap = mean(CNN) - mean(EuclidNet); "
    f"**holds** if gap <= max({CLOSE:g}, spread), **not reproduced** if gap > {CLOSE:g} + "
    f"spread, **inconclusive** in between. {CLOSE:g} point is the gap the papers' CIFAR-10 "
    "comparisons call close (EuclidNet within about a point of the same CNN); a gap the seeds "
    "cannot resolve (within the spread) is close too. (b) *above AdderNet*: gap = "
    "mean(EuclidNet) - mean(AdderNet); **holds** if gap > spread, **not reproduced** if gap < "
    "-spread, **inconclusive** otherwise. (c) *robust like the CNN*: a model's drop is its clean "
    "top-1 minus its mean top-1 over every default corruption setting (5 families, 22 "
    "settings); excess = mean drop(EuclidNet) - mean drop(CNN); **holds** if excess <= "
    f"max({ROBUST:g}, spread of the drops), **not reproduced** if excess > {ROBUST:g} + spread, "
    f"**inconclusive** in between. {ROBUST:g} points is a margin for \"degrades like the "
    "multiplication network\": small against the drops themselves (tens of points at the "
    "strongest settings), larger than the seed-to-seed noise of 1,000 test images "
    "(about 1.5 points of standard error at 70 %). (c) is judged only for a model whose mean "
    f"top-1 is above chance ({CHANCE:g} %) by at least half the CNN's margin over chance: a "
    "model near chance has little accuracy to lose, so its small drop would not show "
    "robustness.")


EUCLID_KEYS = ("euclid-scratch", "euclid-homotopy", "euclid-homotopy-scaled")


def verdicts(suite: str, records: dict[str, list[dict[str, Any]]]) -> list[str]:
    def top1(key: str) -> list[float]:
        return [r["top1"] for r in records.get(key, [])]

    out = []
    cnn_mean, cnn_std = _stats(top1("cnn"))
    for key in EUCLID_KEYS:
        label = BY_KEY[key].label
        mine = top1(key)
        if len(mine) < 2 or len(top1("cnn")) < 2:
            continue
        mean, std = _stats(mine)
        gap, spread = cnn_mean - mean, max(std, cnn_std)
        word = ("holds" if gap <= max(CLOSE, spread) else "not reproduced"
                if gap > CLOSE + spread else "inconclusive")
        out.append(f"- (a) {label} close to the CNN: **{word}** ({mean:.2f} vs {cnn_mean:.2f}: "
                   f"{gap:.2f} points below, spread {spread:.2f}).")
        if len(top1("adder")) >= 2:
            a_mean, a_std = _stats(top1("adder"))
            gap, spread = mean - a_mean, max(std, a_std)
            word = ("holds" if gap > spread else "not reproduced" if gap < -spread
                    else "inconclusive")
            out.append(f"- (b) {label} above AdderNet: **{word}** ({mean:.2f} vs {a_mean:.2f}: "
                       f"{gap:+.2f} points, spread {spread:.2f}).")
        if mean - CHANCE < 0.5 * (cnn_mean - CHANCE):
            out.append(f"- (c) {label} robust like the CNN: **not judged** (top-1 {mean:.2f} is "
                       f"within half the CNN's margin of chance, {CHANCE:g} %: too little "
                       f"accuracy to lose).")
            continue
        drops, cnn_drops = ([mean_drop(r) for r in records[k]] for k in (key, "cnn"))
        (d, ds), (c, cs) = _stats(drops), _stats(cnn_drops)
        excess, spread = d - c, max(ds, cs)
        word = ("holds" if excess <= max(ROBUST, spread) else "not reproduced"
                if excess > ROBUST + spread else "inconclusive")
        out.append(f"- (c) {label} robust like the CNN: **{word}** (mean drop {d:.2f} vs the "
                   f"CNN's {c:.2f}: {excess:+.2f} points, spread {spread:.2f}).")
    return out


def accuracy_table(records: dict[str, list[dict[str, Any]]]) -> list[str]:
    lines = ["| row | float | 8-bit (W8A8) | s / epoch, float (train + test) |",
             "|---|---:|---:|---:|"]
    for row in BASES:
        floats = records.get(row.key, [])
        eight = records.get(f"{row.base}-8bit", [])
        secs = [r["train_seconds"] / r["epochs"] for r in floats]
        lines.append(f"| {row.label} | {mean_std([r['top1'] for r in floats])} | "
                     f"{mean_std([r['top1'] for r in eight])} | "
                     f"{f'{statistics.mean(secs):.0f}' if secs else '-'} |")
    return lines


def robustness_table(records: dict[str, list[dict[str, Any]]]) -> list[str]:
    keys = [row.key for row in ROWS if records.get(row.key)]
    fams = list(family_drops(records[keys[0]][0]))
    lines = ["| row | clean top-1 | " + " | ".join(f"drop: {f}" for f in fams)
             + " | mean drop |", "|---|" + "---:|" * (len(fams) + 2)]
    for key in keys:
        rs = records[key]
        cells = [mean_std([family_drops(r)[f] for r in rs]) for f in fams]
        lines.append(f"| {BY_KEY[key].label}{' 8-bit' if BY_KEY[key].bits else ''} | "
                     f"{mean_std([r['robustness']['clean']['top1'] for r in rs])} | "
                     + " | ".join(cells) + f" | {mean_std([mean_drop(r) for r in rs])} |")
    return lines


def speed_section() -> list[str]:
    """The layer speed table of benchmarks/euclidnet_speed.py, if it has been run."""
    path = next((RESULTS / f"{n}.json" for n in ("euclidnet_speed", "euclidnet_speed_quick")
                 if (RESULTS / f"{n}.json").is_file()), None)
    if path is None:
        return []
    data = json.loads(path.read_text())
    layers = [x for x in ("euclid", "euclid-frozen", "euclid-naive", "adder", "adder-frozen",
                          "adder-naive")
              if any(r["layer"] == x for r in data["rows"])]
    cell = {(r["batch"], r["channels"], r["hw"], r["mode"], r["layer"]): r for r in data["rows"]}
    settings = list(dict.fromkeys((r["batch"], r["channels"], r["hw"], r["mode"])
                                  for r in data["rows"]))
    lines = ["## Layer speed", "",
             f"From `{path.relative_to(ROOT)}` (`python benchmarks/euclidnet_speed.py"
             f"{' --quick' if path.stem.endswith('quick') else ''}`): one "
             f"3x3 layer at ResNet-20's shapes, {data['rounds']} interleaved rounds (the order "
             f"reversed every other round"
             + (f"; each layer called until nn.Conv2d's calls of a round last "
                f"{data['min_ms']:g} ms, at least {data['calls']} calls"
                if "min_ms" in data else "") +
             f"), each layer's time over nn.Conv2d's in the same round, "
             f"median over rounds (training step: forward + backward to input and weights; "
             f"inference: forward without gradients; the frozen forms are inference only, "
             f"`-` elsewhere; the naive forms are timed in a run of their own against "
             f"nn.Conv2d, as their large tensors cool the caches). Targets: EuclidConv2d training <= 1.2x, inference <= 1.1x. "
             f"Machine: {data['machine']}"
             + (f", load average {data['load_average'][0]:.1f} at the end"
                if "load_average" in data else "") + ".", "",
             "| batch | channels x size | mode | conv (ms) | " + " | ".join(layers) + " |",
             "|---:|---|---|---:|" + "---:|" * len(layers)]
    for b, c, hw, mode in settings:
        conv = cell[(b, c, hw, mode, "conv")]["ms"]
        ratios = [f"{cell[(b, c, hw, mode, x)]['ratio_vs_conv']:.2f}x"
                  if (b, c, hw, mode, x) in cell else "-" for x in layers]
        lines.append(f"| {b} | {c} x {hw}x{hw} | {mode} | {conv:.2f} | " + " | ".join(ratios)
                     + " |")
    return lines + [""] + speed_verdicts(data["rows"]) + [""]


def speed_verdicts(rows: list[dict[str, Any]]) -> list[str]:
    """Per batch, the worst ratio over the shapes of the Euclid training step (target <= 1.2x)
    and of Euclid inference in its deployed (frozen) form (target <= 1.1x), met or not, judged
    on the table's two decimals."""
    lines = []
    for batch in sorted({r["batch"] for r in rows}):
        parts = []
        for mode, layer, target in (("train", "euclid", 1.2), ("inference", "euclid-frozen", 1.1)):
            ratios = [r["ratio_vs_conv"] for r in rows
                      if r["batch"] == batch and r["mode"] == mode and r["layer"] == layer]
            if ratios:
                worst = round(max(ratios), 2)
                parts.append(f"{mode} (`{layer}`) worst {worst:.2f}x: target <= {target}x "
                             f"**{'met' if worst <= target else 'not met'}**")
        lines.append(f"- Batch {batch}: " + "; ".join(parts) + ".")
    return lines


def cmd_report(args: argparse.Namespace) -> None:
    """docs/euclidnet.md and its plots; with ``--limit``, the smoke results' report and plots
    under runs/euclidnet/report-limit<N>/ instead (docs/ keeps the real numbers only)."""
    doc = DOC if not args.limit else ROOT / "runs" / "euclidnet" / f"report-limit{args.limit}" \
        / "euclidnet.md"
    img = doc.parent / "img"
    lines = [
        "# EuclidNet: accuracy and robustness against the CNN and AdderNet", "",
        "Generated by `python benchmarks/euclidnet.py report` from benchmarks/results/"
        "euclidnet_<suite>*.json (spec `euclidnet.md`, issue 13). Rows, each with the seeds listed "
        "per suite (three when complete) on the same data, model, optimizer (SGD lr 0.1, momentum 0.9, weight decay 5e-4, cosine), "
        "batch and epochs:", "",
        "- **CNN**: the float model with multiplications.",
        "- **EuclidNet, from scratch**: `convert(model, \"euclid\", theta=1.0)` (every conv and "
        "linear layer but the first and last computes -1/2 ||x - w||^2 + b), random weights.",
        "- **EuclidNet, homotopy**: the trained CNN of the same seed, converted with theta "
        f"scheduled `{HOMOTOPY}` (x.w - theta/2 (||x||^2 + ||w||^2): the CNN exactly at 0, the "
        "EuclidNet at 1, linear per step, reaching 1 at half the run and held there; our "
        "reading), and distilled from that CNN (kd alpha "
        f"{DISTILL['alpha']}, temperature {DISTILL['temperature']:g}: the library's defaults). "
        "The default is distillation on, the papers' teacher-student + homotopy. These rows "
        "start from a trained model, so in total they have seen twice the epochs of the others.",
        f"- **EuclidNet, homotopy, weights x{WEIGHT_SCALE:g}**: the homotopy row with "
        f"`weight_scale={WEIGHT_SCALE:g}` (the converted weights and biases times "
        f"{WEIGHT_SCALE:g}: the CNN's function unchanged at theta = 0, since BatchNorm follows "
        "each converted layer; at theta = 1, x.w outweighs the per-patch 1/2 ||x||^2 that every "
        "channel shares; our reading, chosen by the rule of the diagnosis section below).",
        "- **AdderNet**: `convert(model, \"adder\")` (-sum |x - w| + b, full-precision weight "
        "gradient, HardTanh input gradient, adaptive learning-rate scaling eta 0.2), random "
        "weights.",
        "- **8-bit**: the row's method chain followed by `{name: uniform, bits: 8, "
        "activation_bits: 8}` (8-bit symmetric per-channel weights, 8-bit unsigned inputs with "
        "an LSQ-learned step), trained by quantization-aware training for the same epochs from "
        "the same start. For AdderNet the adder layers' forward, gradient rules and adaptive "
        "scaling act on the quantized weights and inputs, the quantizers' straight-through "
        "estimators carry the gradients to the float ones.",
        "", "Top-1 is on the test images, mean ± standard deviation over seeds.", "",
    ]
    all_regen = []
    for suite, spec in SUITES.items():
        results = merged_results(f"euclidnet_{suite}", args.limit)
        runs = [r for k, r in results.items() if k != "machine"]
        root = " --data-root ../shared/data/cifar10_subset" if spec["needs_root"] else ""
        all_regen.append(f"`python benchmarks/euclidnet.py run {suite}{root} --seeds 0 "
                         f"--part s0` (and `--seeds 1 --part s1`, `--seeds 2 --part s2`, two "
                         f"at a time)")
        if not runs:
            continue
        records = {row.key: sorted((r for r in runs if r["row"] == row.key),
                                   key=lambda r: r["seed"]) for row in ROWS}
        records = {k: v for k, v in records.items() if v}
        epochs = sorted({r["epochs"] for r in runs})
        seeds = sorted({r["seed"] for r in runs})
        lines += [f"## {spec['title']}", "",
                  f"Seeds {', '.join(map(str, seeds))}; {', '.join(map(str, epochs))} epochs. "
                  f"Reduced compared with the papers: "
                  f"{spec['reduced'].format(epochs=', '.join(map(str, epochs)))}.", "",
                  *accuracy_table(records), "",
                  "Robustness: top-1 drop (clean minus corrupted, points, mean over the family's "
                  "default severities) under the default corruptions of `edgecompress "
                  "robustness` (noise sigma 0.05-0.5, brightness +0.1-0.4, contrast reduction "
                  "0.2-0.8, rotation 5-30 degrees, translation 1-4 pixels), on every test "
                  "image, noise seed 0.", "", *robustness_table(records), ""]
        curves = {BY_KEY[k].label: mean_curves(records[k]) for k in
                  ("cnn", *EUCLID_KEYS, "adder") if k in records}
        if curves:
            name = f"euclidnet_robustness_{suite}.png"
            plot_robustness(img / name, curves, f"{spec['title'].split(' (')[0]}: top-1 under "
                            f"corruptions (mean over seeds)")
            lines += [f"![robustness {suite}](img/{name})", ""]
        lines += verdicts(suite, records) + [""]
        lines += [runs_line(results) + f" Measured time per seed (training and robustness, "
                  f"one thread each): {hours_per_seed(seconds_per_seed(runs))}.", ""]
    lines += [RULES, ""]
    lines += diagnosis_section()
    lines += speed_section()
    lines += ["## Budget", "", ESTIMATE + ".", "",
              "## Regenerate", "", *[f"- {c}" for c in all_regen],
              "- then `python benchmarks/euclidnet.py report` (and `python "
              "benchmarks/euclidnet_speed.py` for the speed table).", ""]
    write_doc(doc, lines)


def main() -> None:
    parser, sub = command_parser(__doc__)
    p = sub.add_parser("run", help="train every row x seed of a suite (resumable)")
    p.add_argument("suite", choices=sorted(SUITES))
    add_run_arguments(p, "euclidnet_<suite>", SEEDS,
                      data_root_help="the suite's data (cifar: the CIFAR-10 subset)",
                      limit_help="train and test on this many images only (a smoke test: its "
                      "own results file, and the full run's time estimated from it)",
                      work="euclidnet", work_help="where the CNNs' checkpoints go (the homotopy "
                      "rows start from them)")
    p.add_argument("--rows", nargs="+", choices=list(BY_KEY),
                   help="only these rows (a homotopy row trains its CNN when it is missing)")
    p.add_argument("--epochs", type=int, help="epochs of every row (default: the suite's)")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("diagnose", help="measure the shared per-patch term and the weight-scale "
                       "sweep (CIFAR, seed 0; to benchmarks/results/euclidnet_diagnose.json)")
    p.add_argument("--data-root", help="the CIFAR-10 subset")
    p.add_argument("--images", type=int, default=1000,
                   help="training images for BatchNorm re-estimation and train top-1")
    p.add_argument("--work", default=str(ROOT / "runs" / "euclidnet"),
                   help="where the CNNs' checkpoints are (trained when missing)")
    p.set_defaults(func=cmd_diagnose)
    p = sub.add_parser("report", help="write docs/euclidnet.md and its plots")
    p.add_argument("--limit", type=int, help="report the smoke results of run --limit N (to "
                   "runs/euclidnet/report-limit<N>/euclidnet.md)")
    p.set_defaults(func=cmd_report)
    dispatch(parser)


if __name__ == "__main__":
    main()
