"""Accuracy of an image classifier under input corruptions, at several severities.

Every corruption acts on the raw image, pixels scaled to [0, 1] with shape (..., C, H, W), before
the dataset's own normalisation ((x - mean) / std per channel), so a severity means the same on
MNIST (1 channel) and CIFAR-10 (3 channels) whatever their mean and std. Results that could
leave [0, 1] are clipped to it, as a saved image would be. The families (severity 0 is always
the identity):

- ``noise`` (sigma): x + sigma z, z ~ N(0, 1) drawn independently per pixel and channel;
- ``brightness`` (delta, in [-1, 1]): x + delta, the same on every channel;
- ``contrast`` (reduction r <= 1): m + (1 - r)(x - m), m the image's mean over its channels and
  pixels; r = 1 is a flat image, r < 0 raises the contrast;
- ``rotation`` (degrees, in [-180, 180]): counterclockwise as displayed, about the image centre;
- ``translation`` (pixels): the content moves right and down by the severity (left and up if
  negative).

Rotation and translation resample bilinearly and fill what comes from outside the image with 0
(black, MNIST's background); integer translations and quarter turns of square images move whole
pixels (up to float rounding of the sampling grid, about 1e-7). Gaussian noise is seeded per test sample (the run's seed and the sample's index), so it
does not depend on the batch size, and every sigma scales the same draw z.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from ..errors import RobustnessError
from ..registry import Registry

__all__ = ["Family", "family", "families", "gaussian_noise", "brightness", "contrast", "rotation",
           "translation", "sample_generator", "check_image_dataset", "CorruptedImages", "RobustnessRow", "RobustnessResult",
           "evaluate_robustness", "plot_robustness"]

#: one generator, or one per image of a batch (each image's noise then depends on its own only)
Generators = Union[torch.Generator, Sequence[torch.Generator], None]
Corruption = Callable[[Tensor, float, Generators], Tensor]


@dataclass(frozen=True)
class Family:
    """A corruption family: ``apply(x, severity, generator)`` on pixels in [0, 1], the unit of
    its severity, the severities evaluated by default, the accepted range (inclusive bounds,
    None for unbounded) and whether it draws random numbers (then from ``generator``)."""

    name: str
    apply: Corruption
    unit: str
    defaults: tuple[float, ...]
    low: float | None = None
    high: float | None = None
    random: bool = False

    def check(self, severity: Any) -> float:
        """``severity`` as a float in the family's range, else RobustnessError naming both."""
        if isinstance(severity, bool) or not isinstance(severity, (int, float)) \
                or not math.isfinite(severity) \
                or (self.low is not None and severity < self.low) \
                or (self.high is not None and severity > self.high):
            raise RobustnessError(f"{self.name} severity ({self.unit}) must be a number "
                                  f"{self.range_text()}, got {severity!r}")
        return float(severity)

    def range_text(self) -> str:
        if self.low is not None and self.high is not None:
            return f"in [{self.low:g}, {self.high:g}]"
        if self.low is not None:
            return f">= {self.low:g}"
        return f"<= {self.high:g}" if self.high is not None else "(finite)"


_FAMILIES: Registry[Family] = Registry("corruption")


def _register(name: str, unit: str, defaults: tuple[float, ...], low: float | None = None,
              high: float | None = None, random: bool = False
              ) -> Callable[[Corruption], Corruption]:
    def add(apply: Corruption) -> Corruption:
        _FAMILIES.register(name, Family(name, apply, unit, defaults, low, high, random))
        return apply

    return add


def family(name: str) -> Family:
    """The corruption family ``name`` (UnknownNameError listing the others)."""
    return _FAMILIES.get(name)


def families() -> list[str]:
    """Names of the corruption families, in the order they are evaluated by default."""
    return list(_ORDER)


# --- the corruptions ---------------------------------------------------------------------------

@_register("noise", "sigma", (0.05, 0.1, 0.2, 0.3, 0.5), low=0.0, random=True)
def gaussian_noise(x: Tensor, sigma: float, generator: Generators = None) -> Tensor:
    """clip(x + sigma z, 0, 1) with z ~ N(0, 1) per element, drawn from ``generator`` (one, or
    one per image of the batch ``x``)."""
    if sigma == 0:
        return x
    if generator is None or isinstance(generator, torch.Generator):
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype)
    else:
        if len(generator) != len(x):
            raise ValueError(f"{len(generator)} generators for a batch of {len(x)} images")
        z = torch.stack([torch.randn(x.shape[1:], generator=g, dtype=x.dtype)
                         for g in generator])
    return (x + sigma * z.to(x.device)).clamp_(0.0, 1.0)


