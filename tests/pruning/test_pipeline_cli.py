"""``edgecompress prune``: train -> regularize -> prune -> fine-tune, end to end on tiny runs,
resumable after a kill in any phase, with a before/after report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from edgecompress.cli import cli
from edgecompress.errors import CheckpointError, RecipeError
from edgecompress.pruning.pipeline import prune_recipe
from edgecompress.recipe import Recipe
from edgecompress.train import Callback


def tiny(**changes) -> dict:
    raw = {
        "name": "tiny-prune",
        "model": {"name": "convnet", "width": 0.25},
        "data": {"name": "mnist-bundled", "limit": 200},
        "optimizer": {"name": "sgd", "lr": 0.05},
        "epochs": 1, "batch_size": 50, "seed": 1,
        "regularizer": {"name": "spr", "lam": 2.0, "alpha": 0.1},
        # tolerance 100 points: the search removes all but the largest filter(s) of each layer
        "prune": {"tolerance": 100.0, "regularize": {"epochs": 2}},
    }
    raw.update(changes)
    return raw


def without_seconds(phases: dict) -> dict:
    return {p: {k: v for k, v in m.items() if k != "seconds"} for p, m in phases.items()}


@pytest.mark.slow
def test_prune_command_runs_end_to_end_and_reports_fewer_params_and_macs(tmp_path):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(tiny()))
    out, report = tmp_path / "run", tmp_path / "report.json"
    result = CliRunner().invoke(cli, ["prune", str(recipe), "--out", str(out), "--json",
                                      str(report), "--no-progress"])
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    assert list(data["phases"]) == ["train", "regularize", "prune", "finetune"]
    assert data["phases"]["prune"]["filters_removed"] > 0
    for key in ("params", "macs", "bytes"):
        assert data[key]["after"] < data[key]["before"], key
        assert data[key]["ratio"] == pytest.approx(data[key]["before"] / data[key]["after"])
    assert data["latency_ms"]["before"] > 0 and data["latency_ms"]["after"] > 0
    assert "latency_ms" in result.output and "macs" in result.output
    for phase in ("train", "regularize", "finetune"):
        assert (out / phase / "checkpoint.pt").is_file()
        assert (out / phase / "metrics.jsonl").is_file()


@pytest.mark.slow
def test_a_fixed_threshold_of_zero_removes_only_all_zero_filters(tmp_path):
    raw = tiny(prune={"threshold": 0.0})
    result = prune_recipe(Recipe.from_dict(raw), tmp_path, progress=False, latency_rounds=1)
    assert result.phases["prune"]["threshold"] == 0.0
    assert result.phases["prune"]["filters_removed"] == 0
    assert result.comparison["params"]["after"] == result.comparison["params"]["before"]


@pytest.mark.slow
def test_a_reference_checkpoint_replaces_the_train_phase(tmp_path):
    from edgecompress.experiment import run

    raw = tiny()
    run(Recipe.from_dict({k: v for k, v in raw.items() if k not in ("prune", "regularizer")}),
        out_dir=tmp_path / "ref", progress=False)
    raw["prune"] = {**raw["prune"], "reference": str(tmp_path / "ref" / "checkpoint.pt")}
    result = prune_recipe(Recipe.from_dict(raw), tmp_path / "run", progress=False,
                          latency_rounds=1)
    assert result.phases["train"]["reference"] == raw["prune"]["reference"]
    assert not (tmp_path / "run" / "train" / "checkpoint.pt").exists()  # nothing trained
    trained = torch.load(tmp_path / "ref" / "checkpoint.pt", weights_only=True)["model"]
    before = result.before.state_dict()
    assert all(torch.equal(before[k], trained[k]) for k in trained)
    assert result.comparison["params"]["after"] < result.comparison["params"]["before"]


class Crash(Callback):
    """Simulates a kill during one phase: raises at step ``step`` (counted over the phase)."""

    def __init__(self, step: int | None) -> None:
        self.step = step

    def on_step_end(self, trainer, step, loss):
        if self.step is not None and step == self.step:
            raise KeyboardInterrupt("simulated kill")


@pytest.mark.slow
def test_kill_during_regularize_then_resume_gives_the_uninterrupted_result(tmp_path):
    recipe = Recipe.from_dict(tiny())
    full = prune_recipe(recipe, tmp_path / "full", progress=False, latency_rounds=1)

    out = tmp_path / "killed"
    # 4 steps per epoch (200 images, batch 50): step 6 is in the second regularize epoch
    with pytest.raises(KeyboardInterrupt):
        prune_recipe(recipe, out, progress=False, callbacks={"regularize": (Crash(6),)})
    state = json.loads((out / "prune_state.json").read_text())
    assert list(state["phases"]) == ["train"]  # the train phase finished, regularize did not
    mtime = (out / "train" / "checkpoint.pt").stat().st_mtime_ns
    # the resumed run has the same callbacks (the crash one inactive), as its checkpoint says
    resumed = prune_recipe(recipe, out, resume=True, progress=False, latency_rounds=1,
                           callbacks={"regularize": (Crash(None),)})
    assert (out / "train" / "checkpoint.pt").stat().st_mtime_ns == mtime  # not redone
    assert without_seconds(resumed.phases) == without_seconds(full.phases)
    a, b = resumed.after.state_dict(), full.after.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for key in ("params", "macs", "bytes"):
        assert resumed.comparison[key] == full.comparison[key]

    # a finished run resumed again redoes nothing: the models come from the phase files
    again = prune_recipe(recipe, out, resume=True, progress=False, latency_rounds=1)
    assert without_seconds(again.phases) == without_seconds(full.phases)
    c = again.after.state_dict()
    assert all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.slow
def test_prune_then_binarize_shows_both_savings_and_a_smaller_file(tmp_path):
    raw = tiny(model={"name": "convnet", "width": 0.25, "activation": "hardtanh"},
               method={"name": "bnn", "mode": "w1a1"})
    result = prune_recipe(Recipe.from_dict(raw), tmp_path, progress=False, latency_rounds=1)
    c = result.comparison
    assert c["params"]["after"] < c["params"]["before"]
    # binary weights: the stored bytes fall more than the parameter count
    assert c["bytes"]["ratio"] > c["params"]["ratio"]
    assert c["file_bytes"]["after"] < c["file_bytes"]["before"]
    assert (tmp_path / "model.safetensors").stat().st_size == c["file_bytes"]["after"]


@pytest.mark.parametrize("prune, message", [
    ({"tolerence": 1.0}, r"'prune.tolerence'.*valid keys of prune: criterion, finetune, groups, "
                         r"macs_reduction, ratio, reference, regularize, residual, round_to, "
                         r"start_from, survive_fraction, threshold, tolerance, train"),
    ({"criterion": "random"}, r"'prune.criterion' must be one of magnitude, l1"),
    ({"criterion": "l1", "threshold": 0.1}, r"prune.threshold do not apply to prune.criterion "
                                            r"'l1'"),
    ({"ratio": 0.5}, r"prune.ratio do not apply to prune.criterion 'magnitude'"),
    ({"macs_reduction": 0.5, "tolerance": 1.0}, "exclude each other"),
    ({"macs_reduction": 1.0}, r"prune.macs_reduction must be a number in \(0, 1\)"),
    ({"criterion": "l1", "ratio": 1.0}, r"'prune.ratio' must be a number >= 0 and < 1"),
    ({"round_to": 8}, "'prune.round_to' needs 'prune.macs_reduction'"),
    ({"macs_reduction": 0.5, "round_to": 0}, "'prune.round_to' must be a positive int"),
    ({"criterion": "l1", "residual": "yes"}, "'prune.residual' must be bool"),
    ({"finetune": {"epoch": 2}}, r"'prune.finetune.epoch'.*valid keys of prune.finetune: "
                                 r"epochs, optimizer, schedule"),
    ({"regularize": {"optimizer": {"name": "sgd", "lrate": 1}}},
     r"'prune.regularize.optimizer.lrate'"),
    ({"threshold": 0.1, "tolerance": 1.0}, "exclude each other"),
    ({"tolerance": -1}, r"'prune.tolerance' must be a number >= 0"),
    ({"groups": "conv+lstm"}, "conv\\+lstm"),
    ({"train": {"epochs": 0}}, "'prune.train.epochs' must be a positive integer, got 0"),
    ({"finetune": {"optimizer": "rmsprop"}}, "unknown optimizer 'rmsprop'"),
])
def test_bad_prune_sections_are_recipe_errors(prune, message):
    with pytest.raises(RecipeError, match=message):
        Recipe.from_dict(tiny(prune=prune))


def test_phase_settings_default_to_the_recipes():
    recipe = Recipe.from_dict(tiny(prune={"finetune": {"epochs": 3, "optimizer": {
        "name": "adam", "lr": 0.01}}}))
    assert recipe.phase("train").train_config() == recipe.train_config()
    finetune = recipe.phase("finetune").train_config()
    assert (finetune.epochs, finetune.optimizer, finetune.lr) == (3, "adam", 0.01)
    assert finetune.batch_size == recipe.batch_size


@pytest.mark.slow
def test_l1_at_a_macs_budget_without_a_regularizer_skips_the_regularize_phase(tmp_path):
    raw = tiny(regularizer=None, prune={"criterion": "l1", "macs_reduction": 0.4,
                                        "residual": True})
    result = prune_recipe(Recipe.from_dict(raw), tmp_path, progress=False, latency_rounds=1)
    assert "skipped" in result.phases["regularize"]
    assert not (tmp_path / "regularize").exists()  # nothing trained
    pruned = result.phases["prune"]
    assert pruned["criterion"] == "l1" and pruned["macs_reduction"] == 0.4
    assert pruned["macs_removed"] >= 0.4
    c = result.comparison
    assert 1 - c["macs"]["after"] / c["macs"]["before"] == pytest.approx(pruned["macs_removed"])


@pytest.mark.slow
def test_every_phase_checkpoint_rebuilds_its_model_for_eval(tmp_path):
    from edgecompress.experiment import load_trained
    from edgecompress.layers import CompressedLayer

    raw = tiny(model={"name": "convnet", "width": 0.25, "activation": "hardtanh"},
               method={"name": "bnn", "mode": "w1a32"})
    result = prune_recipe(Recipe.from_dict(raw), tmp_path, progress=False, latency_rounds=1)
    widths = {}
    for phase in ("train", "regularize", "prune", "finetune"):
        for file in ("model.pt", "checkpoint.pt"):
            path = tmp_path / phase / file
            if not path.exists():  # the prune phase trains nothing: no trainer checkpoint
                assert phase == "prune" and file == "checkpoint.pt"
                continue
            model, recipe = load_trained(path)
            assert recipe.name == raw["name"]
            widths[phase] = sum(p.numel() for p in model.parameters())
            binary = any(isinstance(m, CompressedLayer) for m in model.modules())
            assert binary == (phase == "finetune"), (phase, file)
            out = CliRunner().invoke(cli, ["eval", str(path), "--json", str(tmp_path / "e.json")])
            assert out.exit_code == 0, out.output
            top1 = json.loads((tmp_path / "e.json").read_text())["top1"]
            assert top1 == pytest.approx(result.phases[phase]["test_top1"]), (phase, file)
    assert widths["train"] == widths["regularize"] > widths["prune"]
    # the rebuilt fine-tuned model is the one the pipeline froze
    model, _ = load_trained(tmp_path / "finetune" / "model.pt")
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(model(x), result.after(x), atol=1e-4)
    # and a phase checkpoint freezes into a deployable file like any other
    out = CliRunner().invoke(cli, ["freeze", str(tmp_path / "finetune" / "model.pt"), "-o",
                                   str(tmp_path / "pruned.safetensors")])
    assert out.exit_code == 0, out.output
    from edgecompress import deploy
    with torch.no_grad():
        assert torch.allclose(deploy.load(tmp_path / "pruned.safetensors")(x), result.after(x),
                              atol=1e-4)


@pytest.mark.slow
def test_start_from_reuses_another_runs_train_and_regularize_phases(tmp_path):
    from edgecompress.experiment import load_trained

    first = prune_recipe(Recipe.from_dict(tiny()), tmp_path / "a", progress=False,
                         latency_rounds=1)
    raw = tiny(name="tiny-prune-budget", prune={
        "start_from": str(tmp_path / "a"), "macs_reduction": 0.3, "round_to": 2,
        "regularize": {"epochs": 2}})
    second = prune_recipe(Recipe.from_dict(raw), tmp_path / "b", progress=False,
                          latency_rounds=1)
    for phase in ("train", "regularize"):
        assert not (tmp_path / "b" / phase / "checkpoint.pt").exists()  # not retrained
        # the copied phase checkpoint rebuilds as this run's
        assert load_trained(tmp_path / "b" / phase / "model.pt")[1].name == raw["name"]
        assert second.phases[phase]["from"] == str(tmp_path / "a")
        assert second.phases[phase]["test_top1"] == first.phases[phase]["test_top1"]
    assert second.phases["prune"]["macs_removed"] >= 0.3
    a, b = first.before.state_dict(), second.before.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # the same reference
    for name, module in second.after.named_modules():
        if isinstance(module, torch.nn.Conv2d):
            assert module.out_channels % 2 == 0, name

    # another regularizer: the train phase is reused, the regularize phase is trained anew
    lasso = tiny(regularizer={"name": "group-lasso", "lam": 0.5}, prune={
        "start_from": str(tmp_path / "a"), "macs_reduction": 0.3, "regularize": {"epochs": 1}})
    third = prune_recipe(Recipe.from_dict(lasso), tmp_path / "c", progress=False,
                         latency_rounds=1)
    assert third.phases["train"]["from"] == str(tmp_path / "a")
    assert "from" not in third.phases["regularize"]
    assert (tmp_path / "c" / "regularize" / "checkpoint.pt").is_file()
    # a run whose train phase would differ (another seed) cannot start there
    with pytest.raises(CheckpointError, match=r"prune_state.json: cannot start from that run, "
                                              r"its recipe differs in seed"):
        prune_recipe(Recipe.from_dict({**raw, "seed": 5}), tmp_path / "d", progress=False)


def test_start_from_a_directory_without_a_prune_run_is_a_clear_error(tmp_path):
    raw = tiny(prune={"start_from": str(tmp_path / "nothing"), "macs_reduction": 0.3})
    with pytest.raises(CheckpointError, match=r"nothing/prune_state.json: missing"):
        prune_recipe(Recipe.from_dict(raw), tmp_path / "run", progress=False)


def test_shipped_pruning_recipes_are_valid():
    paths = sorted(Path(__file__).parents[2].glob("recipes/pruning/*.yaml"))
    assert paths
    for path in paths:
        assert Recipe.from_yaml(path).prune is not None


KILL_SCRIPT = """
import json, os, signal, sys
from edgecompress.pruning.pipeline import prune_recipe
from edgecompress.recipe import Recipe
from edgecompress.train import Callback

