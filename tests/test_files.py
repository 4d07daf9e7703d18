"""File kinds: each kind is recognised by its bytes and structure, and a file of one kind given
where another is expected is named as such."""

from __future__ import annotations

import wave

import numpy as np
import pytest
import torch
import yaml

import edgecompress as ec
from edgecompress import deploy
from edgecompress.errors import CheckpointError, ModelFileError
from edgecompress.experiment import load_trained
from edgecompress.files import FileKind, detect_kind, mismatch
from edgecompress.train import load_checkpoint, save_checkpoint


def _frozen(tmp_path):
    model = ec.convert(ec.models.create("mlp", hidden=(16, 16), activation="hardtanh"), "bnn",
                       mode="w1a1")
    path = tmp_path / "model.safetensors"
    deploy.save(deploy.freeze(model), path)
    return path


def _checkpoint(tmp_path, **extra):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"epoch": 1, "model": {"w": torch.zeros(2)}, "extra_state": extra})
    return path


def _wav(path):
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1), f.setsampwidth(2), f.setframerate(8000)
        f.writeframes(np.zeros(100, np.int16).tobytes())
    return path


def _onnx(tmp_path):
    path = tmp_path / "m.onnx"
    deploy.export_onnx(ec.models.create("mlp", hidden=(8,)), path)
    return path


MAKERS = {
    FileKind.CHECKPOINT: lambda p: _checkpoint(p, recipe={"name": "r"}),
    FileKind.PRUNE_PHASE: lambda p: _checkpoint(p, prune_phase="finetune"),
    FileKind.FROZEN: _frozen,
    FileKind.SAFETENSORS: lambda p: (__import__("safetensors.torch").torch.save_file(
        {"x": torch.zeros(3)}, str(p / "plain.safetensors")), p / "plain.safetensors")[1],
    FileKind.TORCH: lambda p: (torch.save(torch.nn.Linear(2, 2), p / "m.pt"), p / "m.pt")[1],
    FileKind.ONNX: _onnx,
    FileKind.RECIPE: lambda p: (p / "r.yaml").write_text(yaml.safe_dump(
        {"model": "mlp", "data": "mnist-bundled"})) and p / "r.yaml",
    FileKind.NPY: lambda p: (np.save(p / "a.npy", np.zeros(3)), p / "a.npy")[1],
    FileKind.NPZ: lambda p: (np.savez(p / "a.npz", a=np.zeros(3)), p / "a.npz")[1],
    FileKind.WAV: lambda p: _wav(p / "a.wav"),
    FileKind.TEXT: lambda p: (p / "t.txt").write_text("hello\n") and p / "t.txt",
    FileKind.UNKNOWN: lambda p: (p / "r.bin").write_bytes(bytes(range(256)) * 4) and p / "r.bin",
    FileKind.MISSING: lambda p: p / "nothing.here",
    FileKind.DIRECTORY: lambda p: p,
}


@pytest.mark.parametrize("kind", list(MAKERS), ids=lambda k: k.label)
def test_every_kind_is_recognised(tmp_path, kind):
    assert detect_kind(MAKERS[kind](tmp_path)) is kind


@pytest.mark.parametrize("image_format, suffix", [("PNG", ".png"), ("JPEG", ".jpg")])
def test_images_are_recognised_by_their_bytes_not_their_name(tmp_path, image_format, suffix):
    from PIL import Image
    path = tmp_path / "picture.dat"
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(path, format=image_format)
    assert detect_kind(path) is FileKind.IMAGE


def test_a_checkpoint_with_another_suffix_is_still_a_checkpoint(tmp_path):
    path = _checkpoint(tmp_path, recipe={})
    renamed = path.rename(tmp_path / "model.safetensors")
    assert detect_kind(renamed) is FileKind.CHECKPOINT


def test_a_pickled_model_is_never_unpickled(tmp_path):
    marker = tmp_path / "pwned.txt"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    assert detect_kind(tmp_path / "evil.pt") is FileKind.TORCH
    assert not marker.exists()


def test_mismatch_names_the_kind_found_and_the_next_step(tmp_path):
    path = _checkpoint(tmp_path, recipe={})
    message = mismatch(path, FileKind.FROZEN)
    assert message == (f"{path}: this is a training checkpoint, not a frozen model file; run "
                       f"`edgecompress freeze` on it to get a frozen model file")
    assert mismatch(path, FileKind.CHECKPOINT) is None
    assert mismatch(MAKERS[FileKind.UNKNOWN](tmp_path), FileKind.FROZEN) is None


def test_deploy_load_of_a_training_checkpoint_says_to_freeze_it(tmp_path):
    path = _checkpoint(tmp_path, recipe={})
    with pytest.raises(ModelFileError, match=r"checkpoint.pt: this is a training checkpoint.*"
                                             r"`edgecompress freeze`"):
        deploy.load(path)
    with pytest.raises(ModelFileError, match="this is a training checkpoint"):
        deploy.load_metadata(path)


@pytest.mark.parametrize("kind", [FileKind.FROZEN, FileKind.TEXT, FileKind.RECIPE,
                                  FileKind.ONNX, FileKind.NPY])
def test_a_checkpoint_reader_names_other_kinds(tmp_path, kind):
    path = MAKERS[kind](tmp_path)
    with pytest.raises(CheckpointError) as info:
        load_trained(path)
    message = str(info.value)
    assert message.startswith(f"{path}: this is {kind.what}, not a training checkpoint")
    said = message[len(str(path)):]  # (the temporary path may hold any digits: pytest-101/...)
    assert "101" not in said and "\n" not in said


def test_a_pruning_phase_file_is_named_by_load_checkpoint_readers(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "masks": None}, path)
    with pytest.raises(CheckpointError, match="a pruning-phase file of an older edgecompress"):
        load_checkpoint(path)