@_register("brightness", "delta", (0.1, 0.2, 0.3, 0.4), low=-1.0, high=1.0)
def brightness(x: Tensor, delta: float, generator: Generators = None) -> Tensor:
    """clip(x + delta, 0, 1)."""
    return x if delta == 0 else (x + delta).clamp_(0.0, 1.0)


@_register("contrast", "reduction", (0.2, 0.4, 0.6, 0.8), high=1.0)
def contrast(x: Tensor, reduction: float, generator: Generators = None) -> Tensor:
    """clip(m + (1 - reduction)(x - m), 0, 1), m the mean of each image (over C, H, W)."""
    if reduction == 0:
        return x
    m = x.mean(dim=(-3, -2, -1), keepdim=True)
    return (m + (1.0 - reduction) * (x - m)).clamp_(0.0, 1.0)


def _affine(x: Tensor, matrix: Sequence[Sequence[float]], shift: Sequence[float]) -> Tensor:
    """Resample x (..., C, H, W): output pixel p (in pixels from the image centre, x right, y
    down) takes the input at ``matrix @ p + shift``, bilinear, zeros outside."""
    h, w = x.shape[-2:]
    (a, b), (c, d) = matrix
    # affine_grid works in coordinates normalised to [-1, 1] per axis: rescale each axis
    theta = torch.tensor([[a, b * h / w, 2 * shift[0] / w],
                          [c * w / h, d, 2 * shift[1] / h]], dtype=x.dtype, device=x.device)
    flat = x.reshape(-1, *x.shape[-3:])
    grid = F.affine_grid(theta.expand(len(flat), 2, 3), list(flat.shape), align_corners=False)
    out = F.grid_sample(flat, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.reshape(x.shape)


@_register("rotation", "degrees", (5.0, 10.0, 15.0, 20.0, 30.0), low=-180.0, high=180.0)
def rotation(x: Tensor, degrees: float, generator: Generators = None) -> Tensor:
    """x rotated counterclockwise (as displayed) by ``degrees`` about its centre."""
    if degrees == 0:
        return x
    a = math.radians(degrees)
    cos, sin = math.cos(a), math.sin(a)
    # with y pointing down, the input under output pixel p is p rotated clockwise by a
    return _affine(x, ((cos, -sin), (sin, cos)), (0.0, 0.0))


@_register("translation", "pixels", (1.0, 2.0, 3.0, 4.0))
def translation(x: Tensor, pixels: float, generator: Generators = None) -> Tensor:
    """x moved right and down by ``pixels`` (zeros enter from the top and the left)."""
    if pixels == 0:
        return x
    return _affine(x, ((1.0, 0.0), (0.0, 1.0)), (-pixels, -pixels))


_ORDER = ("noise", "brightness", "contrast", "rotation", "translation")


# --- evaluation --------------------------------------------------------------------------------

def sample_generator(seed: int, index: int) -> torch.Generator:
    """The generator of test sample ``index``'s noise in a run seeded ``seed``."""
    state = np.random.SeedSequence([seed, index]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def check_image_dataset(dataset: Any) -> Any:
    """``dataset`` if it has raw pixels to corrupt (``pixels(i)``, ``normalization``,
    ``targets``), else RobustnessError naming it."""
    if not (callable(getattr(dataset, "pixels", None)) and hasattr(dataset, "normalization")
            and hasattr(dataset, "targets")):
        raise RobustnessError(f"corruptions need an image dataset with raw pixels (such as "
                              f"MNIST or CIFAR-10), got {dataset!r}")
    return dataset


class CorruptedImages(Dataset):
    """An image dataset (uint8 pixels normalised on access, such as
    :class:`~edgecompress.data.ImageDataset`) whose items are corrupted by ``family`` at
    ``severity`` before the normalisation."""

    def __init__(self, dataset: Any, family_name: str, severity: float, seed: int = 0) -> None:
        self.dataset = check_image_dataset(dataset)
        self.family = family(family_name)
        self.severity = self.family.check(severity)
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[Tensor, int]]:
        """A batch corrupted at once (the DataLoader asks for batches this way): one resampling
        of the whole batch instead of one per image."""
        x = torch.stack([self.dataset.pixels(i) for i in indices])
        generators = [sample_generator(self.seed, i) for i in indices] \
            if self.family.random else None
        x = self.dataset.normalization.normalize(self.family.apply(x, self.severity, generators))
        return [(image, int(self.dataset.targets[i])) for image, i in zip(x, indices)]


@dataclass(frozen=True)
class RobustnessRow:
    """Top-1 (%) and mean cross-entropy under one corruption at one severity."""

    family: str
    severity: float
    unit: str
    top1: float
    loss: float


@dataclass
class RobustnessResult:
    """The clean metrics and one row per (family, severity), on ``samples`` test images."""

    clean_top1: float
    clean_loss: float
    samples: int
    seed: int
    rows: list[RobustnessRow] = field(default_factory=list)

    def curve(self, family_name: str) -> tuple[list[float], list[float]]:
        """(severities, top-1) of one family, starting at severity 0 with the clean accuracy."""
        rows = [r for r in self.rows if r.family == family_name]
        return [0.0] + [r.severity for r in rows], [self.clean_top1] + [r.top1 for r in rows]

    def families(self) -> list[str]:
        return list(dict.fromkeys(r.family for r in self.rows))

    def table(self) -> str:
        """Rows of family, severity, top-1 and its change from the clean top-1."""
        lines = [f"{'corruption':<12} {'severity':>14} {'top-1 (%)':>10} {'change':>8}",
                 f"{'clean':<12} {'-':>14} {self.clean_top1:>10.2f} {'':>8}"]
        for r in self.rows:
            severity = f"{r.severity:g} {r.unit}"
            lines.append(f"{r.family:<12} {severity:>14} {r.top1:>10.2f} "
                         f"{r.top1 - self.clean_top1:>+8.2f}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"samples": self.samples, "seed": self.seed,
                "clean": {"top1": self.clean_top1, "loss": self.clean_loss},
                "rows": [asdict(r) for r in self.rows]}


def check_corruptions(corruptions: Mapping[str, Sequence[float]] | None
                      ) -> dict[str, tuple[float, ...]]:
    """The (family -> severities) to evaluate, every severity checked; None: every family at
    its default severities."""
    if corruptions is None:
        return {name: family(name).defaults for name in _ORDER}
    checked: dict[str, tuple[float, ...]] = {}
    for name, severities in corruptions.items():
        fam = family(name)
        if not severities:
            raise RobustnessError(f"corruption {fam.name!r} needs at least one severity")
        checked[fam.name] = tuple(fam.check(s) for s in severities)
    return checked


def evaluate_robustness(model: torch.nn.Module, dataset: Any,
                        corruptions: Mapping[str, Sequence[float]] | None = None, *,
                        batch_size: int = 256, device: torch.device | str = "cpu",
                        task: Any = None, seed: int = 0,
                        progress: bool = False) -> RobustnessResult:
    """Top-1 of ``model`` on ``dataset`` clean and under each corruption (family -> severities;
    default: every family at its default severities), through
    :func:`edgecompress.train.evaluate`. ``task`` must be classification (the default)."""
    from tqdm.auto import tqdm

    from ..train import evaluate
    from ..train.tasks import create as create_task

    task = create_task(task)
    if task.name != "classification":
        raise RobustnessError(f"robustness measures top-1 accuracy of a classifier; this model's "
                              f"task is {task.name!r}")
    plan = check_corruptions(corruptions)
    settings = [(name, s) for name, severities in plan.items() for s in severities]
    check_image_dataset(dataset)
    clean = evaluate(model, dataset, batch_size=batch_size, device=device, task=task)
    result = RobustnessResult(clean["top1"], clean["loss"], len(dataset), seed)
    for name, severity in tqdm(settings, desc="corruptions", leave=False, disable=not progress,
                               dynamic_ncols=True):
        metrics = evaluate(model, CorruptedImages(dataset, name, severity, seed),
                           batch_size=batch_size, device=device, task=task)
        result.rows.append(RobustnessRow(name, severity, family(name).unit, metrics["top1"],
                                         metrics["loss"]))
    return result


def plot_robustness(path: str | Path, results: Mapping[str, RobustnessResult],
                    title: str = "") -> None:
    """One panel per corruption family: top-1 against severity (from the clean accuracy at 0),
    one curve per labelled result (e.g. several models on the same test set)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..train.checkpoint import atomic_write

    names = list(dict.fromkeys(n for r in results.values() for n in r.families()))
    if not names:
        raise RobustnessError("nothing to plot: the results hold no corruption")
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.2), squeeze=False,
                             sharey=True)
    for ax, name in zip(axes[0], names):
        for label, result in results.items():
            ax.plot(*result.curve(name), "-o", markersize=3, label=label)
        ax.set_title(name)
        ax.set_xlabel(family(name).unit)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("top-1 (%)")
    axes[0][-1].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