class Kill(Callback):
    def __init__(self, active):
        self.active = active

    def on_step_end(self, trainer, step, loss):
        if self.active and step == 6:  # in the second fine-tuning epoch
            os.kill(os.getpid(), signal.SIGKILL)

mode = sys.argv[3]  # fresh (killed), resume, or full (the uninterrupted run)
recipe = Recipe.from_dict(json.loads(sys.argv[1]))
prune_recipe(recipe, sys.argv[2], resume=mode == "resume", progress=False, latency_rounds=1,
             callbacks={"finetune": (Kill(mode == "fresh"),)})
"""


@pytest.mark.slow
def test_sigkill_during_finetune_then_resume_gives_the_uninterrupted_result(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    raw = tiny(prune={"tolerance": 100.0, "finetune": {"epochs": 2}})
    script = tmp_path / "run.py"
    script.write_text(KILL_SCRIPT)
    out = tmp_path / "killed"
    root = str(Path(__file__).parents[2])
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    argv = [sys.executable, str(script), json.dumps(raw), str(out)]
    killed = subprocess.run([*argv, "fresh"], env=env)
    assert killed.returncode == -signal.SIGKILL
    assert list(json.loads((out / "prune_state.json").read_text())["phases"]) == [
        "train", "regularize", "prune"]
    subprocess.run([*argv, "resume"], env=env, check=True)
    # the uninterrupted run, in the same kind of process (same thread count: same float sums)
    full = tmp_path / "full"
    subprocess.run([sys.executable, str(script), json.dumps(raw), str(full), "full"], env=env,
                   check=True)
    phases = [json.loads((d / "prune_state.json").read_text())["phases"] for d in (out, full)]
    assert without_seconds(phases[0]) == without_seconds(phases[1])
    a, b = (torch.load(d / "finetune" / "model.pt", weights_only=True)["model"]
            for d in (out, full))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

def test_prune_command_has_help_and_turns_errors_into_one_line(tmp_path, capsys):
    from edgecompress.cli import main

    result = CliRunner().invoke(cli, ["prune", "--help"])
    assert result.exit_code == 0 and "--resume" in result.output
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(yaml.safe_dump(tiny(prune={"tolerence": 1})))
    with pytest.raises(SystemExit) as info:
        main(["prune", str(recipe), "--out", str(tmp_path / "out")])
    assert info.value.code == 2
    assert "error:" in capsys.readouterr().err
