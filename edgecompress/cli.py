"""The ``edgecompress`` command line.

- ``demo``: float vs BNN/BNN++ (W1A32, W1A1) on the bundled MNIST subset, one table;
- ``train RECIPE`` / ``eval CHECKPOINT``: a recipe's experiment, resumable, DDP under torchrun;
- ``freeze CHECKPOINT -o FILE`` / ``predict FILE INPUT...``: the deployable file with its
  metadata, and the top-k classes of images, .npy arrays or WAV clips by it;
- ``inspect FILE``: which kind of file it is and what it holds;
- ``prune RECIPE``: train -> regularize -> prune -> fine-tune, resumable per phase;
- ``robustness CHECKPOINT``: top-1 under input corruptions (noise, brightness, contrast,
  rotation, translation) at several severities, a table, a plot and JSON;
- ``summary MODEL``: parameters, bytes and MACs by precision of a zoo model (optionally
  converted), a recipe, a checkpoint or a frozen file;
- ``bench kernels`` / ``bench model``: the C kernels and a frozen model against float torch;
- ``causal FILE`` / ``causal --pairs``: the causal direction between two columns of a table,
  or the weighted accuracy of the test on the Tuebingen cause-effect pairs;
- ``list``: the registered models, datasets, methods and quantizers.

Every command has ``--help``; most take ``--json PATH`` for machine-readable results.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

import click

from .errors import EdgecompressError, ModelFileError


def _write_json(path: str | None, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` (only on rank 0 of a distributed run)."""
    if path is None or int(os.environ.get("RANK", "0")) != 0:
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(payload, indent=2, default=str) + "\n")
    click.echo(f"wrote {path}")


def _is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


json_option = click.option("--json", "json_path", type=click.Path(dir_okay=False),
                           help="Also write machine-readable results to this file.")
device_option = click.option(
    "--device", help="cpu, cuda or cuda:N (default: cuda if available, else cpu). Under "
    "torchrun, cuda means each process's own GPU, cuda:LOCAL_RANK.")
progress_option = click.option("--progress/--no-progress", default=True, show_default=True,
                               help="Show progress bars.")
data_root_option = click.option(
    "--data-root", type=click.Path(exists=True, file_okay=False),
    help="Directory holding the dataset files (overrides the recipe; a checkpoint remembers the "
         "one it was trained with).")

#: a count: epochs, rounds, a batch size
positive_int = click.IntRange(min=1)


class PositiveInts(click.ParamType):
    """Comma-separated positive integers, ``"3,32,32"`` -> ``(3, 32, 32)``: an input shape, the
    thread counts or batch sizes of a benchmark."""

    name = "ints"

    def __init__(self, example: str) -> None:
        self.example = example

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> tuple[int, ...]:
        if isinstance(value, tuple):
            return value
        try:
            ints = tuple(int(v) for v in str(value).split(","))
        except ValueError:
            ints = ()
        if not ints or min(ints) < 1:
            self.fail(f"{value!r}: expected positive integers separated by commas, e.g. "
                      f"{self.example}", param, ctx)
        return ints


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edgecompress")
@click.option("--debug", is_flag=True,
              help="Show the traceback of an error instead of a one-line message.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Compress neural networks for edge devices and run them fast."""
    ctx.ensure_object(dict)["debug"] = debug


@cli.command()
@click.option("--epochs", type=positive_int, default=20, show_default=True,
              help="Epochs per model.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="Keep checkpoints, metrics.jsonl and curves.png of every run here.")
@json_option
@progress_option
def demo(epochs: int, seed: int, out_dir: str | None, json_path: str | None, progress: bool) -> None:
    """Train a float MLP and its BNN and BNN++ binarizations (W1A32, W1A1) on the bundled MNIST
    subset and compare accuracy, size and MACs."""
    from .demo import format_rows, run_demo

    rows = run_demo(epochs=epochs, out_dir=out_dir, progress=progress, seed=seed)
    click.echo("\nedgecompress demo: MLP 784-512-512-10 on the bundled MNIST subset "
               f"(6,000 train / 1,000 test images), {epochs} epochs, seed {seed}\n")
    click.echo(format_rows(rows))
    _write_json(json_path, {"epochs": epochs, "seed": seed, "rows": [r.to_dict() for r in rows]})


@cli.command()
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="Output directory (default: the recipe's out_dir, else runs/<recipe name>).")
@click.option("--resume", is_flag=True, help="Continue from OUT/checkpoint.pt.")
@data_root_option
@click.option("--epochs", type=positive_int, help="Override the recipe's number of epochs.")
@device_option
@json_option
@progress_option
def train(recipe: str, out_dir: str | None, resume: bool, data_root: str | None,
          epochs: int | None, device: str | None, json_path: str | None, progress: bool) -> None:
    """Train the experiment described by RECIPE (a YAML file).

    Launch with `torchrun --nproc_per_node N -m edgecompress.cli train RECIPE` for
    distributed data-parallel training.
    """
    from .experiment import run
    from .recipe import Recipe

    r = Recipe.from_yaml(recipe)
    if epochs is not None:
        r.epochs = epochs
    out = out_dir or r.out_dir or str(Path("runs") / r.name)
    result = run(r, out_dir=out, resume=resume, data_root=data_root, progress=progress,
                 device=device)
    if _is_main():
        if result.report is not None:
            click.echo(str(result.report))
        click.echo(json.dumps(result.metrics, default=str))
        click.echo(f"checkpoint: {Path(out) / 'checkpoint.pt'}")
    _write_json(json_path, {"recipe": r.to_dict(), "metrics": result.metrics,
                            "checkpoint": str(Path(out) / "checkpoint.pt")})


@cli.command()
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="Output directory (default: the recipe's out_dir, else runs/<recipe name>).")
@click.option("--resume", is_flag=True, help="Continue a killed run in OUT from the phase it "
              "was in (finished phases are not redone).")
