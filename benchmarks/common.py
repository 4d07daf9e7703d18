"""What the benchmark scripts share: their command line, resumable result files, the machine
line, mean ± std, the written report, and one recorded training run."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch

from edgecompress.experiment import run
from edgecompress.recipe import Recipe
from edgecompress.train import Callback
from edgecompress.train.checkpoint import load_checkpoint
from edgecompress.train.trainer import CHECKPOINT

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def command_parser(doc: str) -> tuple[argparse.ArgumentParser, Any]:
    """A benchmark script's parser (``doc``, its docstring, as description with its layout
    kept) and the subparsers its commands are added to (one required)."""
    parser = argparse.ArgumentParser(description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    return parser, parser.add_subparsers(dest="command", required=True)


def dispatch(parser: argparse.ArgumentParser) -> None:
    """Parse the command line and run the chosen command (its ``func`` default)."""
    args = parser.parse_args()
    args.func(args)


def add_run_arguments(p: argparse.ArgumentParser, base: str, seeds: Sequence[int] | None, *,
                      part: bool = True, limit: bool = True, limit_help: str | None = None,
                      work: str | None = None, work_help: str | None = None,
                      data_root_help: str | None = None, seeds_help: str | None = None) -> None:
    """The options of a resumable ``run`` writing ``results_name(base, limit, part)``:
    ``--data-root`` (required, or optional with ``data_root_help``), ``--seeds`` (default
    ``seeds``; None: the script decides, as ``seeds_help`` says), then as asked ``--part``,
    ``--limit`` (a smoke run; the usual help unless ``limit_help``) and ``--work`` (default
    runs/<work>)."""
    if data_root_help is None:
        p.add_argument("--data-root", required=True)
    else:
        p.add_argument("--data-root", help=data_root_help)
    p.add_argument("--seeds", type=int, nargs="+", default=None if seeds is None else list(seeds),
                   help=seeds_help)
    if part:
        p.add_argument("--part", help=f"write {base}-<PART>.json instead (processes side by "
                       "side, e.g. --seeds 1 --part s1); report merges them")
    if limit:
        p.add_argument("--limit", type=int, help=limit_help or "train and test on this many "
                       f"images only (a smoke test; results go to {base}-limit<N>.json)")
    if work is not None:
        p.add_argument("--work", default=str(ROOT / "runs" / work), help=work_help)


def write_doc(path: Path, lines: Sequence[str]) -> None:
    """Write a report's ``lines`` to ``path`` (its folder made) and say so."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    print(f"wrote {path}")


def runs_line(results: dict[str, Any]) -> str:
    """The report line naming the machine the ``results`` were run on."""
    return f"Runs: {results.get('machine', 'unknown machine')}."


def load_results(name: str) -> dict[str, Any]:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def save_results(name: str, results: dict[str, Any]) -> None:
    """Atomically (write, then rename), so an interrupted benchmark keeps what it finished."""
    path = RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1))
    tmp.replace(path)


def claim(key: str) -> bool:
    """Take the run ``key`` for this process (a file in benchmarks/results/.claims holding its
    pid), so that processes running side by side on the same results skip each other's runs;
    False if a live process holds it. A claim of a process that has ended is taken over.
    :func:`release` it when the run is saved."""
    path = _claim_path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            with open(path, "x") as f:
                f.write(str(os.getpid()))
            return True
        except FileExistsError:
            try:
                text = path.read_text()
                if not text:  # its process has just made it and not yet written its pid
                    return False
                pid = int(text)
                os.kill(pid, 0)
                return pid == os.getpid()
            except (ProcessLookupError, ValueError):
                path.unlink(missing_ok=True)  # its process has ended: take it over
            except PermissionError:  # a live process of another user
                return False
    return False


def release(key: str) -> None:
    """Drop this process's :func:`claim` of ``key``."""
    _claim_path(key).unlink(missing_ok=True)


def _claim_path(key: str) -> Path:
    return RESULTS / ".claims" / key.replace("|", "_").replace("/", "_")


def results_name(base: str, limit: int | None = None, part: str | None = None) -> str:
    """``base[-limit<N>][-<part>]``: a smoke run's results (``--limit``) and the file of one of
    several processes run side by side (``--part``, e.g. one seed each) are files of their own."""
    return base + (f"-limit{limit}" if limit else "") + (f"-{part}" if part else "")


def merged_results(base: str, limit: int | None = None) -> dict[str, Any]:
    """``base[-limit<N>].json`` merged with its ``--part`` files (top-level keys; a ``runs``
    mapping is merged too), smoke-run files of another limit excluded."""
    stem = results_name(base, limit)
    merged: dict[str, Any] = {}
    for path in sorted(RESULTS.glob(f"{stem}*.json")):
        rest = path.stem[len(stem):]
        if rest == "" or (rest.startswith("-") and "limit" not in rest):
            part = load_results(path.stem)
            runs = {**merged.get("runs", {}), **part.get("runs", {})}
            merged.update(part)
            if runs:
                merged["runs"] = runs
    return merged


