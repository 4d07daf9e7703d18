"""``edgecompress demo``: float versus binarized models (BNN, BNN++) on the bundled MNIST subset.

Trains each entry of :data:`DEMO_RUNS` with the same model, data, optimizer, budget and seed, then
prints test accuracy (binarized models evaluated with their deployed sign weights), packed size and
MACs by precision side by side. Runs in well under three minutes on two CPU cores.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .analysis import summary
from .experiment import run
from .recipe import Recipe

BASE: dict[str, Any] = {
    "model": {"name": "mlp", "hidden": [512, 512], "activation": "hardtanh"},
    "data": {"name": "mnist-bundled"},
    "optimizer": {"name": "adam", "lr": 0.001},
    "schedule": {"name": "cosine"},
    "batch_size": 100,
    "seed": 0,
}

# (label, method section); every run has the same model, data, budget and seed
DEMO_RUNS: list[tuple[str, dict[str, Any] | None]] = [
    ("float", None),
    ("bnn W1A32", {"name": "bnn", "mode": "w1a32"}),
    ("bnn++ W1A32", {"name": "bnn++", "mode": "w1a32"}),
    ("bnn W1A1", {"name": "bnn", "mode": "w1a1"}),
    ("bnn++ W1A1", {"name": "bnn++", "mode": "w1a1"}),
]


@dataclass
class DemoRow:
    label: str
    top1: float
    bytes: int
    compression: float
    macs: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return dict(label=self.label, top1=self.top1, bytes=self.bytes,
                    compression=self.compression, macs=self.macs)


def run_demo(epochs: int = 20, out_dir: str | Path | None = None, progress: bool = True,
             seed: int = 0) -> list[DemoRow]:
    """Train every demo run and return one row per model."""
    rows = []
    for label, method in DEMO_RUNS:
        slug = label.replace(" ", "-").lower()
        recipe = Recipe.from_dict({**BASE, "name": f"demo-{slug}", "method": method,
                                   "epochs": epochs, "seed": seed})
        result = run(recipe, out_dir=Path(out_dir) / slug if out_dir else None, progress=progress)
        s = summary(result.model, (1, 28, 28))
        top1 = result.metrics.get("hard_test_top1", result.metrics["test_top1"])
        rows.append(DemoRow(label, float(top1), int(s.bytes),
                            float(s.compression_ratio), dict(s.macs_by_precision)))
    return rows


def format_rows(rows: list[DemoRow]) -> str:
    """The side-by-side table the demo prints."""
    keys = sorted({k for r in rows for k in r.macs})
    header = f"{'model':<12} {'test top-1':>10} {'size':>10} {'vs float':>9}" + "".join(
        f" {'MACs ' + k:>13}" for k in keys)
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(f"{r.label:<12} {r.top1:>9.2f}% {r.bytes / 1024:>7.1f} KiB {r.compression:>8.1f}x"
                     + "".join(f" {r.macs.get(k, 0):>13,}" for k in keys))
    return "\n".join(lines)