@data_root_option
@device_option
@json_option
@progress_option
def prune(recipe: str, out_dir: str | None, resume: bool, data_root: str | None,
          device: str | None, json_path: str | None, progress: bool) -> None:
    """Prune the model of RECIPE: train (or load prune.reference) -> train with the recipe's
    regularizer (e.g. SPR) -> prune filters and remove them physically -> fine-tune (with the
    recipe's method, if any, applied after pruning, then frozen). Prints parameters, MACs,
    bytes and measured CPU latency before and after."""
    from .errors import CheckpointError
    from .pruning.pipeline import STATE_FILE, format_comparison, prune_recipe
    from .recipe import Recipe
    from .train.trainer import CHECKPOINT

    r = Recipe.from_yaml(recipe)
    out = out_dir or r.out_dir or str(Path("runs") / r.name)
    started = (Path(out) / STATE_FILE, Path(out) / "train" / CHECKPOINT)  # after/in phase 1
    if resume and not any(path.is_file() for path in started):
        raise CheckpointError(f"cannot resume: {out} holds no prune run ({STATE_FILE} or "
                              f"train/{CHECKPOINT}; a new or mistyped --out?); start without "
                              f"--resume to prune from scratch")
    result = prune_recipe(r, out, resume=resume, data_root=data_root, progress=progress,
                          device=device)
    for phase, metrics in result.phases.items():
        shown = {k: v for k, v in metrics.items()
                 if k.startswith(("test_", "train_top1", "threshold", "filters_"))}
        click.echo(f"{phase}: {json.dumps(shown, default=str)}")
    click.echo(format_comparison(result.comparison))
    _write_json(json_path, {"recipe": r.to_dict(), "out": out, **result.to_dict()})


def _load_evaluated(checkpoint: str, device: str | None):
    """(model on its device, recipe, device) of a training CHECKPOINT or a frozen model file, as
    `eval` and `robustness` evaluate them (a frozen file's packed kernels run on the CPU)."""
    from .experiment import load_trained
    from .files import FileKind, detect_kind
    from .frozen import load_frozen
    from .train import resolve_device

    frozen = detect_kind(checkpoint) is FileKind.FROZEN
    where = resolve_device("cpu" if frozen else device)
    model, recipe = (load_frozen if frozen else load_trained)(checkpoint)
    return model.to(where), recipe, where


@cli.command(name="eval")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@data_root_option
@click.option("--split", type=click.Choice(["train", "valid", "test"]), default="test",
              show_default=True, help="valid: text corpora only.")
