"""Test helper: train one recipe in one process and under ``torchrun --nproc_per_node 2``."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_alone_and_under_torchrun(recipe: Path, out: Path) -> tuple[Path, Path]:
    """``edgecompress train recipe`` in one process (-> out/one) and in two gloo processes
    (-> out/two); both runs must succeed and end with the same weights."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one, two = out / "one", out / "two"
    base = [sys.executable, "-m", "edgecompress.cli", "train", str(recipe), "--no-progress"]
    subprocess.run(base + ["--out", str(one)], check=True, env=env, capture_output=True)
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
              "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), "-m",
              "edgecompress.cli", "train", str(recipe), "--no-progress", "--out", str(two)]
    done = subprocess.run(launch, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    a = torch.load(one / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(two / "checkpoint.pt", weights_only=True)["model"]
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4)
    return one, two
