"""The path a new user walks, on the bundled MNIST subset: train -> eval -> freeze -> predict ->
inspect -> bench model FILE -> summary FILE -> eval FILE; and wrong kinds of files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from edgecompress import data, deploy
from edgecompress.cli import main
from edgecompress.frozen import freeze_checkpoint

RECIPE = {"name": "tiny-path", "model": {"name": "mlp", "hidden": [32, 32]},
          "data": {"name": "mnist-bundled", "limit": 200}, "method": {"name": "bnn", "mode": "w1a32"},
          "optimizer": {"name": "sgd", "lr": 0.05}, "epochs": 1, "batch_size": 50}


def run(argv, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
        raise SystemExit(0)
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A trained checkpoint of the tiny recipe (trained once for the module)."""
    tmp = tmp_path_factory.mktemp("path")
    recipe = tmp / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    with pytest.raises(SystemExit) as exit_info:
        main(["train", str(recipe), "--out", str(tmp / "run"), "--no-progress"])
        raise SystemExit(0)
    assert exit_info.value.code == 0
    return tmp / "run" / "checkpoint.pt"


def test_the_whole_path(trained, tmp_path, capsys):
    code, out, _ = run(["eval", trained, "--json", tmp_path / "eval.json"], capsys)
    assert code == 0, out
    trained_top1 = json.loads((tmp_path / "eval.json").read_text())["top1"]

    frozen = tmp_path / "model.safetensors"
    code, out, err = run(["freeze", trained, "-o", frozen], capsys)
    assert code == 0, err
    assert "1 packed layer(s)" in out and "nothing to pack" not in out
    metadata = deploy.load_metadata(frozen)
    assert metadata.dataset == "mnist-bundled" and metadata.classes == [str(d) for d in range(10)]

    test_set = data.load("mnist-bundled", split="test")
    images, labels = test_set.images[:3, 0].numpy(), test_set.targets[:3]
    Image.fromarray(images[0]).save(tmp_path / "digit.png")
    np.save(tmp_path / "digit.npy", images[1])
    code, out, err = run(["predict", frozen, tmp_path / "digit.png", tmp_path / "digit.npy",
                          "--top-k", "3", "--json", tmp_path / "p.json"], capsys)
    assert code == 0, err
    predictions = json.loads((tmp_path / "p.json").read_text())["predictions"]
    assert [len(p["top"]) for p in predictions] == [3, 3]
    model = deploy.load(frozen)
    with torch.no_grad():
        expected = model(torch.stack([test_set[0][0], test_set[1][0]])).argmax(1).tolist()
    assert [p["top"][0]["index"] for p in predictions] == expected
    assert f"digit.png: {expected[0]} " in out
    assert sorted(p["probability"] for p in predictions[0]["top"])[::-1] == \
        [p["probability"] for p in predictions[0]["top"]]

    code, out, _ = run(["inspect", frozen], capsys)
    assert code == 0
    assert "a frozen model file" in out and "PackedBinaryLinear: 1" in out
    assert "dataset: mnist-bundled" in out and "recipe: tiny-path" in out
    code, out, _ = run(["inspect", trained], capsys)
    assert "a training checkpoint" in out and "recipe: tiny-path" in out and "epoch: 1" in out

    code, out, err = run(["bench", "model", frozen, "--rounds", "1", "--batches", "1",
                          "--threads", "1"], capsys)
    assert code == 0, err
    assert "vs its float model" in out

    code, out, _ = run(["summary", frozen], capsys)
    assert code == 0 and "1-bit" in out

    code, out, _ = run(["eval", frozen, "--json", tmp_path / "eval_frozen.json"], capsys)
    assert code == 0, out
    frozen_top1 = json.loads((tmp_path / "eval_frozen.json").read_text())["top1"]
    assert abs(frozen_top1 - trained_top1) <= 1.0  # the same model, float sums reordered


def test_freezing_a_float_model_says_there_is_nothing_to_pack(tmp_path, capsys):
    recipe = tmp_path / "float.yaml"
    recipe.write_text(yaml.safe_dump({**RECIPE, "method": None, "data": {
        "name": "mnist-bundled", "limit": 50}}))
    assert run(["train", recipe, "--out", tmp_path / "run", "--no-progress"], capsys)[0] == 0
    code, out, _ = run(["freeze", tmp_path / "run" / "checkpoint.pt", "-o",
                        tmp_path / "f.safetensors"], capsys)
    assert code == 0
    assert "nothing to pack" in out
    assert deploy.load(tmp_path / "f.safetensors") is not None


def _wrong_kinds(trained: Path, tmp: Path) -> dict[str, Path]:
    (tmp / "notes.txt").write_text("not a model\n")
    frozen = freeze_checkpoint(trained)
    deploy.save(frozen.model, tmp / "model.safetensors", metadata=frozen.metadata)
    return {"text": tmp / "notes.txt", "frozen": tmp / "model.safetensors"}


@pytest.mark.parametrize("argv, message", [
    (["eval", "{text}"], "{text}: this is a text file, not a training checkpoint"),
    (["summary", "{text}"], "{text}: this is a text file, not a training checkpoint or a frozen"),
    (["freeze", "{frozen}", "-o", "{tmp}/x.safetensors"],
     "{frozen}: this is a frozen model file, not a training checkpoint"),
    (["predict", "{trained}", "{text}"],
     "{trained}: this is a training checkpoint, not a frozen model file; run `edgecompress "
     "freeze` on it"),
    (["predict", "{frozen}", "{text}"], "{text}: this is a text file; predict reads images"),
    (["predict", "{frozen}", "{tmp}/wide.npy"],
     "{tmp}/wide.npy: array of float32 and shape (1, 28, 30) does not fit the model, which "
     "expects float32 inputs of shape (1, 28, 28)"),
    (["bench", "model", "{trained}"], "{trained}: this is a training checkpoint"),
    (["inspect", "{tmp}/absent.pt"], "file not found: {tmp}/absent.pt"),
])
def test_a_wrong_kind_of_file_is_one_line_naming_it(trained, tmp_path, capsys, argv, message):
    names = {k: str(v) for k, v in _wrong_kinds(trained, tmp_path).items()}
    names.update(trained=str(trained), tmp=str(tmp_path))
    np.save(tmp_path / "wide.npy", np.zeros((1, 28, 30), np.float32))
    capsys.readouterr()
    code, _, err = run([a.format(**names) for a in argv], capsys)
    assert code == 2
    assert err.startswith("error: " + message.format(**names)), err
    assert err.count("\n") == 1
