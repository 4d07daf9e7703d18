"""The frozen file's optional metadata section, frozen models under torch.save, and frozen
float models."""

from __future__ import annotations

import json
import struct

import pytest
import torch

import edgecompress as ec
from edgecompress import deploy
from edgecompress.data.fsdd import LogMelPreprocessing
from edgecompress.data.preprocess import ImagePreprocessing
from edgecompress.deploy import ModelMetadata
from edgecompress.errors import ModelFileError


def frozen_mlp():
    model = ec.convert(ec.models.create("mlp", hidden=(16, 16), activation="hardtanh"), "bnn",
                       mode="w1a1")
    return deploy.freeze(model)


def metadata(**changes):
    values = dict(dataset="mnist-bundled", input_shape=(1, 28, 28),
                  classes=[str(d) for d in range(10)],
                  preprocessing=ImagePreprocessing(1, 28, 28, (0.1307,), (0.3081,)),
                  recipe={"name": "r"}, training={"epoch": 3, "metrics": {"test_top1": 90.5}})
    values.update(changes)
    return ModelMetadata(**values)


@pytest.mark.parametrize("preprocessing", [
    ImagePreprocessing(1, 28, 28, (0.1307,), (0.3081,)),
    LogMelPreprocessing(8000, 1.0, 40, (0.24,), (0.30,)),
    None,
])
def test_metadata_round_trips(tmp_path, preprocessing):
    path = tmp_path / "m.safetensors"
    written = metadata(preprocessing=preprocessing)
    deploy.save(frozen_mlp(), path, metadata=written)
    assert deploy.load_metadata(path) == written
    deploy.load(path)  # the model still loads


def test_a_file_without_metadata_loads_and_says_what_needs_it(tmp_path):
    path = tmp_path / "m.safetensors"
    deploy.save(frozen_mlp(), path)
    assert deploy.load_metadata(path) is None
    with pytest.raises(ModelFileError, match=r"m.safetensors: this frozen model file has no "
                                             r"metadata .* which predict needs; freeze"):
        deploy.load_metadata(path, required_for="predict")


def _rewrite(path, change):
    raw = path.read_bytes()
    size = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + size])
    meta = json.loads(header["__metadata__"]["edgecompress"])
    change(meta["metadata"])
    header["__metadata__"]["edgecompress"] = json.dumps(meta)
    body = json.dumps(header).encode()
    body += b" " * (-len(body) % 8)
    path.write_bytes(struct.pack("<Q", len(body)) + body + raw[8 + size:])


@pytest.mark.parametrize("change, message", [
    (lambda m: m.update(version=7), "metadata version 7 is newer"),
    (lambda m: m.pop("version"), "metadata has no valid version"),
    (lambda m: m.update(colour="red"), r"unknown key\(s\) \['colour'\]"),
    (lambda m: m.pop("dataset"), "metadata lacks dataset"),
    (lambda m: m.update(input_shape=[1, -28]), "input_shape must be positive ints"),
    (lambda m: m["preprocessing"].update(kind="smell"), "unknown preprocessing kind 'smell'"),
    (lambda m: m["preprocessing"].pop("std"), r"needs keys .*'std'"),
    (lambda m: m["preprocessing"].update(mean=[0.1, 0.2]), r"mean must be 1 number"),
])
def test_bad_metadata_is_refused_naming_the_file_and_the_key(tmp_path, change, message):
    path = tmp_path / "m.safetensors"
    deploy.save(frozen_mlp(), path, metadata=metadata())
    _rewrite(path, change)
    with pytest.raises(ModelFileError, match=message) as info:
        deploy.load_metadata(path)
    assert str(info.value).startswith(f"{path}: metadata")


def test_metadata_that_does_not_fit_the_model_is_refused_at_save(tmp_path):
    with pytest.raises(ModelFileError, match=r"input_shape \(3, 32, 32\) differs from the "
                                             r"model's \(1, 28, 28\)"):
        deploy.save(frozen_mlp(), tmp_path / "m.safetensors",
                    metadata=metadata(input_shape=(3, 32, 32)))
    with pytest.raises(ModelFileError, match="names 2 classes, the model has 10 outputs"):
        deploy.save(frozen_mlp(), tmp_path / "m.safetensors", metadata=metadata(classes=["a", "b"]))


@pytest.mark.parametrize("name", ["mlp", "resnet20"])
def test_frozen_models_pickle_with_torch_save(tmp_path, name):
    torch.manual_seed(0)
    model = ec.convert(ec.models.create(name, activation="hardtanh"), "bnn", mode="w1a1")
    frozen = deploy.freeze(model)
    deploy.save(frozen, tmp_path / "m.safetensors")
    x = torch.randn(2, *frozen.input_shape)
    for original in (frozen, deploy.load(tmp_path / "m.safetensors")):
        torch.save(original, tmp_path / "m.pt")
        again = torch.load(tmp_path / "m.pt", weights_only=False)
        with torch.no_grad():
            assert torch.equal(again(x), original(x))


def test_a_frozen_float_model_saves_and_loads(tmp_path):
    torch.manual_seed(0)
    frozen = deploy.freeze(ec.models.create("convnet"))
    deploy.save(frozen, tmp_path / "f.safetensors")
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(deploy.load(tmp_path / "f.safetensors")(x), frozen(x))