@click.option("--batch-size", type=positive_int, help="Default: the recipe's eval_batch_size "
              "(for a language model, the number of rows the token stream is cut into).")
@device_option
@json_option
def eval_(checkpoint: str, data_root: str | None, split: str, batch_size: int | None,
          device: str | None, json_path: str | None) -> None:
    """Evaluate a trained CHECKPOINT, or a frozen model file (from `edgecompress freeze`; it runs
    on the CPU), on its recipe's dataset, with its task's metrics (top-1 accuracy, or perplexity
    for a language model)."""
    from .train import evaluate

    model, recipe, where = _load_evaluated(checkpoint, device)
    dataset = recipe.load_data(split, data_root)
    task = recipe.build_task(dataset)
    metrics = evaluate(model, dataset, batch_size=batch_size or recipe.eval_batch_size,
                       device=where, task=task)
    click.echo(f"{recipe.name}: {split} {task.describe(metrics)}")
    _write_json(json_path, {"checkpoint": checkpoint, "split": split, **metrics})


class CorruptionSpec(click.ParamType):
    """``NAME`` or ``NAME=S1,S2,...``: a corruption family and its severities (default: the
    family's own), e.g. ``noise=0.1,0.2``."""

    name = "corruption"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> tuple[str, tuple[float, ...]]:
        from .analysis.robustness import check_corruptions, family

        if isinstance(value, tuple):
            return value
        name, _, listed = str(value).partition("=")
        try:
            severities = tuple(float(v) for v in listed.split(",")) if listed else None
        except ValueError:
            self.fail(f"{value!r}: expected NAME or NAME=S1,S2,... with numbers, e.g. "
                      f"noise=0.1,0.2", param, ctx)
        try:
            fam = family(name)
            checked = check_corruptions({fam.name: severities or fam.defaults})
        except EdgecompressError as exc:
            self.fail(f"{value!r}: {exc}", param, ctx)
        return fam.name, checked[fam.name]


@cli.command(name="robustness")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--corruption", "corruptions", type=CorruptionSpec(), multiple=True,
              metavar="NAME[=S1,S2,...]",
              help="A corruption family and its severities, repeatable: noise (sigma), "
                   "brightness (delta), contrast (reduction), rotation (degrees), translation "
                   "(pixels); pixels in [0, 1] before normalisation. Default: every family at "
                   "its default severities.")
@click.option("--limit", type=positive_int, help="Only the first N test samples.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the Gaussian noise (drawn per sample: independent of the batch "
                   "size).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False),
              help="Write the accuracy-vs-severity curves to this PNG file.")
@data_root_option
@click.option("--batch-size", type=positive_int, help="Default: the recipe's eval_batch_size.")
@device_option
@json_option
@progress_option
def robustness_cmd(checkpoint: str, corruptions: tuple[tuple[str, tuple[float, ...]], ...],
                   limit: int | None, seed: int, plot_path: str | None, data_root: str | None,
                   batch_size: int | None, device: str | None, json_path: str | None,
                   progress: bool) -> None:
    """Top-1 accuracy of an image classifier (a training CHECKPOINT or a frozen model file, as
    for `eval`) on its recipe's test set, clean and under Gaussian noise, brightness and
    contrast changes, rotations and translations at several severities: a table, optionally a
    plot (--plot) and JSON (--json)."""
    from .analysis.robustness import evaluate_robustness, plot_robustness

    model, recipe, where = _load_evaluated(checkpoint, device)
    dataset = recipe.load_data("test", data_root)
    if limit is not None:
        dataset = dataset.limit(limit)
    result = evaluate_robustness(model, dataset, dict(corruptions) or None,
                                 batch_size=batch_size or recipe.eval_batch_size, device=where,
                                 task=recipe.build_task(dataset), seed=seed, progress=progress)
    click.echo(f"{recipe.name}: top-1 under corruptions, {result.samples} test samples, "
               f"seed {seed}")
    click.echo(result.table())
    if plot_path is not None:
        plot_robustness(plot_path, {recipe.name: result}, title=f"{recipe.name} ({checkpoint})")
        click.echo(f"wrote {plot_path}")
    _write_json(json_path, {"checkpoint": checkpoint, "recipe": recipe.name,
                            **result.to_dict()})


