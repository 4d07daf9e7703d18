"""The scripts in benchmarks/ answer --help without starting work or writing anything."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ["deploy.py", "make_recipes.py", "binarization.py", "shift.py", "pruning.py",
           "causal.py"]


#: not compared file by file: the virtual environment, and the run directories, which other
#: processes (e.g. a benchmark running beside the tests) may be writing; for runs/ only the
#: entries two levels deep are compared (a benchmark's work starts by creating one)
SKIPPED = (".git", "__pycache__", ".venv", "runs")


def snapshot(*folders: Path) -> dict[str, tuple[int, int]]:
    """(mtime, size) of every file under ``folders`` except under SKIPPED, and the names of
    the entries of ``runs/`` two levels deep."""
    found = {}
    for folder in folders:
        for path in folder.rglob("*"):
            if any(part in SKIPPED for part in path.relative_to(folder).parts):
                continue
            if path.is_file():
                stat = path.stat()
                found[str(path)] = (stat.st_mtime_ns, stat.st_size)
        for path in (folder / "runs").glob("*/*"):
            found[str(path)] = (0, 0)
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
