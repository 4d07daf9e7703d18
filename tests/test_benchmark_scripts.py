"""The scripts in benchmarks/ answer --help without starting work or writing anything."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ["deploy.py", "make_recipes.py", "binarization.py", "shift.py", "pruning.py"]


def snapshot(*folders: Path) -> dict[str, tuple[int, int]]:
    """(mtime, size) of every file under ``folders`` (without .git and bytecode caches)."""
    found = {}
    for folder in folders:
        for path in folder.rglob("*"):
            if ".git" in path.parts or "__pycache__" in path.parts or not path.is_file():
                continue
            stat = path.stat()
            found[str(path)] = (stat.st_mtime_ns, stat.st_size)
    return found


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_help_writes_nothing(script, tmp_path):
    before = snapshot(ROOT, tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--help"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: {script}")
    assert snapshot(ROOT, tmp_path) == before