def resume_results(base: str, limit: int | None, part: str | None,
                   epochs: int | None = None) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """What a resumable ``run`` needs: the name of the file it writes (``results_name``), every
    run already done (``merged_results``, to skip) and the file's results (machine line set).
    With ``epochs``, files holding runs of another epoch count stop the run with a message."""
    name, done = results_name(base, limit, part), merged_results(base, limit)
    other = {r.get("epochs") for k, r in done.items() if k != "machine"} - {epochs}
    if epochs is not None and other:
        raise SystemExit(f"benchmarks/results/{results_name(base, limit)}*.json hold runs of "
                         f"{sorted(other)} epochs, not {epochs}: pass that --epochs or move "
                         f"those files away")
    results = load_results(name)
    results.setdefault("machine", machine())
    return name, done, results


#: the instruction-set flags that decide the kernels' paths and torch's CPU kernels
VECTOR_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vpopcntdq",
                "avx512_vnni", "amx_tile")


def machine() -> str:
    """The CPU model (with the x86 family and model numbers) and its vector flags, threads,
    cores, Python and torch versions."""
    info = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() \
        else []
    cpu = next((line.split(":", 1)[1].strip() for line in info
                if line.startswith("model name")), platform.processor() or "unknown CPU")
    flags = next((line.split(":", 1)[1].split() for line in info if line.startswith("flags")),
                 [])
    vector = " ".join(f for f in VECTOR_FLAGS if f in flags) or "no AVX2"
    field = {key: line.split(":", 1)[1].strip() for line in info for key in ("cpu family", "model")
             if line.split(":", 1)[0].strip() == key}
    if field.keys() == {"cpu family", "model"}:  # x86: the generation the name may not tell
        vector = f"family {field['cpu family']} model {field['model']}; {vector}"
    return (f"{cpu} ({vector}), {torch.get_num_threads()} thread(s) of "
            f"{len(os.sched_getaffinity(0))} cores, Python {platform.python_version()}, "
            f"torch {torch.__version__}")


def machine_label(results: dict[str, Any]) -> str:
    """A results file's machine as a heading names it: its ``label`` (written by hand where the
    machine line alone does not tell the run apart, e.g. an earlier run on a CPU whose family
    was not recorded) or the CPU part of its machine line."""
    return results.get("label") or results["machine"].split(",")[0]


def mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.2f} (1 seed)"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def train_and_record(recipe: Recipe, data_root: str | None, out_dir: Path | None = None,
                     callbacks: tuple[Callback, ...] = (), resume: bool = False,
                     **fields: Any) -> dict[str, Any]:
    """Train ``recipe`` (checkpoint into ``out_dir`` if given, e.g. a teacher for later runs;
    ``resume``: continue from the checkpoint there) and return ``fields`` plus its accuracies,
    time (of this call) and per-epoch diagnostics (empty lists for a float model)."""
    began = time.perf_counter()
    result = run(recipe, out_dir=out_dir, data_root=data_root, progress=False,
                 callbacks=callbacks, resume=resume)
    m, history = result.metrics, result.history
    return {
        **fields, "seed": recipe.seed,
        "top1": m.get("hard_test_top1", m["test_top1"]), "soft_top1": m["test_top1"],
        "train_top1": m["train_top1"], "seconds": time.perf_counter() - began,
        "flip_rate": [h.get("flip_rate") for h in history],
        "sign_flip_rate": [h.get("sign_flip_rate") for h in history],
        "unchanged_since_epoch_1": [h.get("unchanged_since_epoch_1") for h in history],
        "latent_hist": history[-1].get("latent_hist") if history else None,
    }


def checkpoint_complete(checkpoint: Path, epochs: int) -> bool:
    """Whether ``checkpoint`` exists and holds ``epochs`` completed epochs (the trainer writes
    one after every epoch, so a killed run leaves a partial one behind)."""
    return checkpoint.is_file() and int(load_checkpoint(checkpoint)["epoch"]) >= epochs


def train_checkpoint(recipe: Recipe, data_root: str | None, out_dir: Path,
                     **fields: Any) -> dict[str, Any] | None:
    """Make ``out_dir``/checkpoint.pt hold all of ``recipe``'s training (a teacher or source
    model later runs start from): nothing to do if it does, else train, continuing a partial
    checkpoint. Returns :func:`train_and_record`'s record of the training done (with
    ``resumed: True`` when it continued a partial checkpoint: its seconds count the resumed
    epochs only), or None."""
    checkpoint = out_dir / CHECKPOINT
    if checkpoint_complete(checkpoint, recipe.epochs):
        return None
    if checkpoint.is_file():
        return {**train_and_record(recipe, data_root, out_dir, resume=True, **fields),
                "resumed": True}
    return train_and_record(recipe, data_root, out_dir, **fields)