@cli.command()
@click.argument("target")
@click.option("--input-shape", type=PositiveInts("3,32,32"), help="Input shape without batch, "
              "e.g. 3,32,32 (default: the model's own).")
@click.option("--num-classes", type=positive_int, default=10, show_default=True)
@click.option("--activation", help="The zoo model's activation, e.g. hardtanh (binary inputs "
              "after a relu are all +1: use hardtanh with --mode w1a1).")
@click.option("--method", help="Convert the model with this method first (e.g. bnn, s3).")
@click.option("--mode", help="Binarization mode, e.g. w1a1.")
@click.option("--bits", type=int, help="Bits per weight of a shift method, e.g. 3.")
@data_root_option
@json_option
def summary(target: str, input_shape: tuple[int, ...] | None, num_classes: int,
            activation: str | None, method: str | None, mode: str | None, bits: int | None,
            data_root: str | None, json_path: str | None) -> None:
    """Print parameters, bytes and MACs by precision for TARGET: a model name, a recipe (.yaml),
    a training checkpoint or a frozen model file. A recipe's model is built for its dataset
    (--data-root)."""
    import torch

    from . import models
    from .analysis import summary as summarize
    from .convert import convert
    from .frozen import load_model
    from .recipe import Recipe

    shape = input_shape
    if target.endswith((".yaml", ".yml")):
        r = Recipe.from_yaml(target)
        data = r.load_data("test", data_root)
        model, _ = r.build_model(data.num_classes, tuple(data.input_shape),
                                 load_pretrained=False)
        shape = shape or tuple(data.input_shape)
    elif Path(target).is_file():  # a training checkpoint or a frozen model file
        model = load_model(target)
    else:
        kwargs: dict[str, Any] = {"num_classes": num_classes}
        if shape:
            kwargs["input_shape"] = shape
        if activation:
            kwargs["activation"] = activation
        model = models.create(target, **kwargs)
    if method:
        options = {k: v for k, v in (("mode", mode), ("bits", bits)) if v is not None}
        model = convert(model, method, **options)
    shape = shape or tuple(getattr(model, "input_shape"))
    s = summarize(model, shape, dtype=getattr(model, "input_dtype", torch.float32))
    click.echo(str(s))
    _write_json(json_path, s.to_dict())


@cli.group()
def bench() -> None:
    """Time the packed kernels and frozen models against torch float32 (ratios from one run)."""


def _print_timings(title: str, timings) -> None:
    click.echo(title)
    for t in timings:
        click.echo(f"  {t.name:<44} {t.threads} thread(s)  {t.candidate_ms:9.3f} ms vs "
                   f"float32 {t.baseline_ms:9.3f} ms  ->  {t.speedup:5.1f}x")


@bench.command(name="kernels")
@click.option("--kind", type=click.Choice(["w1a1", "w1a32"]), default="w1a1", show_default=True,
              help="w1a1: XOR-popcount GEMM at ResNet-18 conv shapes; w1a32: sign-select GEMM "
                   "(float inputs) at fully connected shapes, batch 1, 8 and 64.")
@click.option("--batch", type=positive_int, default=1, show_default=True,
              help="w1a1: images per GEMM (M = batch x H x W).")
@click.option("--threads", type=PositiveInts("1,2"), default="1,2", show_default=True,
              help="Comma-separated thread counts.")
@click.option("--path", type=click.Choice(["scalar", "avx2", "avx512"]),
              help="Force a dispatch path (default: the best this CPU supports).")
@click.option("--rounds", type=positive_int, default=5, show_default=True)
@json_option
def bench_kernels(kind: str, batch: int, threads: tuple[int, ...], path: str | None, rounds: int,
                  json_path: str | None) -> None:
    """Binary GEMMs vs torch float32 matmul on the same shapes, in the same run."""
    from .deploy.benchmark import bench_gemm, bench_w1a32

    if kind == "w1a32":
        timings = bench_w1a32(threads=threads, path=path, rounds=rounds)
        _print_timings("W1A32 sign-select GEMM vs float32 matmul", timings)
    else:
        timings = bench_gemm(batch=batch, threads=threads, path=path, rounds=rounds)
        _print_timings(f"binary GEMM vs float32 matmul, batch {batch}", timings)
    _write_json(json_path, {"kind": kind, "batch": batch, "path": path,
                            "rows": [t.to_dict() for t in timings]})


