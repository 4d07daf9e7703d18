"""Transfer-learning benchmark (DenseShift's claims): a float model pretrained on one task,
converted to 3-bit power-of-two weights and fine-tuned on another, vs the float model
fine-tuned the same way; >= 3 seeds on two settings; writes docs/transfer.md.

    python benchmarks/transfer.py run cifar --data-root ../shared/data/cifar10_subset \\
        --part cifar          # and beside it, on the second core:
    python benchmarks/transfer.py run speech --data-root ../shared/data/fsdd --part speech
    python benchmarks/transfer.py report

Settings: ``cifar``, ResNet-20 pretrained on CIFAR-10 subset classes 0-4, transferred to classes
5-9 (labels 0-4); ``speech``, kws-resnet pretrained on the spoken digits of three FSDD speakers,
transferred to the other three (a new head for the same ten digits). For each seed the float
source model is trained first (its checkpoint goes to ``--work``), then every row starts from
it through the recipe's ``pretrained:`` entry (all weights but the head's; a new head), is
converted by its method and fine-tuned with the same budget.

``run`` writes benchmarks/results/transfer[-limit<N>][-<part>].json after every run and skips
runs already in any of them (read again before each run), so a killed benchmark resumes; one
thread per process. Processes side by side on one seed (its source model pretrained) share its
rows: each claims a row before running it (benchmarks/results/.claims) and skips the rows
others have claimed; ``--rows`` runs some rows only.
``--limit N`` is a smoke run (N train and N test samples per task, 1 epoch each; its own
results file); ``report --limit N`` prints its text instead of writing docs/transfer.md.

Budget: one epoch (training + test evaluation) took about 10.5 s of CPU time on a cifar task
(~2,000 images) and 5.2 s on a speech task (1,350 clips), one thread of an AMD EPYC, so 3 seeds
of one pretraining and six fine-tuning runs, cifar 3 x (50 + 6 x 28) epochs and speech
3 x (80 + 6 x 60), were planned as about two hours each on a quiet machine. Measured on a
shared 2-core machine (two to four jobs on its cores), a seed took about 2 h of wall time on
cifar and 1.4 h on speech (docs/transfer.md lists them): about 10 h in all, several sessions
with both cores busy. Splitting a setting over processes (``--seeds`` / ``--part``, or two
processes on one seed) is what makes it fit.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from common import (ROOT, add_run_arguments, checkpoint_complete, claim, command_parser,
                    dispatch, hours_per_seed, load_results, machine, mean_std, merged_results,
                    release, results_name, save_results, seconds_per_seed, train_and_record,
                    train_checkpoint, write_doc)
from shift import verdict

from edgecompress.recipe import Recipe

DOC = ROOT / "docs" / "transfer.md"
SEEDS = (0, 1, 2)
SOURCE_SPEAKERS = ["george", "jackson", "lucas"]

SETTINGS: dict[str, dict[str, Any]] = {
    "cifar": {
        "model": {"name": "resnet20"}, "optimizer": {"name": "adam", "lr": 0.001},
        "batch_size": 128, "pretrain_epochs": 50, "transfer_epochs": 28,
        "source": {"name": "cifar10", "classes": [0, 1, 2, 3, 4]},
        "target": {"name": "cifar10", "classes": [5, 6, 7, 8, 9]},
        "augment": True,
        "title": "ResNet-20, CIFAR-10 subset classes 0-4 -> classes 5-9",
        "data": "the CIFAR-10 subset (first 4,000 train / 1,000 test images): about 2,000 "
                "train and 500 test images per five-class task",
    },
    "speech": {
        "model": {"name": "kws-resnet", "channels": 16},
        "optimizer": {"name": "adam", "lr": 0.003},
        "batch_size": 64, "pretrain_epochs": 80, "transfer_epochs": 60,
        "source": {"name": "fsdd", "speakers": SOURCE_SPEAKERS},
        "target": {"name": "fsdd", "exclude_speakers": SOURCE_SPEAKERS},
        "augment": False,
        "title": "kws-resnet (16 channels), FSDD spoken digits: speakers "
                 f"{', '.join(SOURCE_SPEAKERS)} -> the other three",
        "data": "FSDD, 1,350 train (takes 5-49) / 150 test (takes 0-4) clips per group of three "
                "speakers, 40 log-mel bins x 101 frames; one test clip is 0.67 points, and the "
                "rows land near 100 % (the table): gaps and spreads here are a few clips",
    },
}

#: (key, label, method): the rows, each fine-tuned from the same pretrained float model
ROWS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("float", "float (fine-tuned)", None),
    ("denseshift-lv", "DenseShift 3-bit, init=low-variance",
     {"name": "denseshift", "bits": 3, "init": "low-variance"}),
    ("denseshift-ff", "DenseShift 3-bit, init=from-float",
     {"name": "denseshift", "bits": 3, "init": "from-float"}),
    ("denseshift-lvff", "DenseShift 3-bit, init=low-variance-from-float",
     {"name": "denseshift", "bits": 3, "init": "low-variance-from-float"}),
    ("s3", "S3 3-bit, init=from-float", {"name": "s3", "bits": 3, "init": "from-float"}),
    ("deepshift-q", "DeepShift-Q 3-bit (starts from the float weights)",
     {"name": "deepshift-q", "bits": 3}),
]
LABELS = {key: label for key, label, _ in ROWS}


def _recipe(setting: str, task: str, seed: int, limit: int | None,
            **changes: Any) -> Recipe:
    spec = SETTINGS[setting]
    data = dict(spec[task])
    if spec["augment"]:
        data["augment"] = True
    if limit:
        data["limit"] = limit
    raw = {"name": f"transfer-{setting}-{task}", "model": spec["model"], "data": data,
           "optimizer": spec["optimizer"], "schedule": {"name": "cosine"},
           "batch_size": spec["batch_size"], "seed": seed,
           "epochs": 1 if limit else spec[f"{'pretrain' if task == 'source' else 'transfer'}"
                                          "_epochs"], **changes}
    return Recipe.from_dict(raw)


def pretrain_dir(work: Path, setting: str, seed: int, limit: int | None) -> Path:
    epochs = SETTINGS[setting]["pretrain_epochs"]
    return work / (f"{setting}-pretrain-s{seed}-e{epochs}" + (f"-limit{limit}" if limit else ""))


def _claim_name(key: str, limit: int | None) -> str:
    return f"transfer{f'-limit{limit}' if limit else ''}|{key}"


def cmd_run(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    name = results_name("transfer", args.limit, args.part)
    results = load_results(name)
    results.setdefault("machine", machine())
    for seed in args.seeds:
        source = pretrain_dir(Path(args.work), args.setting, seed, args.limit)
        checkpoint = source / "checkpoint.pt"
        key = f"{args.setting}|pretrain|{seed}"
        recipe = _recipe(args.setting, "source", seed, args.limit)
        # the checkpoint is written every epoch: the source model is ready when it holds every
        # epoch (also when the result came from another machine); one process pretrains, the
        # others wait for it
        while not checkpoint_complete(checkpoint, recipe.epochs):
            if not claim(_claim_name(key, args.limit)):
                print(f"[transfer] {key}: another process pretrains it, waiting", flush=True)
                time.sleep(60)
                continue
            # a killed pretraining continues (the record says "resumed")
            record = train_checkpoint(recipe, args.data_root, source, setting=args.setting,
                                      row="pretrain", method=None)
            if record is None:  # finished by another process meanwhile
                release(_claim_name(key, args.limit))
                continue
            if key not in merged_results("transfer", args.limit):
                results[key] = record
                save_results(name, results)
            release(_claim_name(key, args.limit))
            print(f"[transfer] {key}: top-1 {record['top1']:.2f} ({record['seconds']:.0f} s)",
                  flush=True)
        for row, _, method in ROWS:
            key = f"{args.setting}|{row}|{seed}"
            # read again before each run: another process may have done it meanwhile, or be
            # running it (its claim)
            if row not in args.rows or key in merged_results("transfer", args.limit):
                continue
            if not claim(_claim_name(key, args.limit)):
                print(f"[transfer] {key}: another process runs it, skipped", flush=True)
                continue
            recipe = _recipe(args.setting, "target", seed, args.limit, method=method,
                             pretrained=str(checkpoint))
            results[key] = train_and_record(recipe, args.data_root, setting=args.setting,
                                            row=row, method=method)
            save_results(name, results)
            release(_claim_name(key, args.limit))
            r = results[key]
            print(f"[transfer] {key}: top-1 {r['top1']:.2f} ({r['seconds']:.0f} s)", flush=True)


def _scores(results: dict[str, Any], setting: str, row: str) -> list[float]:
    return [r["top1"] for k, r in results.items() if k != "machine"
            and r["setting"] == setting and r["row"] == row]


def claims(results: dict[str, Any], setting: str) -> list[str]:
    """DenseShift's two transfer claims, each with its verdict by shift.verdict's rule."""
    def line(text: str, a: str, b: str, claim: str) -> str:
        word, gap, spread = verdict(_scores(results, setting, a), _scores(results, setting, b),
                                    claim)
        return (f"- {text}: **{word}** ({LABELS[a]} {mean_std(_scores(results, setting, a))} "
                f"vs {LABELS[b]} {mean_std(_scores(results, setting, b))}; gap {gap:+.2f} "
                f"points, spread {spread:.2f})")

    return [
        line("DenseShift transfer ~ float (the paper's recipe: low-variance init)",
             "denseshift-lv", "float", "close"),
        line("DenseShift transfer ~ float, converted from the pretrained weights",
             "denseshift-ff", "float", "close"),
        line("low-variance init helps (vs latents from the pretrained weights)",
             "denseshift-lv", "denseshift-ff", "above"),
        line("low-variance init helps, our reading that keeps the pretrained values",
             "denseshift-lvff", "denseshift-ff", "above"),
    ]


RULE = (
    "Verdicts (the rule of docs/shift.md): for \"A ~ float\", the gap is mean(A) - mean(float) "
    "and the spread the larger standard deviation over seeds of the two; the claim **holds** if "
    "A is at most one spread below float (or above it), is **not reproduced** if more than two "
    "spreads below, and is **inconclusive** in between. For \"A helps\" (A above B) it holds if "
    "the gap exceeds the spread, is not reproduced if it is below minus the spread, and is "
    "inconclusive otherwise.")

INIT_NOTE = (
    "Initialisation of the converted layers. DenseShift's default initialisation "
    "(`init=\"paper\"`) already is the low-variance one, every latent ~ N(0, 1e-3), so "
    "\"low-variance vs its default\" compares it with the usual start of quantization from a "
    "pretrained model, `init=\"from-float\"` (latents coding the pretrained weights' power-of-two "
    "values, +-0.5 each). The spec does not say whether the low-variance init keeps anything of "
    "the pretrained weights in the converted layers; `init=\"low-variance\"` redraws them (only "
    "the float layers, BatchNorms and the first conv keep the pretrained weights), and "
    "`init=\"low-variance-from-float\"` is our other reading: the pretrained values in latents "
    "scaled to RMS 1e-3 (see edgecompress/quantizers/shift.py). S3 starts from the pretrained "
    "weights too (`from-float`), DeepShift-Q copies them (its paper init).")


def report_lines(results: dict[str, Any]) -> list[str]:
    lines = [
        "# Transfer learning: DenseShift and the other shift methods", "",
        "A float model is trained on a source task, then for each row: the recipe's "
        "`pretrained:` entry loads every weight of it but the classification head's, a new head "
        "is created for the target task, the row's method converts the model (first conv, "
        "classifier and BatchNorm float) and it is fine-tuned on the target task with the same "
        "budget for every row. Top-1 test accuracy (%) on the target task, mean ± standard "
        "deviation over seeds (each seed pretrains its own source model).", "",
        INIT_NOTE, "", RULE, ""]
    for setting, spec in SETTINGS.items():
        runs = [r for k, r in results.items() if k != "machine" and r["setting"] == setting]
        if not runs:
            continue
        seeds = sorted({r["seed"] for r in runs if r["row"] != "pretrain"})
        lines += [f"## {spec['title']}", "",
                  f"Data: {spec['data']}. Seeds {', '.join(map(str, seeds))} (n: those a row "
                  f"has). Budget: "
                  f"{spec['pretrain_epochs']} pretraining epochs, {spec['transfer_epochs']} "
                  f"fine-tuning epochs (Adam, cosine schedule), far below the papers' "
                  f"ImageNet-pretrained backbones: compare rows, not absolutes.", "",
                  "| row | n | top-1 (%) | s per run |", "|---|---:|---:|---:|",
                  f"| source task (float, pretraining) | "
                  f"{len(_scores(results, setting, 'pretrain'))} | "
                  f"{mean_std(_scores(results, setting, 'pretrain'))} | "
                  f"{_seconds(runs, 'pretrain')} |"]
        lines += [f"| {label} | {len(_scores(results, setting, key))} | "
                  f"{mean_std(_scores(results, setting, key))} | {_seconds(runs, key)} |"
                  for key, label, _ in ROWS]
        lines += ["", "Measured time per seed (pretraining and six fine-tunings, wall clock, one "
                  "thread per process, two to four jobs on the two cores): "
                  f"{hours_per_seed(seconds_per_seed(runs))}.", "",
                  "Claims, each with its verdict on these numbers:", "",
                  *claims(results, setting), "",
                  f"Regenerate: `python benchmarks/transfer.py run {setting} --data-root <dir> "
                  f"--part {setting}` then `python benchmarks/transfer.py report`.", ""]
    if "machine" in results:
        lines += [f"Runs: {results['machine']}.", ""]
    return lines


def _seconds(runs: list[dict[str, Any]], row: str) -> str:
    values = [r["seconds"] for r in runs if r["row"] == row]
    return f"{statistics.mean(values):.0f}" if values else "-"


def cmd_report(args: argparse.Namespace) -> None:
    lines = report_lines(merged_results("transfer", args.limit))
    if args.limit:
        print("\n".join(lines))
        return
    write_doc(DOC, lines)


def main() -> None:
    parser, sub = command_parser(__doc__)
    p = sub.add_parser("run", help="pretrain, then train every row x seed (resumable)")
    p.add_argument("setting", choices=sorted(SETTINGS))
    add_run_arguments(p, "transfer", SEEDS,
                      limit_help="smoke run: this many train and test samples per task, 1 epoch "
                      "each (results go to transfer-limit<N>.json)",
                      work="transfer",
                      work_help="where the pretrained source models' checkpoints go")
    p.add_argument("--rows", nargs="+", choices=list(LABELS), default=list(LABELS),
                   help="only these rows (default all; e.g. a second process on the last rows "
                   "of a seed whose source model is pretrained)")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("report", help="write docs/transfer.md")
    p.add_argument("--limit", type=int, help="print the report of the smoke run --limit N")
    p.set_defaults(func=cmd_report)
    dispatch(parser)


if __name__ == "__main__":
    main()
