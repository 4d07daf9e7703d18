"""Training diagnostics for low-bit weights: how many deployed weight values change each epoch,
and how the latent (full-precision) weights are distributed.

``WeightFlipMonitor`` is a trainer callback. After every epoch it compares each compressed
layer's discrete weights (``layer.discrete_weight()``: sign(theta) for binary layers) with those
at the end of the previous epoch and logs

- ``flip_rate``: fraction of weights whose discrete value changed during the epoch;
- ``sign_flip_rate``: fraction whose sign (-1, 0 or +1) changed (equal to ``flip_rate`` for
  binary weights);
- ``unchanged_since_epoch_k``: fraction whose discrete value has not changed at all since the
  end of epoch ``k`` (``since_epoch``; logged from epoch k + 1 on): the weights that froze.
  (The shift papers define a "weight freezing" metric whose formula was not available; this is
  what it measures in spirit, named for what it is.);
- ``latent_hist``: a histogram of the latent weights over fixed bins (``bins`` edges); a layer's
  latent is ``layer.latent_weight()`` if it has one (shift layers: the sign latent), else
  ``layer.weight``.

With an output directory, the trainer's rank 0 also draws ``weights.png`` there every epoch: the
flip rates so far and the latest latent weight distribution.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from ..layers.base import CompressedLayer
from ..train.callbacks import Callback

DEFAULT_EDGES = tuple(round(-2.0 + 0.1 * i, 1) for i in range(41))  # -2.0 .. 2.0


def discrete_layers(model: nn.Module) -> list[tuple[str, CompressedLayer]]:
    """Compressed layers of ``model`` that have discrete weights."""
    out = []
    for name, module in model.named_modules():
        if isinstance(module, CompressedLayer):
            try:
                module.discrete_weight()
            except NotImplementedError:
                continue
            out.append((name, module))
    return out


class WeightFlipMonitor(Callback):
    """Logs per-epoch flip rates and latent-weight histograms of the model's low-bit layers."""

    def __init__(self, edges: Sequence[float] = DEFAULT_EDGES, since_epoch: int = 1) -> None:
        if since_epoch < 0:
            raise ValueError(f"since_epoch must be >= 0, got {since_epoch}")
        self.edges = torch.tensor(list(edges), dtype=torch.float64)
        self.since_epoch = since_epoch
        self.previous: dict[str, Tensor] = {}
        self.changed_since: dict[str, Tensor] = {}  # per weight: changed after epoch k

    def _codes(self, trainer) -> dict[str, Tensor]:
        return {n: m.discrete_weight().detach().cpu().clone()
                for n, m in discrete_layers(trainer.model)}

    def on_fit_start(self, trainer) -> None:
        if not self.previous:
            self.previous = self._codes(trainer)
            if self.since_epoch == 0:  # since the start of training
                self.changed_since = {n: torch.zeros_like(c, dtype=torch.bool)
                                      for n, c in self.previous.items()}

    def on_epoch_end(self, trainer, epoch: int, metrics: dict[str, Any]) -> None:
        codes = self._codes(trainer)
        if not codes:
            return
        changed = sum(int((codes[n] != self.previous[n]).sum()) for n in codes)
        sign_changed = sum(int((torch.sign(codes[n]) != torch.sign(self.previous[n])).sum())
                           for n in codes)
        total = sum(c.numel() for c in codes.values())
        latent = torch.cat([_latent(m).detach().double().flatten().cpu()
                            for _, m in discrete_layers(trainer.model)])
        metrics["flip_rate"] = changed / total
        metrics["sign_flip_rate"] = sign_changed / total
        completed = epoch + 1  # the trainer counts epochs from 0
        if completed == self.since_epoch:
            self.changed_since = {n: torch.zeros_like(c, dtype=torch.bool) for n, c in codes.items()}
        elif completed > self.since_epoch and self.changed_since:
            for n in codes:
                self.changed_since[n] |= codes[n] != self.previous[n]
            still = sum(int((~self.changed_since[n]).sum()) for n in codes)
            metrics[f"unchanged_since_epoch_{self.since_epoch}"] = still / total
        metrics["latent_hist"] = histogram(latent, self.edges)
        self.previous = codes
        out_dir = getattr(trainer, "out_dir", None)
        if out_dir is not None and getattr(trainer, "is_main", True):
            rates = [h["sign_flip_rate"] for h in trainer.history if "sign_flip_rate" in h]
            plot_run(Path(out_dir) / "weights.png", rates + [metrics["sign_flip_rate"]],
                     metrics["latent_hist"], self.edges.tolist())

    def state_dict(self) -> dict[str, Any]:
        return {"previous": dict(self.previous), "changed_since": dict(self.changed_since)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.previous = dict(state.get("previous", {}))
        self.changed_since = dict(state.get("changed_since", {}))


def _latent(layer: nn.Module) -> Tensor:
    latent = getattr(layer, "latent_weight", None)
    return latent() if callable(latent) else layer.weight


def histogram(values: Tensor, edges: Tensor) -> list[int]:
    """Counts of ``values`` in the bins between consecutive ``edges``; values beyond the ends
    fall in the first or last bin."""
    clipped = values.clamp(float(edges[0]), float(edges[-1]))
    index = torch.bucketize(clipped, edges[1:-1], right=True)
    return torch.bincount(index, minlength=len(edges) - 1).tolist()


def plot_flip_rates(path: str | Path, curves: dict[str, Sequence[float]],
                    title: str = "weights whose sign flipped during the epoch", *,
                    ylabel: str = "weights flipped (%)", first_epoch: int = 1,
                    log: bool = True) -> None:
    """One line per run label: a per-epoch fraction (plotted in percent, log scale by default)
    against epoch, the first value belonging to ``first_epoch``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for label, rates in curves.items():
        epochs = range(first_epoch, first_epoch + len(rates))
        ax.plot(epochs, [100 * max(r, 1e-6) for r in rates], "-o", markersize=3, label=label)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_latent_histograms(path: str | Path, hists: dict[str, Sequence[int]],
                           edges: Sequence[float] = DEFAULT_EDGES) -> None:
    """Latent weight distributions (fraction per bin), one line per label."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    centers = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for label, counts in hists.items():
        total = max(1, sum(counts))
        ax.plot(centers, [c / total for c in counts], "-", label=label)
    ax.set_xlabel("latent weight (end bins hold everything beyond)")
    ax.set_ylabel("fraction of weights")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_run(path: Path, flip_rates: Sequence[float], hist: Sequence[int],
             edges: Sequence[float]) -> None:
    """One run's diagnostics: sign-flip rate per epoch and the current latent distribution."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.plot(range(1, len(flip_rates) + 1), [100 * max(r, 1e-6) for r in flip_rates], "-o",
              markersize=3)
    left.set_yscale("log")
    left.set_xlabel("epoch")
    left.set_ylabel("weights whose sign flipped (%)")
    left.grid(alpha=0.3, which="both")
    centers = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]
    right.bar(centers, hist, width=(edges[1] - edges[0]) * 0.9)
    right.set_xlabel("latent weight (end bins hold everything beyond)")
    right.set_ylabel("weights")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