@bench.command(name="model")
@click.argument("model_name", default="resnet18")
@click.option("--batches", type=PositiveInts("1,8"), default="1,8", show_default=True)
@click.option("--threads", type=PositiveInts("1,2"), default="1,2", show_default=True)
@click.option("--rounds", type=positive_int, default=3, show_default=True)
@click.option("--profile", is_flag=True,
              help="Instead of comparing with float: where the frozen model's time goes (stem, "
                   "each stage's GEMMs, packing, im2col, float layers, python glue), per "
                   "batch and thread count.")
@click.option("--stem-bits", type=click.IntRange(2, 8), default=None,
              help="A zoo model's first convolution at this many bits (weights and signed "
                   "inputs, the input step calibrated on random inputs: speed, not accuracy), "
                   "run by the integer kernel on CPUs with AVX-512 VNNI.")
@json_option
def bench_model_cmd(model_name: str, batches: tuple[int, ...], threads: tuple[int, ...],
                    rounds: int, profile: bool, stem_bits: int | None,
                    json_path: str | None) -> None:
    """MODEL_NAME a zoo model: its frozen W1A1 form (first conv and classifier float, or the
    first conv at --stem-bits) vs the same float model. MODEL_NAME a frozen model file: it vs
    the float model of its recipe (the same architecture without the recipe's methods, randomly
    initialised: speed is compared, not accuracy)."""
    import torch

    from . import models
    from .convert import convert
    from .deploy import freeze, load
    from .deploy.benchmark import bench_model, low_bit_stem

    torch.manual_seed(0)
    if Path(model_name).exists():
        from .files import FileKind, mismatch
        from .frozen import float_counterpart

        other = mismatch(model_name, FileKind.FROZEN)
        if other:
            raise ModelFileError(other)
        if stem_bits is not None:
            raise click.UsageError("--stem-bits applies to a zoo model; a model file runs as "
                                   "it was frozen")
        frozen, float_model = load(model_name), float_counterpart(model_name)
        title = f"{model_name} vs its float model"
    else:
        float_model = models.create(model_name, activation="hardtanh",
                                    num_classes=1000 if model_name == "resnet18" else 10).eval()
        methods: list[dict] = [{"name": "bnn", "mode": "w1a1"}]
        if stem_bits is not None:
            try:
                methods.append(low_bit_stem(float_model, stem_bits))
            except ValueError:
                raise click.UsageError(f"--stem-bits: {model_name} has no convolution") from None
        converted = convert(float_model, methods)
        if stem_bits is not None:
            from .quantizers import calibrate

            calibrate(converted, [torch.randn(8, *float_model.input_shape)])
        frozen = freeze(converted.eval())
        stem = f" ({stem_bits}-bit first conv)" if stem_bits is not None else ""
        title = f"frozen W1A1 {model_name}{stem} vs float {model_name}"
    if profile:
        from .deploy.profile import format_profiles, profile_model

        profiles = profile_model(frozen, tuple(float_model.input_shape), batches, threads, rounds)
        click.echo(f"frozen {model_name}: time per part\n{format_profiles(profiles)}")
        _write_json(json_path, {"model": model_name,
                                "profiles": [p.to_dict() for p in profiles]})
        return
    timings = bench_model(float_model, frozen, tuple(float_model.input_shape), batches,
                          threads, rounds)
    _print_timings(title, timings)
    _write_json(json_path, {"model": model_name, "rows": [t.to_dict() for t in timings]})


@cli.command(name="freeze")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="The frozen model file to write (e.g. model.safetensors).")
@data_root_option
@json_option
def freeze_cmd(checkpoint: str, output: str, data_root: str | None,
               json_path: str | None) -> None:
    """Freeze the model of a training CHECKPOINT (its recipe travels in it) into a deployable
    file: packed layers, BatchNorms folded, plus metadata (dataset, input preprocessing as in
    training, class names) that `edgecompress predict` and `eval` read."""
    from .deploy import save
    from .frozen import freeze_checkpoint

    result = freeze_checkpoint(checkpoint, data_root)
    if not result.packed:
        click.echo(f"note: {type(result.model).__name__} has no compressed layers, so there is "
                   f"nothing to pack: the file holds the float model (BatchNorms folded)")
    save(result.model, output, metadata=result.metadata)
    size = Path(output).stat().st_size
    click.echo(f"wrote {output} ({size:,} bytes, {len(result.packed)} packed layer(s)): "
               f"{result.metadata.dataset}, input {result.metadata.input_shape}")
    _write_json(json_path, {"checkpoint": checkpoint, "output": output, "bytes": size,
                            "packed_layers": result.packed,
                            "metadata": result.metadata.to_dict()})


