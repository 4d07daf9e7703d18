"""The edgecompress command line, end to end on tiny runs of the bundled data."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from click.testing import CliRunner

from edgecompress.cli import cli, main

from .torchrun import train_alone_and_under_torchrun

COMMANDS = ["demo", "train", "eval", "summary", "list", "bench", "bench kernels", "bench model", "prune",
            "freeze", "predict", "inspect", "robustness"]


def tiny_recipe(tmp_path: Path, **changes) -> Path:
    raw = {
        "name": "tiny",
        "model": {"name": "mlp", "hidden": [32], "batchnorm": False},
        "data": {"name": "mnist-bundled", "limit": 400},
        "method": {"name": "bnn", "mode": "w1a32"},
        "optimizer": {"name": "sgd", "lr": 0.05},
        "epochs": 2, "batch_size": 40, "seed": 3,
    }
    raw.update(changes)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def run_main(argv, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
        raise SystemExit(0)
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    result = CliRunner().invoke(cli, [*command.split(), "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_list_names_models_datasets_and_methods():
    result = CliRunner().invoke(cli, ["list"])
    assert result.exit_code == 0
    for word in ("resnet20", "mnist-bundled", "bnn++", "signswish"):
        assert word in result.output


def test_summary_of_a_converted_model_writes_json(tmp_path):
    out = tmp_path / "s.json"
    result = CliRunner().invoke(cli, ["summary", "mlp", "--activation", "hardtanh", "--method",
                                      "bnn", "--mode", "w1a1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert "w1a1" in json.dumps(data)
    assert "Total" in result.output or "total" in result.output


def test_train_eval_round_trip(tmp_path):
    recipe = tiny_recipe(tmp_path, model={"name": "mlp", "hidden": [32, 32]})
    run_dir, train_json, eval_json = tmp_path / "run", tmp_path / "train.json", tmp_path / "e.json"
    result = CliRunner().invoke(cli, ["train", str(recipe), "--out", str(run_dir), "--no-progress",
                                      "--json", str(train_json)])
    assert result.exit_code == 0, result.output
    for name in ("checkpoint.pt", "metrics.jsonl", "curves.png", "weights.png"):
        assert (run_dir / name).is_file(), name
    trained = json.loads(train_json.read_text())["metrics"]
    result = CliRunner().invoke(cli, ["eval", str(run_dir / "checkpoint.pt"), "--json",
                                      str(eval_json)])
    assert result.exit_code == 0, result.output
    evaluated = json.loads(eval_json.read_text())
    assert evaluated["top1"] == pytest.approx(trained["test_top1"])
    assert evaluated["loss"] == pytest.approx(trained["test_loss"], rel=1e-5)


def test_cli_errors_are_one_clear_line(tmp_path, capsys):
    bad = tiny_recipe(tmp_path, optimiser={"name": "sgd"})
    code, _, err = run_main(["train", str(bad)], capsys)
    assert code == 2 and "unknown key(s) 'optimiser'" in err and "Traceback" not in err
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(os.urandom(256))
    code, _, err = run_main(["eval", str(garbage)], capsys)
    assert code == 2 and "garbage.pt" in err
    augmented = tiny_recipe(tmp_path, data={"name": "mnist-bundled", "augment": True})
    code, _, err = run_main(["train", str(augmented)], capsys)
    assert code == 2 and "defines no augmentation" in err and "Traceback" not in err
    code, _, err = run_main(["summary", "alexnet"], capsys)
    assert code == 2 and "available:" in err and "resnet20" in err


@pytest.mark.slow
def test_torchrun_two_processes_match_one_process(tmp_path):
    """`torchrun --nproc_per_node 2 -m edgecompress.cli train` ends with the weights of the
    1-process run with the same global batch and seed (a model without BatchNorm, binarized with
    the scheduled BNN++ so that quantizer schedules are exercised under DDP too)."""
    recipe = tiny_recipe(tmp_path, model={"name": "mlp", "hidden": [32, 32], "batchnorm": False},
                         method={"name": "bnn++"})
    train_alone_and_under_torchrun(recipe, tmp_path)


def test_distillation_recipe_uses_a_trained_teacher(tmp_path):
    teacher_dir = tmp_path / "teacher"
    float_recipe = tiny_recipe(tmp_path, method=None)
    assert CliRunner().invoke(cli, ["train", str(float_recipe), "--out", str(teacher_dir),
                                    "--no-progress"]).exit_code == 0
    student = tmp_path / "student.yaml"
    raw = yaml.safe_load(float_recipe.read_text())
    raw.update(name="student", method={"name": "bnn"},
               distill={"teacher": str(teacher_dir / "checkpoint.pt"), "alpha": 0.7})
    student.write_text(yaml.safe_dump(raw))
    out = tmp_path / "student.json"
    result = CliRunner().invoke(cli, ["train", str(student), "--out", str(tmp_path / "s"),
                                      "--no-progress", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["recipe"]["distill"]["alpha"] == 0.7
    from edgecompress.train import load_checkpoint
    assert load_checkpoint(tmp_path / "s" / "checkpoint.pt")["config"]["kd_alpha"] == 0.7


def test_summary_of_recipe_and_checkpoint_agree(tmp_path):
    recipe = tiny_recipe(tmp_path, model={"name": "mlp", "hidden": [32, 32]})
    run_dir = tmp_path / "run"
    assert CliRunner().invoke(cli, ["train", str(recipe), "--out", str(run_dir),
                                    "--no-progress"]).exit_code == 0
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert CliRunner().invoke(cli, ["summary", str(recipe), "--json", str(a)]).exit_code == 0
    assert CliRunner().invoke(cli, ["summary", str(run_dir / "checkpoint.pt"), "--json",
                                    str(b)]).exit_code == 0
    da, db = json.loads(a.read_text()), json.loads(b.read_text())
    assert da["macs_by_precision"] == db["macs_by_precision"] and "w1a32" in da["macs_by_precision"]
    assert da["params_by_bits"] == db["params_by_bits"] == {"1": 32 * 32, "32": da["total_params"]
                                                             - 32 * 32}


def test_readme_python_example_runs(tmp_path, monkeypatch):
    """The README's ten-line API tour is real code (epochs cut to 1 to stay fast)."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = readme.split("```python\n", 1)[1].split("```", 1)[0]
    assert "epochs=5" in code
    monkeypatch.chdir(tmp_path)
    exec(compile(code.replace("epochs=5", "epochs=1"), "README.md", "exec"), {})