def method_table(results: dict[str, Any], methods: Sequence[str], column: str,
                 values: Sequence[Any], headers: Sequence[str],
                 reference: str = "float reference") -> list[str]:
    """Markdown rows: method x ``values`` of result field ``column`` -> top-1 mean ± std, with
    the float model (method None, labelled ``reference``) first."""
    def scores(method: str | None, value: Any) -> list[float]:
        return [r["top1"] for r in results.values()
                if r["method"] == method and (method is None or r[column] == value)]

    lines = ["| method | " + " | ".join(headers) + " |", "|---|" + "---:|" * len(headers),
             f"| {reference} | {mean_std(scores(None, None))} |" + " |" * (len(headers) - 1)]
    for method in methods:
        lines.append(f"| {method} | " + " | ".join(mean_std(scores(method, v))
                                                     for v in values) + " |")
    return lines


def competitive_claim(scores: dict[str, list[float]], method: str, where: str) -> str | None:
    """The PC++ paper's claim that ``method`` (BNN++) is competitive with or better than the other
    methods, judged on ``scores`` (method -> top-1 of each seed) by the rule the sentence states;
    None until ``method`` and another method have two seeds each."""
    mine = scores.get(method, [])
    others = [m for m, v in scores.items() if m != method and len(v) >= 2]
    if len(mine) < 2 or not others:
        return None
    rival = max(others, key=lambda m: statistics.mean(scores[m]))
    theirs = scores[rival]
    gap = statistics.mean(mine) - statistics.mean(theirs)
    spread = max(statistics.stdev(mine), statistics.stdev(theirs))
    verdict = ("holds: better" if gap > spread else "holds: competitive" if gap >= -spread
               else "not reproduced")
    return (f"- Claim \"BNN++ is competitive with or better than the other methods\", {where}: "
            f"{verdict} ({method} {statistics.mean(mine):.2f} vs the best other, {rival}, "
            f"{statistics.mean(theirs):.2f}: {gap:+.2f} points against a spread of {spread:.2f}; "
            f"rule: better if the gap exceeds the larger standard deviation, competitive if "
            f"within it, not reproduced if below it).")


def suite_section(heading: str, spec: dict[str, Any], results: dict[str, Any],
                  table: list[str]) -> list[str]:
    """A suite's heading, its seeds and budget reductions, then its table."""
    seeds = sorted({r["seed"] for r in results.values()})
    return [f"{heading} {spec['title']}", "",
            f"Seeds {', '.join(map(str, seeds))}. Reduced compared with the papers: "
            f"{spec['reduced']}.", "", *table]


def seconds_per_call(fn: Callable[[], Any], calls: int) -> float:
    began = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - began) / calls


def interleaved(variants: dict[str, Callable[[], Any]], rounds: int, calls: int,
                baseline: str) -> dict[str, dict[str, Any]]:
    """Time every variant in turn, ``rounds`` times (so the load of other jobs falls on all
    alike), the order reversed every other round (the later of a pair runs slower on a shared
    host, ~10 % for millisecond calls). Per variant: ``seconds``, the median seconds per call; ``ratio``, the median over
    rounds of its time / the ``baseline`` variant's time in the same round; ``all``, the
    seconds of every round."""
    for fn in variants.values():
        seconds_per_call(fn, max(1, calls // 5))  # warm-up
    times: dict[str, list[float]] = {k: [] for k in variants}
    for i in range(rounds):
        for name, fn in (reversed(variants.items()) if i % 2 else variants.items()):
            times[name].append(seconds_per_call(fn, calls))
    return {name: {"seconds": statistics.median(t), "all": t,
                   "ratio": statistics.median(a / b for a, b in zip(t, times[baseline]))}
            for name, t in times.items()}


def seconds_per_seed(runs: Iterable[dict[str, Any]]) -> dict[int, float]:
    """The summed ``seconds`` of the runs on record, per seed (sorted by seed)."""
    per_seed: dict[int, float] = {}
    for r in runs:
        per_seed[r["seed"]] = per_seed.get(r["seed"], 0.0) + r["seconds"]
    return dict(sorted(per_seed.items()))


def hours_per_seed(per_seed: dict[int, float]) -> str:
    """"seed 0 1.5 h, seed 1 1.4 h" from :func:`seconds_per_seed`."""
    return ", ".join(f"seed {seed} {secs / 3600:.1f} h" for seed, secs in per_seed.items())
