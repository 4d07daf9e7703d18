"""Transfer learning through recipes: a pretrained checkpoint's weights, a new head, then the
recipe's conversion and fine-tuning (edgecompress.transfer)."""

from __future__ import annotations

import shutil

import pytest
import torch

import edgecompress as ec
from edgecompress.errors import CheckpointError, RecipeError
from edgecompress.experiment import load_trained, run
from edgecompress.recipe import Recipe
from edgecompress.transfer import find_head

MODEL = {"name": "mlp", "hidden": [16, 16]}


def recipe(**changes) -> Recipe:
    raw = {"name": "tiny", "model": MODEL, "epochs": 1, "batch_size": 16, "seed": 0,
           "optimizer": {"name": "adam", "lr": 0.01},
           "data": {"name": "mnist-bundled", "limit": 48, "classes": [0, 1, 2, 3, 4]}}
    raw.update(changes)
    return Recipe.from_dict(raw)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A 1-epoch float run on classes 0-4: its checkpoint."""
    out = tmp_path_factory.mktemp("pretrained")
    run(recipe(), out_dir=out, progress=False)
    return out / "checkpoint.pt"


def new_task(checkpoint, **changes) -> Recipe:
    data = {"name": "mnist-bundled", "limit": 48, "classes": [5, 6, 7, 8, 9]}
    return recipe(**{"data": data, "pretrained": str(checkpoint), **changes})


def test_weights_but_the_head_are_the_pretrained_ones_and_the_head_is_new(pretrained):
    state = torch.load(pretrained, weights_only=True)["model"]
    torch.manual_seed(0)
    model, _ = new_task(pretrained).build_model(5, (1, 28, 28))
    head = find_head(model)
    assert head == "layers.7"  # the last Linear
    own = model.state_dict()
    for key, value in own.items():
        if key.startswith(head + "."):
            assert not torch.equal(value, state[key])  # freshly initialised for the new task
        else:
            assert torch.equal(value, state[key]), key


def test_conversion_starts_from_the_pretrained_weights_then_fine_tunes(pretrained, tmp_path):
    state = torch.load(pretrained, weights_only=True)["model"]
    r = new_task(pretrained, method={"name": "denseshift", "bits": 3, "init": "from-float"})
    model, report = r.build_model(5, (1, 28, 28))
    (converted, _, _), = report.converted  # the middle Linear; first and last stay float
    layer = dict(model.named_modules())[converted]
    assert torch.equal(layer.weight_param.w_sign, state[converted + ".weight"])
    first = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)][0]
    assert torch.equal(model.state_dict()[first + ".weight"], state[first + ".weight"])
    result = run(r, out_dir=tmp_path / "transfer", progress=False)
    assert 0 <= result.metrics["hard_test_top1"] <= 100
    shutil.move(str(pretrained), str(tmp_path / "moved.pt"))
    try:  # the transfer run's own checkpoint rebuilds without the pretrained file
        rebuilt, _ = load_trained(tmp_path / "transfer" / "checkpoint.pt")
    finally:
        shutil.move(str(tmp_path / "moved.pt"), str(pretrained))
    assert torch.equal(rebuilt.state_dict()[first + ".weight"],
                       result.model.state_dict()[first + ".weight"])


def test_the_head_is_found_in_the_zoo_models():
    assert find_head(ec.models.create("resnet20")) == "fc"
    assert find_head(ec.models.create("kws-resnet", input_shape=(1, 40, 101))) == "classifier"
    with pytest.raises(CheckpointError, match="has no module 'head'; its modules: .*fc"):
        find_head(ec.models.create("resnet20"), "head")


def test_reset_head_false_loads_the_head_too(pretrained):
    state = torch.load(pretrained, weights_only=True)["model"]
    r = new_task(pretrained, pretrained={"checkpoint": str(pretrained), "reset_head": False})
    model, _ = r.build_model(5, (1, 28, 28))
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    with pytest.raises(CheckpointError, match="head 'layers.7' included: reset_head is false"):
        r.build_model(10, (1, 28, 28))


def test_a_missing_pretrained_checkpoint_is_named(tmp_path):
    r = new_task(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match=r"pretrained.checkpoint.*not found: .*nope\.pt"):
        r.build_model(5, (1, 28, 28))


def test_another_architecture_is_named(pretrained):
    r = new_task(pretrained, model={"name": "mlp", "hidden": [8, 16]})
    with pytest.raises(CheckpointError, match=rf"{pretrained}: it holds model .*16, 16.*the "
                                              r"recipe builds .*8, 16.*another architecture"):
        r.build_model(5, (1, 28, 28))


def test_a_converted_checkpoint_is_refused(tmp_path):
    out = tmp_path / "bnn"
    run(recipe(method={"name": "denseshift", "bits": 3}), out_dir=out, progress=False)
    with pytest.raises(CheckpointError, match="trained with method .*denseshift.*float run"):
        new_task(out / "checkpoint.pt").build_model(5, (1, 28, 28))


def test_a_shape_mismatch_outside_the_head_is_named(pretrained, tmp_path):
    checkpoint = torch.load(pretrained, weights_only=True)
    checkpoint["model"]["layers.1.weight"] = torch.zeros(16, 10)
    del checkpoint["model"]["layers.2.running_mean"]
    bad = tmp_path / "bad.pt"
    torch.save(checkpoint, bad)
    with pytest.raises(CheckpointError, match=rf"{bad} does not match .*missing weights: "
                                              r"layers.2.running_mean \| shape mismatches outside "
                                              r"the head 'layers.7': layers.1.weight: model \(16, 784\)"
                                              r" vs file \(16, 10\)"):
        new_task(bad).build_model(5, (1, 28, 28))


@pytest.mark.parametrize("value, message", [
    (3, "must be a checkpoint path or a mapping with a 'checkpoint'"),
    ({"head": "fc"}, "mapping with a 'checkpoint'"),
    ({"checkpoint": "x.pt", "heads": "fc"}, "unknown key.*'pretrained.heads'"),
    ({"checkpoint": "x.pt", "reset_head": "yes"}, "'pretrained.reset_head' must be true or false"),
])
def test_bad_pretrained_entries_are_recipe_errors(value, message):
    with pytest.raises(RecipeError, match=message):
        recipe(pretrained=value)
