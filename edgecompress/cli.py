"""The ``edgecompress`` command line.

- ``demo``: float vs BNN/BNN++ (W1A32, W1A1) on the bundled MNIST subset, one table;
- ``train RECIPE`` / ``eval CHECKPOINT``: a recipe's experiment, resumable, DDP under torchrun;
- ``prune RECIPE``: train -> regularize -> prune -> fine-tune, resumable per phase;
- ``summary MODEL``: parameters, bytes and MACs by precision of a zoo model, optionally converted;
- ``bench kernels`` / ``bench model``: the C kernels and a frozen model against float torch;
- ``list``: the registered models, datasets, methods and quantizers.

Every command has ``--help``; most take ``--json PATH`` for machine-readable results.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from .errors import EdgecompressError


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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edgecompress")
def cli() -> None:
    """Compress neural networks for edge devices and run them fast."""


@cli.command()
@click.option("--epochs", default=20, show_default=True, help="Epochs per model.")
@click.option("--seed", default=0, show_default=True)
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
@click.option("--data-root", help="Directory holding the dataset files (overrides the recipe).")
@click.option("--epochs", type=int, help="Override the recipe's number of epochs.")
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
@click.option("--data-root", help="Directory holding the dataset files (overrides the recipe).")
@device_option
@json_option
@progress_option
def prune(recipe: str, out_dir: str | None, resume: bool, data_root: str | None,
          device: str | None, json_path: str | None, progress: bool) -> None:
    """Prune the model of RECIPE: train (or load prune.reference) -> train with the recipe's
    regularizer (e.g. SPR) -> prune filters and remove them physically -> fine-tune (with the
    recipe's method, if any, applied after pruning, then frozen). Prints parameters, MACs,
    bytes and measured CPU latency before and after."""
    from .pruning.pipeline import format_comparison, prune_recipe
    from .recipe import Recipe

    r = Recipe.from_yaml(recipe)
    out = out_dir or r.out_dir or str(Path("runs") / r.name)
    result = prune_recipe(r, out, resume=resume, data_root=data_root, progress=progress,
                          device=device)
    for phase, metrics in result.phases.items():
        shown = {k: v for k, v in metrics.items()
                 if k.startswith(("test_", "train_top1", "threshold", "filters_"))}
        click.echo(f"{phase}: {json.dumps(shown, default=str)}")
    click.echo(format_comparison(result.comparison))
    _write_json(json_path, {"recipe": r.to_dict(), "out": out, **result.to_dict()})


@cli.command(name="eval")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--data-root", help="Directory holding the dataset files (overrides the recipe).")
@click.option("--split", type=click.Choice(["train", "valid", "test"]), default="test",
              show_default=True, help="valid: text corpora only.")
@click.option("--batch-size", type=int, help="Default: the recipe's eval_batch_size (for a "
              "language model, the number of rows the token stream is cut into).")
@device_option
@json_option
def eval_(checkpoint: str, data_root: str | None, split: str, batch_size: int | None,
          device: str | None, json_path: str | None) -> None:
    """Evaluate a trained CHECKPOINT on its recipe's dataset, with its task's metrics (top-1
    accuracy, or perplexity for a language model)."""
    from .experiment import load_trained
    from .train import evaluate, resolve_device

    where = resolve_device(device)
    model, recipe = load_trained(checkpoint)
    dataset = recipe.load_data(split, data_root)
    task = recipe.build_task(dataset)
    metrics = evaluate(model.to(where), dataset, batch_size=batch_size or recipe.eval_batch_size,
                       device=where, task=task)
    click.echo(f"{recipe.name}: {split} {task.describe(metrics)}")
    _write_json(json_path, {"checkpoint": checkpoint, "split": split, **metrics})


@cli.command()
@click.argument("target")
@click.option("--input-shape", help="Input shape without batch, e.g. 3,32,32 "
              "(default: the model's own).")
@click.option("--num-classes", type=int, default=10, show_default=True)
@click.option("--activation", help="The zoo model's activation, e.g. hardtanh (binary inputs "
              "after a relu are all +1: use hardtanh with --mode w1a1).")
@click.option("--method", help="Convert the model with this method first (e.g. bnn, s3).")
@click.option("--mode", help="Binarization mode, e.g. w1a1.")
@click.option("--bits", type=int, help="Bits per weight of a shift method, e.g. 3.")
@json_option
def summary(target: str, input_shape: str | None, num_classes: int, activation: str | None,
            method: str | None, mode: str | None, bits: int | None,
            json_path: str | None) -> None:
    """Print parameters, bytes and MACs by precision for TARGET: a model name, a recipe (.yaml)
    or a checkpoint (.pt)."""
    import torch

    from . import models
    from .analysis import summary as summarize
    from .convert import convert
    from .experiment import load_trained
    from .recipe import Recipe

    shape = tuple(int(v) for v in input_shape.split(",")) if input_shape else None
    if target.endswith((".yaml", ".yml")):
        r = Recipe.from_yaml(target)
        data = r.load_data("test")
        model, _ = r.build_model(data.num_classes, tuple(data.input_shape))
        shape = shape or tuple(data.input_shape)
    elif target.endswith(".pt"):
        model, _ = load_trained(target)
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
@click.option("--batch", default=1, show_default=True,
              help="w1a1: images per GEMM (M = batch x H x W).")
@click.option("--threads", default="1,2", show_default=True, help="Comma-separated thread counts.")
@click.option("--path", type=click.Choice(["scalar", "avx2", "avx512"]),
              help="Force a dispatch path (default: the best this CPU supports).")
@click.option("--rounds", default=5, show_default=True)
@json_option
def bench_kernels(kind: str, batch: int, threads: str, path: str | None, rounds: int,
                  json_path: str | None) -> None:
    """Binary GEMMs vs torch float32 matmul on the same shapes, in the same run."""
    from .deploy.benchmark import bench_gemm, bench_w1a32

    counts = tuple(int(t) for t in threads.split(","))
    if kind == "w1a32":
        timings = bench_w1a32(threads=counts, path=path, rounds=rounds)
        _print_timings("W1A32 sign-select GEMM vs float32 matmul", timings)
    else:
        timings = bench_gemm(batch=batch, threads=counts, path=path, rounds=rounds)
        _print_timings(f"binary GEMM vs float32 matmul, batch {batch}", timings)
    _write_json(json_path, {"kind": kind, "batch": batch, "path": path,
                            "rows": [t.to_dict() for t in timings]})


@bench.command(name="model")
@click.argument("model_name", default="resnet18")
@click.option("--batches", default="1,8", show_default=True)
@click.option("--threads", default="1,2", show_default=True)
@click.option("--rounds", default=3, show_default=True)
@json_option
def bench_model_cmd(model_name: str, batches: str, threads: str, rounds: int,
                    json_path: str | None) -> None:
    """A frozen W1A1 model (first conv and classifier float) vs the same float model."""
    import torch

    from . import models
    from .convert import convert
    from .deploy import freeze
    from .deploy.benchmark import bench_model

    torch.manual_seed(0)
    float_model = models.create(model_name, num_classes=1000 if model_name == "resnet18" else 10,
                                activation="hardtanh").eval()
    frozen = freeze(convert(float_model, "bnn", mode="w1a1"))
    timings = bench_model(float_model, frozen, tuple(float_model.input_shape),
                          tuple(int(b) for b in batches.split(",")),
                          tuple(int(t) for t in threads.split(",")), rounds)
    _print_timings(f"frozen W1A1 {model_name} vs float {model_name}", timings)
    _write_json(json_path, {"model": model_name, "rows": [t.to_dict() for t in timings]})


@cli.command(name="list")
def list_() -> None:
    """List the available models, datasets, methods and quantizers."""
    from . import data, models, quantizers
    from .convert import available_methods

    for title, names in (("models", models.available()), ("datasets", data.available()),
                         ("methods", available_methods()), ("quantizers", quantizers.available())):
        click.echo(f"{title}: {', '.join(names)}")


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI and turn our errors into one clear line and exit code 2."""
    try:
        cli.main(args=argv, prog_name="edgecompress", standalone_mode=False)
    except EdgecompressError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