def _bench_kernels(tmp_path: Path, *options: str) -> tuple[Any, list[dict[str, Any]]]:
    """``edgecompress bench kernels`` at one thread and round with ``options``: its result
    (exit status checked) and the rows of its JSON file."""
    out = tmp_path / "k.json"
    result = CliRunner().invoke(cli, ["bench", "kernels", "--threads", "1", "--rounds", "1",
                                      *options, "--json", str(out)])
    assert result.exit_code == 0, result.output
    return result, json.loads(out.read_text())["rows"]


def test_bench_kernels_reports_every_resnet18_stage(tmp_path):
    _, rows = _bench_kernels(tmp_path, "--path", "scalar")
    assert [r["name"].split(" M=")[0] for r in rows] == ["stage 1", "stage 2", "stage 3",
                                                          "stage 4"]
    assert all(r["candidate_ms"] > 0 and r["baseline_ms"] > 0 for r in rows)


def test_bench_kernels_w1a32_reports_every_shape_and_batch(tmp_path):
    from edgecompress.deploy.benchmark import W1A32_SHAPES
    result, rows = _bench_kernels(tmp_path, "--kind", "w1a32")
    assert [r["name"] for r in rows] == [f"{label} M={m}" for label in W1A32_SHAPES
                                         for m in (1, 8, 64)]
    assert "W1A32 sign-select GEMM" in result.output


