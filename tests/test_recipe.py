"""Recipes: parsing, validation errors, and mapping onto the trainer's configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgecompress.errors import RecipeError
from edgecompress.recipe import Recipe

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").rglob("*.yaml"))

MINIMAL = {"model": "mlp", "data": "mnist-bundled"}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_shipped_recipe_is_valid(path):
    recipe = Recipe.from_yaml(path)
    assert recipe.name and recipe.epochs >= 1
    recipe.train_config()
    # the model and method options build (the shapes of the recipe's data)
    shapes = {"cifar10": (3, 32, 32), "mnist": (1, 28, 28), "mnist-bundled": (1, 28, 28),
              "fsdd": (1, 40, 101), "ptb": (1,)}
    model, report = recipe.build_model(10, shapes[recipe.data["name"]])
    assert report is None or report.converted


def test_shipped_recipes_exist():
    assert len(RECIPES) >= 5


@pytest.mark.parametrize("family", ["binarization", "shift"])
def test_generated_recipes_match_their_generator(family):
    """recipes/binarization/ and recipes/shift/ are generated; a hand edit or a new method
    without regeneration shows up here."""
    import importlib.util

    import yaml

    spec = importlib.util.spec_from_file_location(
        "make_recipes", ROOT / "benchmarks" / "make_recipes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    expected = module.recipes(family)
    folder = ROOT / "recipes" / family
    assert sorted(p.stem for p in folder.glob("*.yaml")) == sorted(expected)
    for stem, recipe in expected.items():
        assert yaml.safe_load((folder / f"{stem}.yaml").read_text()) == recipe


def test_bare_names_become_sections_and_defaults_apply():
    r = Recipe.from_dict({**MINIMAL, "method": "bnn", "optimizer": "adam"})
    assert r.model == {"name": "mlp"} and r.method == {"name": "bnn"}
    config = r.train_config(epochs=3)
    assert config.optimizer == "adam" and config.epochs == 3 and config.schedule == "cosine"
    assert Recipe.from_dict({**MINIMAL, "method": "float"}).method is None


def test_train_config_carries_optimizer_schedule_and_distill_options():
    r = Recipe.from_dict({
        **MINIMAL,
        "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.8, "weight_decay": 1e-4},
        "schedule": {"name": "multistep", "milestones": [2, 4], "gamma": 0.5},
        "distill": {"teacher": "t.pt", "alpha": 0.3, "temperature": 2.0},
        "epochs": 6, "batch_size": 32, "seed": 7,
    })
    c = r.train_config()
    assert (c.lr, c.momentum, c.weight_decay) == (0.05, 0.8, 1e-4)
    assert (c.schedule, list(c.milestones), c.gamma) == ("multistep", [2, 4], 0.5)
    assert (c.kd_alpha, c.kd_temperature) == (0.3, 2.0)
    assert (c.epochs, c.batch_size, c.seed) == (6, 32, 7)


@pytest.mark.parametrize("raw, message", [
    ({**MINIMAL, "epoch": 3}, r"unknown key\(s\) 'epoch'.*valid keys: .*epochs"),
    ({**MINIMAL, "optimizer": {"name": "sgd", "lrr": 1}}, r"'optimizer.lrr'.*valid keys of optimizer"),
    ({**MINIMAL, "schedule": {"name": "cosine", "step": 1}}, r"'schedule.step'"),
    ({**MINIMAL, "data": {"name": "mnist", "path": "x"}}, r"'data.path'"),
    ({"data": "mnist"}, r"needs a 'model'"),
    ({**MINIMAL, "model": "alexnet"}, r"unknown name 'alexnet'; available: .*mlp"),
    ({**MINIMAL, "data": "imagenet"}, r"unknown name 'imagenet'; available: .*mnist"),
    ({**MINIMAL, "method": "xnor++"}, r"unknown name 'xnor\+\+'; available: .*bnn"),
    ({**MINIMAL, "optimizer": "lbfgs"}, r"lbfgs.*adam"),
    ({**MINIMAL, "model": 3}, r"must be a name or a mapping"),
    ({**MINIMAL, "distill": {"alpha": 0.5}}, r"'teacher'"),
    ([1, 2], r"must be a mapping"),
])
def test_bad_recipes_are_rejected_clearly(raw, message):
    with pytest.raises(RecipeError, match=message):
        Recipe.from_dict(raw, "bad.yaml")


def test_recipe_file_errors_name_the_file(tmp_path):
    with pytest.raises(RecipeError, match="not found: .*missing.yaml"):
        Recipe.from_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "broken.yaml"
    bad.write_text("model: [mlp\n")
    with pytest.raises(RecipeError, match="broken.yaml: not valid YAML"):
        Recipe.from_yaml(bad)
    typo = tmp_path / "typo.yaml"
    typo.write_text("model: mlp\ndata: mnist-bundled\nseeed: 1\n")
    with pytest.raises(RecipeError, match=r"typo.yaml: unknown key\(s\) 'seeed'"):
        Recipe.from_yaml(typo)


def test_round_trip_through_dict():
    r = Recipe.from_yaml(RECIPES[0])
    assert Recipe.from_dict(r.to_dict()) == r


# --- model and method options: typos are caught when the recipe is read -----------------------

@pytest.mark.parametrize("raw, message", [
    # the model's options are its factory's keywords
    ({**MINIMAL, "model": {"name": "mlp", "hiden": [16]}},
     r"unknown key\(s\) 'model.hiden' in recipe; valid keys of model 'mlp': name, activation, "
     r"batchnorm, dropout, hidden, input_shape, num_classes$"),
    ({**MINIMAL, "model": {"name": "resnet20", "widht": 2}},
     r"'model.widht'.*valid keys of model 'resnet20': name, activation, input_shape, "
     r"num_classes, shortcut, width$"),
    # a binarization method: the converter's keywords, convert()'s policy, no scheduled params
    ({**MINIMAL, "method": {"name": "bnn", "mdoe": "w1a1"}},
     r"unknown key\(s\) 'method.mdoe' in recipe; valid keys of method 'bnn': name, activation, "
     r"backward, exclude, include, keep_first_last, mode, prox, scaling$"),
    # bnn++ adds its scheduled parameters mu (ProxConnect) and beta (SignSwish)
    ({**MINIMAL, "method": {"name": "bnn++", "lam": 2}},
     r"'method.lam'.*valid keys of method 'bnn\+\+': name, activation, backward, beta, exclude, "
     r"include, keep_first_last, mode, mu, prox, scaling$"),
    # replacing P by BinaryRelax replaces mu by lam
    ({**MINIMAL, "method": {"name": "bnn++", "prox": "binaryrelax", "mu": 1}},
     r"'method.mu'.*valid keys of method 'bnn\+\+': .*beta, .*lam, "),
    ({**MINIMAL, "method": {"name": "bnn++", "prox": "nope"}},
     r"method 'bnn\+\+': unknown quantizer 'nope'; available: .*binaryrelax"),
    # a shift method: bits, init, activation_bits and the policy
    ({**MINIMAL, "method": {"name": "s3", "bit": 3}},
     r"'method.bit'.*valid keys of method 's3': name, activation_bits, bits, exclude, include, "
     r"init, keep_first_last$"),
])
def test_unknown_model_and_method_options_list_the_valid_ones(raw, message):
    with pytest.raises(RecipeError, match=message) as info:
        Recipe.from_dict(raw, "typo.yaml")
    assert str(info.value).startswith("typo.yaml: ") and "\n" not in str(info.value)


@pytest.mark.parametrize("method", [
    {"name": "bnn", "mode": "w1a1", "scaling": "channel", "activation": "bnn",
     "keep_first_last": False, "include": ["layers.*"], "exclude": ["head"]},
    {"name": "bnn++", "mode": "w1a32", "mu": {"kind": "linear", "start": 0, "end": 2}, "beta": 3},
    {"name": "bnn++", "prox": "binaryrelax", "lam": 10},
    {"name": "pc", "backward": "signswish", "beta": 2, "mu": 1},
    {"name": "deepshift-q", "bits": 3, "init": "paper", "activation_bits": 8},
    {"name": "euclid", "theta": {"kind": "linear", "start": 0, "end": 1, "ramp": 3}},
    {"name": "bnn++", "mu": {"kind": "linear", "start": 0, "end": 1, "ramp_fraction": 0.5}},
])
def test_valid_method_options_are_accepted(method):
    assert Recipe.from_dict({**MINIMAL, "method": method}).method == method


def test_a_recipe_ramps_theta_and_rebuilds_the_same_schedule():
    from edgecompress.quantizers import Schedule

    theta = {"kind": "linear", "start": 0.0, "end": 1.0, "ramp_fraction": 0.5}
    recipe = Recipe.from_dict({"model": {"name": "convnet", "width": 0.25},
                               "data": "mnist-bundled", "method": {"name": "euclid",
                                                                   "theta": theta}})
    model, _ = recipe.build_model(10, (1, 28, 28))
    assert model.features[4].schedules["theta"] == Schedule("linear", 0.0, 1.0,
                                                            ramp_fraction=0.5)
    again = Recipe.from_dict(recipe.to_dict())
    assert again.build_model(10, (1, 28, 28))[0].features[4].schedules == \
        model.features[4].schedules


def test_model_option_with_a_bad_value_is_a_recipe_error_when_built():
    recipe = Recipe.from_dict({**MINIMAL, "model": {"name": "mlp", "hidden": "wide"}})
    with pytest.raises(RecipeError, match=r"recipe 'run', model \{'name': 'mlp', 'hidden': "
                                          r"'wide'\}: TypeError: "):
        recipe.build_model(10, (1, 28, 28))


def test_create_rejects_unknown_options_as_an_edgecompress_error():
    from edgecompress import models
    from edgecompress.errors import EdgecompressError

    with pytest.raises(EdgecompressError, match=r"got unknown option\(s\) \['hiden'\]; valid: "
                                                r".*hidden") as info:
        models.create("mlp", hiden=[16])
    assert isinstance(info.value, TypeError)  # what a bad keyword raises in Python
    assert {"num_classes", "input_shape", "hidden"} <= set(models.options("mlp"))
    assert "depth" not in models.options("resnet20")  # bound by the registry, not an option


@pytest.mark.parametrize("section, line", [
    ("model: {name: mlp, hiden: [16]}\ndata: mnist-bundled\n",
     "error: typo.yaml: unknown key(s) 'model.hiden' in recipe; valid keys of model 'mlp': "),
    ("model: mlp\ndata: mnist-bundled\nmethod: {name: bnn, mdoe: w1a1}\n",
     "error: typo.yaml: unknown key(s) 'method.mdoe' in recipe; valid keys of method 'bnn': "),
])
def test_cli_train_reports_option_typos_in_one_line(tmp_path, monkeypatch, capsys, section, line):
    from edgecompress.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "typo.yaml").write_text(section)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "typo.yaml", "--no-progress"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.startswith(line) and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "runs").exists()  # rejected before anything ran


# --- a list of methods -------------------------------------------------------------------------

TWO_METHODS = [{"name": "bnn", "mode": "w1a1", "include": ["layers.4"]}, {"name": "s3", "bits": 3}]


def test_a_list_of_methods_is_validated_step_by_step():
    recipe = Recipe.from_dict({**MINIMAL, "method": TWO_METHODS})
    assert recipe.method == TWO_METHODS and Recipe.from_dict(recipe.to_dict()) == recipe
    assert Recipe.from_dict({**MINIMAL, "method": ["bnn", "s3"]}).method == [
        {"name": "bnn"}, {"name": "s3"}]
    for steps, message in [
        ([TWO_METHODS[0], {"name": "s3", "bit": 3}],
         r"'method\[1\].bit'.*valid keys of method\[1\] 's3': name, activation_bits, bits, "),
        ([TWO_METHODS[0], "xnor"], r"unknown name 'xnor'; available: .*bnn"),
        ([{"mode": "w1a1"}], r"recipe key 'method\[0\]' needs a 'name'"),
        ([], r"'method' is an empty list; use null for the float model"),
        (["bnn", None], r"'method\[1\]' must be a name or a mapping"),
    ]:
        with pytest.raises(RecipeError, match=message):
            Recipe.from_dict({**MINIMAL, "method": steps}, "bad.yaml")


@pytest.mark.slow
def test_a_two_method_recipe_trains_and_its_checkpoint_rebuilds_the_same_model(tmp_path):
    from edgecompress.experiment import load_trained, run
    from edgecompress.layers import BinaryLinear, ShiftLinear
    from edgecompress.train import evaluate

    recipe = Recipe.from_dict({
        "model": {"name": "mlp", "hidden": [32, 32, 32], "activation": "hardtanh"},
        "data": {"name": "mnist-bundled", "limit": 300},
        "method": TWO_METHODS, "optimizer": {"name": "adam", "lr": 0.01},
        "epochs": 1, "batch_size": 50})
    result = run(recipe, out_dir=tmp_path, progress=False)
    assert result.report.method == "bnn -> s3"
    model, stored = load_trained(tmp_path / "checkpoint.pt")
    assert stored.method == TWO_METHODS
    assert isinstance(model.layers[4], BinaryLinear) and model.layers[4].input_bits == 1
    assert isinstance(model.layers[7], ShiftLinear) and model.layers[7].weight_bits == 3
    assert [s["name"] for s in model.edgecompress_spec["method"]] == ["bnn", "s3"]
    metrics = evaluate(model, recipe.load_data("test"), 256)
    assert metrics["top1"] == pytest.approx(result.metrics["test_top1"])
    assert metrics["loss"] == pytest.approx(result.metrics["test_loss"], rel=1e-5)
