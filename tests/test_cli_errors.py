"""Mistakes a user makes on the command line: each one is a single line on stderr naming the
offending option, recipe key or file, with exit status 2, never a traceback; --debug shows the
traceback; a bug is one 'internal error' line with exit status 1.

Every invocation here fails before any training starts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from edgecompress.cli import main
from edgecompress.recipe import Recipe
from edgecompress.train import save_checkpoint

TINY = {
    "name": "tiny",
    "model": {"name": "mlp", "hidden": [16], "batchnorm": False},
    "data": {"name": "mnist-bundled", "limit": 40},
    "optimizer": {"name": "sgd", "lr": 0.05},
    "epochs": 1, "batch_size": 20,
}

#: recipe files written for the table: name -> changes to TINY
RECIPES = {
    "tiny": {},
    "epochs_str": {"epochs": "5"},
    "unknown_key": {"optimiser": {"name": "sgd"}},
    "bad_method": {"method": "bnn+++"},
    "bad_model": {"model": "alexnet"},
    "bad_lr": {"optimizer": {"name": "sgd", "lr": "fast"}},
    "bad_limit": {"data": {"name": "mnist-bundled", "limit": 0}},
    "bad_batch": {"batch_size": 0},
    "bad_shape": {"model": {"name": "mlp", "hidden": [16], "input_shape": [1, 20, 20]}},
    "real_mnist": {"data": {"name": "mnist", "limit": 40}},
    "long_ramp": {"method": {"name": "euclid", "keep_first_last": False,
                             "theta": {"kind": "linear", "start": 0, "end": 1, "ramp": 3}}},
}

# (argv with {placeholders} for the files made by `files`, words the error line must contain)
CASES = {
    "epochs negative": ("train {tiny} --epochs -1", ["'--epochs'", "-1", ">=1"]),
    "epochs zero": ("train {tiny} --epochs 0", ["'--epochs'", "0"]),
    "epochs a string in the recipe": ("train {epochs_str}", ["epochs_str.yaml", "'epochs'",
                                                             "'5'", "positive integer"]),
    "input shape with x": ("summary mlp --input-shape 3x32x32", ["'--input-shape'", "3x32x32",
                                                                 "3,32,32"]),
    "bench kernels zero rounds": ("bench kernels --rounds 0", ["'--rounds'", "0"]),
    "bench model zero rounds": ("bench model mlp --rounds 0", ["'--rounds'", "0"]),
    "bench zero threads": ("bench kernels --threads 0", ["'--threads'", "'0'"]),
    "bench bad thread list": ("bench kernels --threads 1,,2", ["'--threads'", "'1,,2'"]),
    "bench bad batch list": ("bench model mlp --batches 1,x", ["'--batches'", "'1,x'"]),
    "bench unknown kind": ("bench kernels --kind w2a2", ["'--kind'", "w2a2", "w1a1"]),
    "model does not fit the data": ("train {bad_shape}", ["model.input_shape", "[1, 20, 20]",
                                                          "(1, 28, 28)"]),
    "data root is an empty directory": ("train {real_mnist} --data-root {empty}",
                                        ["'mnist'", "{empty}", "--data-root"]),
    "data root does not exist": ("train {tiny} --data-root {tmp}/nowhere",
                                 ["'--data-root'", "nowhere"]),
    "summary of a recipe, data root empty": ("summary {real_mnist} --data-root {empty}",
                                             ["'mnist'", "{empty}"]),
    "recipe file not found": ("train {tmp}/nonexistent.yaml", ["nonexistent.yaml"]),
    "recipe with an unknown key": ("train {unknown_key}", ["'optimiser'", "valid keys"]),
    "recipe not YAML": ("train {bad_yaml}", ["bad.yaml", "YAML", "line 2"]),
    "unknown method in the recipe": ("train {bad_method}", ["'method.name'", "bnn+++",
                                                            "available"]),
    "unknown model in the recipe": ("train {bad_model}", ["'model.name'", "alexnet"]),
    "recipe lr not a number": ("train {bad_lr}", ["'optimizer.lr'", "'fast'", "number"]),
    "recipe data limit zero": ("train {bad_limit}", ["'data.limit'", "0"]),
    "recipe batch size zero": ("train {bad_batch}", ["'batch_size'", "0"]),
    "unknown model for summary": ("summary alexnet", ["alexnet", "available"]),
    "zero classes for summary": ("summary mlp --num-classes 0", ["'--num-classes'", "0"]),
    "bad device": ("train {tiny} --device gpu", ["device 'gpu'", "cpu"]),
    "bad split for the dataset": ("eval {checkpoint} --split valid", ["split 'valid'",
                                                                      "mnist-bundled", "test"]),
    "eval batch size zero": ("eval {checkpoint} --batch-size 0", ["'--batch-size'", "0"]),
    "eval bad device": ("eval {checkpoint} --device tpu", ["device 'tpu'"]),
    "eval of a missing checkpoint": ("eval {tmp}/missing.pt", ["missing.pt", "not found"]),
    "eval of a corrupt file": ("eval {garbage}", ["garbage.pt"]),
    "robustness unknown corruption": ("robustness {checkpoint} --corruption blur",
                                      ["'--corruption'", "'blur'", "available", "noise"]),
    "robustness negative sigma": ("robustness {checkpoint} --corruption noise=0.1,-0.2",
                                  ["'--corruption'", "sigma", ">= 0", "-0.2"]),
    "robustness severity not a number": ("robustness {checkpoint} --corruption rotation=x",
                                         ["'--corruption'", "'rotation=x'", "NAME=S1,S2"]),
    "robustness zero limit": ("robustness {checkpoint} --limit 0", ["'--limit'", "0"]),
    "robustness of a missing checkpoint": ("robustness {tmp}/missing.pt",
                                           ["missing.pt", "not found"]),
    "robustness of a recipe": ("robustness {tiny}", ["tiny.yaml"]),
    "train resume without checkpoint": ("train {tiny} --resume --out {tmp}/new_run",
                                        ["new_run", "resume"]),
    "prune resume without a run": ("prune {tiny} --resume --out {tmp}/new_prune",
                                   ["new_prune", "resume"]),
    "schedule ramp longer than the run": ("train {long_ramp} --out {tmp}/ramp_run",
                                          ["'theta'", "ramp=3 epochs", "(1 epochs)",
                                           "ramp <= 1"]),
    "demo negative seed": ("demo --seed -1", ["'--seed'", "-1"]),
    "demo zero epochs": ("demo --epochs 0", ["'--epochs'"]),
    "missing argument": ("train", ["'RECIPE'", "edgecompress train --help"]),
    "misspelt option": ("train {tiny} --epoch 3", ["'--epoch'", "--epochs"]),
    "unknown command": ("trian {tiny}", ["'trian'"]),
}


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    """The recipes of RECIPES, a bad YAML file, a corrupt .pt, an empty directory and a real
    (untrained) checkpoint of the tiny recipe, by placeholder name."""
    paths = {"tmp": str(tmp_path)}
    for name, changes in RECIPES.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({**TINY, **changes}))
        paths[name] = str(path)
    (tmp_path / "bad.yaml").write_text("model: [mlp\ndata: mnist-bundled\n")
    paths["bad_yaml"] = str(tmp_path / "bad.yaml")
    (tmp_path / "garbage.pt").write_bytes(os.urandom(300))
    paths["garbage"] = str(tmp_path / "garbage.pt")
    (tmp_path / "empty").mkdir()
    paths["empty"] = str(tmp_path / "empty")
    recipe = Recipe.from_yaml(paths["tiny"])
    model, _ = recipe.build_model(10, (1, 28, 28))
    save_checkpoint(tmp_path / "checkpoint.pt", {
        "model": model.state_dict(), "epoch": 1,
        "extra_state": {"recipe": recipe.to_dict(), "num_classes": 10, "input_shape": [1, 28, 28]}})
    paths["checkpoint"] = str(tmp_path / "checkpoint.pt")
    return paths


def run_main(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
        raise SystemExit(0)
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err


@pytest.mark.parametrize("argv, words", CASES.values(), ids=CASES.keys())
def test_a_mistake_is_one_line_naming_it(argv, words, files, capsys):
    code, out, err = run_main(argv.format(**files).split(), capsys)
    assert code == 2, err
    assert err.endswith("\n") and err.count("\n") == 1, err  # exactly one line
    assert err.startswith("error: ") and "Traceback" not in err
    for word in words:
        assert word.format(**files) in err, (word, err)
    assert "epoch 1" not in out  # nothing trained


def test_the_table_is_long_enough():
    assert len(CASES) >= 22


def test_debug_shows_the_traceback(files, capsys):
    code, _, err = run_main(["--debug", "train", files["epochs_str"]], capsys)
    assert code == 2
    assert "Traceback (most recent call last)" in err and "RecipeError" in err
    assert "'epochs'" in err


def test_a_bug_is_one_internal_error_line(monkeypatch, capsys):
    import edgecompress.models

    def broken() -> list[str]:
        raise RuntimeError("registry exploded")

    monkeypatch.setattr(edgecompress.models, "available", broken)
    code, _, err = run_main(["list"], capsys)
    assert code == 1
    assert err == ("internal error: RuntimeError: registry exploded (run with --debug for the "
                   "traceback)\n")
    code, _, err = run_main(["--debug", "list"], capsys)
    assert code == 1 and "Traceback (most recent call last)" in err and "broken" in err


def test_help_and_version_still_exit_zero(capsys):
    assert run_main(["--help"], capsys)[0] == 0
    code, out, _ = run_main(["--version"], capsys)
    assert code == 0 and "version" in out
