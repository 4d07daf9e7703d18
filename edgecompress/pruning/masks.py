"""Pruning decisions: which output channels (filters) of each layer are kept.

After SPR training (Cacciola et al., arXiv 2206.14056, section "pruning"), entries with
|w| <= threshold are considered zero and a whole group (a filter with its BatchNorm gamma_j and
beta_j, see :mod:`.groups`) is removed when (almost) none of its entries survive: at most
``survive_fraction`` (default 0: none) of them have |w| > threshold.

The decision is plain data, ``masks: dict[layer name, BoolTensor]`` (True = output channel
kept), which the physical surgery consumes (``surgery.prune_channels(model, masks)``) and
:func:`apply_masks` / :class:`FixedMasks` use to fine-tune the masked model with the removed
filters held at zero. :func:`search_threshold` chooses the largest threshold whose accuracy
drop stays under a tolerance.

A threshold that would remove every filter of a layer is a :class:`PruningError` naming the
layer (a network with an empty layer computes nothing).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from ..errors import PruningError
from ..train.callbacks import Callback
from ..train.state import TrainerState
from .groups import LayerGroups, find_groups

__all__ = ["removal_thresholds", "filter_masks", "apply_masks", "FixedMasks",
           "search_threshold", "ThresholdSearch"]

Masks = dict[str, Tensor]


def _groups(model: nn.Module, groups: str | Sequence[LayerGroups]) -> list[LayerGroups]:
    return find_groups(model, groups) if isinstance(groups, str) else list(groups)


def _check_fraction(survive_fraction: float) -> None:
    if not 0 <= survive_fraction < 1:
        raise PruningError(f"survive_fraction must be in [0, 1), got {survive_fraction!r}")


@torch.no_grad()
def removal_thresholds(model: nn.Module, groups: str | Sequence[LayerGroups] = "conv+bn",
                       survive_fraction: float = 0.0) -> dict[str, Tensor]:
    """Layer name -> r_j per group: group j is removed by every threshold t >= r_j (r_j is the
    (k+1)-th largest |entry| of the group, k = floor(survive_fraction * n_j): with t >= r_j at
    most k entries have |w| > t)."""
    _check_fraction(survive_fraction)
    out = {}
    for g in _groups(model, groups):
        rows = g.matrix(model).abs()
        k = math.floor(survive_fraction * rows.shape[1])
        out[g.layer] = rows.sort(dim=1, descending=True).values[:, k].detach().clone()
    return out


def _masks_at(thresholds: Mapping[str, Tensor], threshold: float) -> Masks:
    masks = {}
    for layer, r in thresholds.items():
        keep = r > threshold
        if not keep.any():
            raise PruningError(f"threshold {threshold:g} would remove every filter of layer "
                               f"{layer!r} (its largest group needs a threshold below "
                               f"{float(r.max()):g})")
        masks[layer] = keep
    return masks


def filter_masks(model: nn.Module, threshold: float,
                 groups: str | Sequence[LayerGroups] = "conv+bn",
                 survive_fraction: float = 0.0) -> Masks:
    """Layer name -> BoolTensor over its output channels, True = kept: group j is removed when
    at most ``survive_fraction`` of its entries have |w| > ``threshold``."""
    if not threshold >= 0:
        raise PruningError(f"pruning threshold must be >= 0, got {threshold!r}")
    return _masks_at(removal_thresholds(model, groups, survive_fraction), threshold)


def _masked_tensors(model: nn.Module, masks: Mapping[str, Tensor]) -> list[tuple[Tensor, Tensor]]:
    """(parameter, keep mask over its dim 0) for every tensor the masks zero: each masked
    layer's weight and bias and its BatchNorm's gamma and beta (found from the graph)."""
    modules = dict(model.named_modules())
    unknown = sorted(set(masks) - set(modules))
    if unknown:
        raise PruningError(f"masks name layer(s) {unknown} that {type(model).__name__} has not")
    joined = {g.layer: g.bn for g in find_groups(model, "conv+bn+linear")}
    pairs = []
    for name, keep in masks.items():
        layer = modules[name]
        weight = getattr(layer, "weight", None)
        if not isinstance(weight, Tensor):
            raise PruningError(f"mask for layer {name!r}: {type(layer).__name__} has no weight")
        keep = torch.as_tensor(keep, dtype=torch.bool, device=weight.device)
        if keep.shape != weight.shape[:1]:
            raise PruningError(f"mask for layer {name!r} has shape {tuple(keep.shape)}, the "
                               f"layer has {weight.shape[0]} output channels")
        if not keep.any():
            raise PruningError(f"mask for layer {name!r} removes every filter of the layer")
        owners = [layer] + ([modules[joined[name]]] if joined.get(name) else [])
        for owner in owners:
            for attr in ("weight", "bias"):
                tensor = getattr(owner, attr, None)
                if isinstance(tensor, Tensor):
                    pairs.append((tensor, keep))
    return pairs


@torch.no_grad()
def _zero(pairs: list[tuple[Tensor, Tensor]]) -> None:
    for tensor, keep in pairs:
        tensor[~keep] = 0


def apply_masks(model: nn.Module, masks: Mapping[str, Tensor]) -> nn.Module:
    """Zero, in place, the removed filters of ``masks`` (weight rows and bias) and the gamma and
    beta of the BatchNorm joined to each masked layer; returns ``model``. With the conv output
    and its BatchNorm's affine parameters zero, channel j is exactly 0 after the BatchNorm (in
    eval mode), as in the physically pruned model. Use :class:`FixedMasks` to keep them at zero
    while training."""
    _zero(_masked_tensors(model, masks))
    return model


class FixedMasks(Callback):
    """Fine-tuning with fixed masks: zeroes the removed filters (and their BatchNorm gamma and
    beta) when training starts and again after every optimizer step, so momentum and weight
    decay never bring them back. The masks are saved in checkpoints (exact resume)."""

    def __init__(self, masks: Mapping[str, Tensor]) -> None:
        self.masks = {k: torch.as_tensor(v, dtype=torch.bool).cpu() for k, v in masks.items()}
        self._pairs: list[tuple[Tensor, Tensor]] | None = None

    def on_fit_start(self, trainer: TrainerState) -> None:
        self._pairs = _masked_tensors(trainer.model, self.masks)
        _zero(self._pairs)

    def on_step_end(self, trainer: TrainerState, step: int, loss: float) -> None:
        if self._pairs is None:
            self.on_fit_start(trainer)
        _zero(self._pairs)

    def state_dict(self) -> dict[str, Any]:
        return {"masks": dict(self.masks)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.masks = dict(state["masks"])
        self._pairs = None


@dataclass
class ThresholdSearch:
    """Result of :func:`search_threshold`: the threshold, its masks, the unpruned model's score
    and the masked model's score."""

    threshold: float
    masks: Masks
    baseline: float
    score: float


