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
    if path.parent.name == "shift":  # the model and method options build (shapes of the data)
        shapes = {"cifar10": (3, 32, 32), "mnist": (1, 28, 28), "fsdd": (1, 40, 101)}
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
