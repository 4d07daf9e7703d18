"""The BinaryViT ablation recipes run under `edgecompress train` (tiny budget, bundled digits):
a float DeiT teacher, then BinaryViT distilled from it with the distillation-only loss."""

from __future__ import annotations

import json
import math
from pathlib import Path

import yaml
from click.testing import CliRunner

from edgecompress.cli import cli
from edgecompress.train import load_checkpoint

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "binaryvit"
SMOKE = {"data": {"name": "mnist-bundled", "limit": 48}, "epochs": 1, "batch_size": 16}


def _shrunk(name: str, tmp_path: Path, **changes) -> Path:
    raw = yaml.safe_load((RECIPES / f"{name}.yaml").read_text())
    raw.update(SMOKE, **changes)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_the_ablation_has_every_row():
    names = {p.stem for p in RECIPES.glob("*.yaml")}
    assert names == {"cifar10_deit_float", "cifar10_binary_deit", "cifar10_binary_deit_avgpool",
                     "cifar10_binary_deit_avgpool_branches",
                     "cifar10_binary_deit_avgpool_branches_affine", "cifar10_binaryvit"}


def test_train_a_deit_teacher_then_binaryvit_by_distillation_only(tmp_path):
    teacher = _shrunk("cifar10_deit_float", tmp_path,
                      model={"name": "deit", "size": "mini", "depth": 1},
                      schedule={"name": "cosine"})
    result = CliRunner().invoke(cli, ["train", str(teacher), "--out", str(tmp_path / "teacher"),
                                      "--no-progress"])
    assert result.exit_code == 0, result.output
    student = _shrunk("cifar10_binaryvit", tmp_path, distill={
        "teacher": str(tmp_path / "teacher" / "checkpoint.pt"), "alpha": 1.0, "temperature": 1.0})
    out = tmp_path / "student.json"
    result = CliRunner().invoke(cli, ["train", str(student), "--out", str(tmp_path / "student"),
                                      "--no-progress", "--json", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())["metrics"]
    assert math.isfinite(metrics["train_loss"]) and math.isfinite(metrics["test_loss"])
    config = load_checkpoint(tmp_path / "student" / "checkpoint.pt")["config"]
    assert config["kd_alpha"] == 1.0 and config["kd_temperature"] == 1.0
    result = CliRunner().invoke(cli, ["summary", str(student)])
    assert result.exit_code == 0, result.output
    assert "u1a1" in result.output and "w1a1" in result.output