def search_threshold(model: nn.Module, evaluate: Callable[[nn.Module], float],
                     tolerance: float, groups: str | Sequence[LayerGroups] = "conv+bn",
                     survive_fraction: float = 0.0) -> ThresholdSearch:
    """The largest threshold whose masked model scores at most ``tolerance`` below the unpruned
    one (``evaluate(model)`` -> e.g. training accuracy in %, higher is better; it is called on
    masked copies, ``model`` is not modified).

    The masks change only at the groups' removal thresholds r_j (:func:`removal_thresholds`), so
    the search is a binary search over the sorted r_j, exact in about log2(#groups) evaluations,
    assuming the score does not increase as more groups are removed. Thresholds that would
    empty a layer count as too large. Threshold 0 (remove only all-zero groups) is the fallback
    when no removal fits the tolerance.
    """
    if not tolerance >= 0:
        raise PruningError(f"accuracy tolerance must be >= 0, got {tolerance!r}")
    groups = _groups(model, groups)
    thresholds = removal_thresholds(model, groups, survive_fraction)
    baseline = float(evaluate(model))

    def score(t: float) -> float | None:
        try:
            masks = _masks_at(thresholds, t)
        except PruningError:
            return None
        return float(evaluate(apply_masks(copy.deepcopy(model), masks)))

    candidates = torch.cat([r.flatten() for r in thresholds.values()]).unique().tolist()
    best_t, best_score = 0.0, score(0.0)
    if best_score is None:
        raise PruningError("threshold 0 already removes every filter of a layer (a layer is "
                           "all zeros)")
    lo, hi = 0, len(candidates) - 1  # invariant: answer index in [lo - 1, hi]
    while lo <= hi:
        mid = (lo + hi) // 2
        s = score(candidates[mid])
        if s is not None and baseline - s <= tolerance:
            best_t, best_score, lo = candidates[mid], s, mid + 1
        else:
            hi = mid - 1
    return ThresholdSearch(best_t, _masks_at(thresholds, best_t), baseline, best_score)
