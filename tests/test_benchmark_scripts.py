"""The scripts in benchmarks/ answer --help without starting work or writing anything.

Each runs from a copy of the repository's benchmarks/, docs/, recipes/ and examples/ (the
scripts find the repository from their own location), so a benchmark running beside the tests
in the real checkout cannot disturb the comparison."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ["deploy.py", "make_recipes.py", "binarization.py", "shift.py", "pruning.py",
           "causal.py", "euclidnet.py", "euclidnet_speed.py", "tensor_train.py", "tt_speed.py",
           "binaryvit.py", "binaryvit_speed.py", "transfer.py", "lowbit_speed.py"]
COPIED = ("benchmarks", "docs", "recipes", "examples")


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """(mtime, size) of every file under ``folder`` (bytecode caches aside)."""
    return {str(p): (p.stat().st_mtime_ns, p.stat().st_size) for p in folder.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts}


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_help_writes_nothing(script, tmp_path):
    repo, cwd = tmp_path / "repo", tmp_path / "cwd"
    cwd.mkdir()
    for name in COPIED:
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    before = snapshot(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run([sys.executable, str(repo / "benchmarks" / script), "--help"],
                            cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: {script}")
    assert snapshot(tmp_path) == before
