"""The metrics log (``metrics.jsonl``, one JSON line per epoch) and its plot (``curves.png``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from .checkpoint import atomic_write


def write_metrics(path: str | Path, history: list[dict[str, Any]]) -> None:
    """Rewrite the whole log from ``history`` (so a resumed run never duplicates a line)."""
    text = "".join(json.dumps(row, sort_keys=True) + "\n" for row in history)
    atomic_write(path, lambda tmp: tmp.write_text(text))


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def plot_curves(path: str | Path, history: list[dict[str, Any]],
                metrics: Sequence[tuple[str, str]] = (("loss", "loss"), ("top1", "top-1 (%)"))
                ) -> None:
    """Each of ``metrics`` ((name, axis label) pairs; default loss and top-1 accuracy) per
    epoch, train, validation (when evaluated) and test, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.5), squeeze=False)
    for ax, (metric, label) in zip(axes[0], metrics):
        for split, style in (("train", "-o"), ("valid", "-^"), ("test", "-s")):
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
