"""The metrics log (``metrics.jsonl``, one JSON line per epoch) and its plot (``curves.png``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .checkpoint import atomic_write


def write_metrics(path: str | Path, history: list[dict[str, Any]]) -> None:
    """Rewrite the whole log from ``history`` (so a resumed run never duplicates a line)."""
    text = "".join(json.dumps(row, sort_keys=True) + "\n" for row in history)
    atomic_write(path, lambda tmp: tmp.write_text(text))


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def plot_curves(path: str | Path, history: list[dict[str, Any]]) -> None:
    """Loss and top-1 accuracy per epoch, train and test, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, metric, label in ((axes[0], "loss", "loss"), (axes[1], "top1", "top-1 (%)")):
        for split, style in (("train", "-o"), ("test", "-s")):
            key = f"{split}_{metric}"
            points = [(e, row[key]) for e, row in zip(epochs, history) if key in row]
            if points:
                ax.plot(*zip(*points), style, label=split, markersize=3)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
