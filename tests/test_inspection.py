"""``inspect_file``: what each kind of file says about itself."""

from __future__ import annotations

import pytest
import torch

import edgecompress as ec
from edgecompress import deploy
from edgecompress.errors import CheckpointError
from edgecompress.experiment import load_trained
from edgecompress.inspection import format_report, inspect_file, layer_kinds
from edgecompress.train import save_checkpoint


def test_an_onnx_file_reports_opsets_inputs_and_outputs(tmp_path):
    path = deploy.export_onnx(ec.models.create("mlp", hidden=(8,)), tmp_path / "m.onnx")
    report = inspect_file(path)
    assert report["kind"] == "onnx" and report["opsets"]["ai.onnx"] >= 17
    (model_input,) = report["inputs"]
    assert model_input["type"] == "FLOAT" and model_input["shape"][1:] == [1, 28, 28]
    assert report["outputs"][0]["shape"][1:] == [10]
    assert "opsets:" in format_report(report)


def test_a_frozen_file_without_metadata_reports_its_layers(tmp_path):
    model = ec.convert(ec.models.create("mlp", hidden=(16, 16), activation="hardtanh"), "bnn",
                       mode="w1a1")
    frozen = deploy.freeze(model)
    deploy.save(frozen, tmp_path / "m.safetensors")
    report = inspect_file(tmp_path / "m.safetensors")
    assert report["layers"] == layer_kinds(frozen)
    assert report["packed_layers"] == 1 and report["metadata"] is None


def test_an_old_pruning_phase_checkpoint_without_its_recipe_is_named(tmp_path):
    path = tmp_path / "finetune" / "checkpoint.pt"
    save_checkpoint(path, {"epoch": 2, "model": {"w": torch.zeros(1)},
                           "extra_state": {"prune_phase": "finetune"},
                           "history": [{"test_top1": 50.0}, {"test_top1": 61.5}]})
    report = inspect_file(path)
    assert (report["kind"], report["phase"], report["metrics"]) == \
        ("prune-phase", "finetune", {"test_top1": 61.5})
    with pytest.raises(CheckpointError, match="this is a pruning-phase file of an older "
                                              "edgecompress"):
        load_trained(path)