@cli.command(name="predict")
@click.argument("model_file", type=click.Path(dir_okay=False))
@click.argument("inputs", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--top-k", "top_k", type=click.IntRange(min=1), default=5, show_default=True,
              help="How many classes to show per input (fewer if the model has fewer).")
@json_option
def predict_cmd(model_file: str, inputs: tuple[str, ...], top_k: int,
                json_path: str | None) -> None:
    """Classify INPUTS (images: PNG or JPEG; .npy arrays; WAV clips) with the frozen MODEL_FILE
    (from `edgecompress freeze`), preprocessed as in training, and print the most probable
    classes with their probabilities."""
    from .deploy import load, load_metadata
    from .deploy.predict import predict_files

    metadata = load_metadata(model_file, required_for="predict")
    results = predict_files(load(model_file), metadata, inputs, top_k)
    several = {r["input"] for r in results if r["item"] > 0}
    for r in results:
        name = f"{r['input']}[{r['item']}]" if r["input"] in several else r["input"]
        click.echo(f"{name}: " + ", ".join(f"{t['class']} {100 * t['probability']:.1f}%"
                                           for t in r["top"]))
    _write_json(json_path, {"model": model_file, "top_k": top_k, "predictions": results})


@cli.command(name="inspect")
@click.argument("path", type=click.Path(exists=False))
@json_option
def inspect_cmd(path: str, json_path: str | None) -> None:
    """Say which kind of file PATH is and what it holds: training checkpoint (recipe, model,
    methods, epoch, metrics), frozen model (class, layers, bytes, metadata), ONNX (opsets,
    inputs, outputs), pruning-phase file, recipe, or an input (image, .npy, WAV)."""
    from .inspection import format_report, inspect_file

    report = inspect_file(path)
    click.echo(format_report(report))
    _write_json(json_path, report)