def test_summary_of_a_shift_network_counts_its_bits(tmp_path, capsys):
    out = tmp_path / "s.json"
    result = CliRunner().invoke(cli, ["summary", "resnet20", "--method", "s3", "--bits", "3",
                                      "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert "w3a32" in data["macs_by_precision"] and "3" in map(str, data["params_by_bits"])
    code, _, err = run_main(["summary", "resnet20", "--method", "s3", "--mode", "w1a1"], capsys)
    assert code == 2 and "bad option for method 's3'" in err and "Traceback" not in err


TIMING_FIELDS = {"name", "threads", "candidate_ms", "baseline_ms", "speedup"}


def _check_timing_rows(rows):
    for r in rows:
        assert set(r) == TIMING_FIELDS, r
        assert r["candidate_ms"] > 0 and r["baseline_ms"] > 0
        assert r["speedup"] == pytest.approx(r["baseline_ms"] / r["candidate_ms"])


@pytest.mark.parametrize("model_name", ["convnet", "mlp"])
def test_bench_model_short_run_writes_every_batch_and_thread_count(tmp_path, model_name):
    out = tmp_path / "m.json"
    threads_before = torch.get_num_threads()
    result = CliRunner().invoke(cli, ["bench", "model", model_name, "--batches", "1,2",
                                      "--threads", "1,2", "--rounds", "1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert torch.get_num_threads() == threads_before  # the benchmark restores it
    assert f"frozen W1A1 {model_name} vs float {model_name}" in result.output
    data = json.loads(out.read_text())
    assert data["model"] == model_name
    rows = data["rows"]
    # per batch and thread count: against the float model, then its channels-last copy
    assert [(r["name"], r["threads"]) for r in rows] == [
        (name, t) for b in (1, 2) for t in (1, 2)
        for name in (f"batch {b}", f"batch {b}, float channels-last")]
    _check_timing_rows(rows)


def test_bench_model_with_a_low_bit_first_convolution(tmp_path, capsys):
    result = CliRunner().invoke(cli, ["bench", "model", "convnet", "--stem-bits", "8",
                                      "--batches", "1", "--threads", "1", "--rounds", "1"])
    assert result.exit_code == 0, result.output
    assert "frozen W1A1 convnet (8-bit first conv) vs float convnet" in result.output
    code, _, err = run_main(["bench", "model", "mlp", "--stem-bits", "8", "--batches", "1",
                             "--threads", "1", "--rounds", "1"], capsys)
    assert code == 2 and "mlp has no convolution" in err and "Traceback" not in err


def test_bench_model_profile_prints_the_parts_and_writes_json(tmp_path):
    out = tmp_path / "p.json"
    result = CliRunner().invoke(cli, ["bench", "model", "convnet", "--profile", "--batches",
                                      "1,2", "--threads", "1", "--rounds", "1", "--json",
                                      str(out)])
    assert result.exit_code == 0, result.output
    assert "frozen convnet: time per part" in result.output
    data = json.loads(out.read_text())
    assert data["model"] == "convnet"
    assert [(p["batch"], p["threads"]) for p in data["profiles"]] == [(1, 1), (2, 1)]
    for p in data["profiles"]:
        assert f"batch {p['batch']}, 1 thread(s)" in result.output
        assert sum(p["parts"].values()) == pytest.approx(p["total_ms"])
        for part in p["parts"]:  # one table row per part, with its share
            assert any(line.strip().startswith(part) and line.endswith("%")
                       for line in result.output.splitlines()), part


def test_bench_model_of_an_unknown_model_is_one_clear_line(capsys):
    code, _, err = run_main(["bench", "model", "alexnet", "--batches", "1", "--threads", "1",
                             "--rounds", "1"], capsys)
    assert code == 2 and "alexnet" in err and "available:" in err and "Traceback" not in err


def test_bench_kernels_batch_and_threads_options(tmp_path):
    from edgecompress.deploy.benchmark import RESNET18_SHAPES
    out = tmp_path / "k.json"
    result = CliRunner().invoke(cli, ["bench", "kernels", "--batch", "2", "--threads", "1,2",
                                      "--rounds", "1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "binary GEMM vs float32 matmul, batch 2" in result.output
    data = json.loads(out.read_text())
    assert (data["kind"], data["batch"], data["path"]) == ("w1a1", 2, None)
    expected = [(f"{label} M={2 * m} K={k} N={n}", t)
                for label, (m, k, n) in RESNET18_SHAPES.items() for t in (1, 2)]
    assert [(r["name"], r["threads"]) for r in data["rows"]] == expected
    _check_timing_rows(data["rows"])


def test_checkpoint_remembers_the_data_root(tmp_path, shared_data, monkeypatch, capsys):
    """eval (and summary) of a checkpoint read the data from the --data-root of its training; an
    explicit --data-root wins."""
    mnist = shared_data("mnist")
    monkeypatch.setenv("EDGECOMPRESS_DATA", str(tmp_path / "elsewhere"))  # no default data
    recipe = tiny_recipe(tmp_path, data={"name": "mnist", "limit": 200}, method=None, epochs=1)
    run_dir, trained, evaluated = tmp_path / "run", tmp_path / "t.json", tmp_path / "e.json"
    code, _, err = run_main(["train", str(recipe), "--out", str(run_dir), "--data-root",
                             str(mnist), "--no-progress", "--json", str(trained)], capsys)
    assert code == 0, err
    from edgecompress.train import load_checkpoint
    extra = load_checkpoint(run_dir / "checkpoint.pt")["extra_state"]
    assert extra["data_root"] == str(mnist.resolve())
    code, _, err = run_main(["eval", str(run_dir / "checkpoint.pt"), "--json", str(evaluated)],
                            capsys)
    assert code == 0, err
    assert json.loads(evaluated.read_text())["top1"] == pytest.approx(
        json.loads(trained.read_text())["metrics"]["test_top1"])
    (tmp_path / "empty").mkdir()
    code, _, err = run_main(["eval", str(run_dir / "checkpoint.pt"), "--data-root",
                             str(tmp_path / "empty")], capsys)
    assert code == 2 and "files not found in " + str(tmp_path / "empty") in err


def test_summary_of_a_recipe_takes_data_root(tmp_path, shared_data, monkeypatch, capsys):
    mnist = shared_data("mnist")
    monkeypatch.setenv("EDGECOMPRESS_DATA", str(tmp_path / "elsewhere"))
    recipe = tiny_recipe(tmp_path, data={"name": "mnist"}, method=None)
    code, _, err = run_main(["summary", str(recipe)], capsys)
    assert code == 2 and "--data-root" in err
    code, out, err = run_main(["summary", str(recipe), "--data-root", str(mnist)], capsys)
    assert code == 0, err
    assert f"{784 * 32 + 32 + 32 * 10 + 10:,}" in out  # mlp 784-32-10 parameters


def test_train_resume_continues_an_existing_run(tmp_path, capsys):
    recipe = tiny_recipe(tmp_path, method=None, epochs=1)
    run_dir = tmp_path / "run"
    assert run_main(["train", str(recipe), "--out", str(run_dir), "--no-progress"], capsys)[0] == 0
    code, out, err = run_main(["train", str(recipe), "--out", str(run_dir), "--resume",
                               "--epochs", "2", "--no-progress"], capsys)
    # the epochs changed, so the checkpoint cannot be continued: said, not trained from scratch
    assert code == 2 and "configuration changed" in err
    code, out, err = run_main(["train", str(recipe), "--out", str(run_dir), "--resume",
                               "--no-progress"], capsys)
    assert code == 0, err
    assert '"epoch": 1' in out


def test_robustness_writes_a_table_a_plot_and_consistent_json(tmp_path):
    recipe = tiny_recipe(tmp_path, data={"name": "mnist-bundled", "limit": 120}, epochs=1,
                         method=None)
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(cli, ["train", str(recipe), "--out", str(run_dir),
                                      "--no-progress"])
    assert result.exit_code == 0, result.output
    checkpoint = str(run_dir / "checkpoint.pt")
    eval_json, robust_json, plot = tmp_path / "e.json", tmp_path / "r.json", tmp_path / "r.png"
    assert CliRunner().invoke(cli, ["eval", checkpoint, "--json", str(eval_json)]).exit_code == 0
    result = CliRunner().invoke(cli, [
        "robustness", checkpoint, "--corruption", "noise=0.1,0.4", "--corruption", "rotation",
        "--limit", "60", "--seed", "2", "--json", str(robust_json), "--plot", str(plot),
        "--no-progress"])
    assert result.exit_code == 0, result.output
    data = json.loads(robust_json.read_text())
    assert data["samples"] == 60 and data["seed"] == 2 and data["checkpoint"] == checkpoint
    assert [(r["family"], r["severity"]) for r in data["rows"]] == [
        ("noise", 0.1), ("noise", 0.4), ("rotation", 5), ("rotation", 10), ("rotation", 15),
        ("rotation", 20), ("rotation", 30)]
    for row in [data["clean"], *data["rows"]]:  # whole samples of 60
        assert row["top1"] * 60 / 100 == pytest.approx(round(row["top1"] * 60 / 100))
    lines = result.output.splitlines()
    assert f"{data['clean']['top1']:.2f}" in next(line for line in lines if line.startswith("clean"))
    for row in data["rows"]:
        assert any(line.split()[:2] == [row["family"], f"{row['severity']:g}"]
                   and f"{row['top1']:.2f}" in line for line in lines), row
    assert plot.read_bytes()[:4] == b"\x89PNG"
    # without --limit: the whole test split of the recipe, the same clean accuracy as `eval`
    result = CliRunner().invoke(cli, ["robustness", checkpoint, "--corruption", "contrast=0.5",
                                      "--json", str(robust_json), "--no-progress"])
    assert result.exit_code == 0, result.output
    whole = json.loads(robust_json.read_text())
    assert whole["clean"]["top1"] == pytest.approx(json.loads(eval_json.read_text())["top1"])