@cli.command(name="causal")
@click.argument("file", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option("--pairs", "pairs_dir", is_flag=False, flag_value="", default=None,
              type=click.Path(file_okay=False), metavar="[DIR]",
              help="Instead of FILE: run the Tuebingen cause-effect pairs in DIR (default: "
                   "--data-root, else $EDGECOMPRESS_DATA/tuebingen_pairs) and print the "
                   "weighted accuracy.")
@click.option("--x", "x_column", help="FILE's cause candidate: a header name or 0-based index "
              "(default: the first column).")
@click.option("--y", "y_column", help="FILE's effect candidate (default: the second column).")
@click.option("--method", type=click.Choice(["anm", "hetero"]), default="anm",
              show_default=True, help="anm: additive noise model; hetero: the same adjusted "
              "by mechanism clusters (heterogeneous populations).")
@click.option("--level", type=float, default=0.05, show_default=True,
              help="Significance level of the independence tests.")
@click.option("--rule", type=click.Choice(["level", "forced"]),
              help="level: decide only when one direction is kept and the other rejected; "
              "forced: the direction with the higher p-value (default: level for FILE, forced "
              "for --pairs).")
@click.option("--regressor", default="gp", show_default=True,
              help="gp, kernel-ridge, gradient-boosting or spline.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--max-n", type=positive_int, help="--pairs: at most N points of each pair "
              "(a seeded subsample).")
@click.option("--limit", type=positive_int, help="--pairs: only the first K pairs.")
@data_root_option
@json_option
@progress_option
def causal_cmd(file: str | None, pairs_dir: str | None, x_column: str | None,
               y_column: str | None, method: str, level: float, rule: str | None,
               regressor: str, seed: int, max_n: int | None, limit: int | None,
               data_root: str | None, json_path: str | None, progress: bool) -> None:
    """Which way the causation goes between two columns of FILE (a CSV, with or without a
    header, or a whitespace-separated table): x->y, y->x or undecided, with both directions'
    HSIC statistics and p-values. With --pairs, the test on every Tuebingen pair instead."""
    from .causal import decide_pair, direction, load_pairs, read_columns, weighted_accuracy
    from .errors import CausalInputError

    if (file is None) == (pairs_dir is None):
        raise click.UsageError("give either FILE or --pairs [DIR]")
    options = {"method": method, "level": level, "seed": seed, "regressor": regressor}
    if file is not None:
        if max_n is not None or limit is not None:
            raise click.UsageError("--max-n and --limit apply to --pairs only")
        x, y, names = read_columns(file, x_column, y_column)
        try:
            result = direction(x, y, rule=rule or "level", **options)
        except CausalInputError as exc:  # e.g. too few rows, a constant column: name the file
            raise CausalInputError(f"{file} (x = {names[0]}, y = {names[1]}): {exc}") from None
        click.echo(f"{file}: x = {names[0]}, y = {names[1]}")
        click.echo(str(result))
        _write_json(json_path, {"file": file, "x": names[0], "y": names[1],
                                **result.to_dict()})
        return
    from tqdm.auto import tqdm

    if x_column is not None or y_column is not None:
        raise click.UsageError("--x and --y apply to FILE only")
    pairs = load_pairs(pairs_dir or data_root)[:limit]
    decisions = []
    for pair in tqdm(pairs, desc=f"causal {method}", leave=False, disable=not progress,
                     dynamic_ncols=True):
        d = decide_pair(pair, max_n=max_n, rule=rule or "forced", **options)
        decisions.append(d)
        tqdm.write(f"{pair.name}  n={d.n_used:<5} weight {pair.weight:.3f}  truth "
                   f"{pair.direction:<4} decision {d.result.direction:<9} "
                   f"{'right' if d.correct else 'wrong'}  {d.result.seconds:.2f} s")
    accuracy = weighted_accuracy(decisions)
    click.echo(f"weighted accuracy ({method}, rule {rule or 'forced'}, {len(decisions)} pairs"
               f"{f', at most {max_n} points each' if max_n else ''}): {accuracy:.3f}")
    _write_json(json_path, {**options, "rule": rule or "forced", "max_n": max_n,
                            "weighted_accuracy": accuracy,
                            "pairs": [d.to_dict() for d in decisions]})


@cli.command(name="list")
def list_() -> None:
    """List the available models, datasets, methods and quantizers."""
    from . import data, models, quantizers
    from .convert import available_methods

    for title, names in (("models", models.available()), ("datasets", data.available()),
                         ("methods", available_methods()), ("quantizers", quantizers.available())):
        click.echo(f"{title}: {', '.join(names)}")


def _fail(message: str, code: int, debug: bool = False) -> None:
    """Exit with ``code`` after printing ``message`` as one line on stderr (with ``debug``, the
    traceback of the error being handled instead)."""
    if debug:
        traceback.print_exc()
    else:
        click.echo(" ".join(line.strip() for line in message.splitlines() if line.strip()),
                   err=True)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI; every error ends it with one line on stderr, never a traceback
    (unless ``--debug``): a mistake in the command line (a usage error) or in what it names (a
    recipe, a file, a value: :class:`EdgecompressError`) exits with 2, a bug with 1."""
    settings = {"debug": False}  # set by the --debug option of the group
    try:
        code = cli.main(args=argv, prog_name="edgecompress", standalone_mode=False,
                        obj=settings)
    except click.exceptions.NoArgsIsHelpError as exc:  # bare `edgecompress`: the help
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        _fail("error: aborted", 130)
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        _fail(f"error: {exc.format_message()}{hint}", exc.exit_code)
    except click.ClickException as exc:
        _fail(f"error: {exc.format_message()}", exc.exit_code)
    except EdgecompressError as exc:
        _fail(f"error: {exc}", 2, settings["debug"])
    except Exception as exc:  # a bug: say so in one line, the traceback with --debug
        _fail(f"internal error: {type(exc).__name__}: {exc} (run with --debug for the "
              f"traceback)", 1, settings["debug"])
    if code:  # a ctx.exit(code) of a command
        sys.exit(code)


if __name__ == "__main__":
    main()
