"""Pruning to a cost budget: the masks that remove a given fraction of the model's MACs.

Methods compared "at equal MACs" (spec ``pruning_spr.md``, the comparison of SPR, L1-norm and
group lasso) need each method's decision rule moved until the physically pruned network has the
target cost. For the magnitude rule of SPR and group lasso (:mod:`.masks`: group j is removed by
every threshold t >= r_j) the knob is the global threshold t; this module finds the smallest t
whose pruned model removes at least ``macs_reduction`` of the MACs (bisection over the sorted
r_j, MACs counted by :func:`edgecompress.summary` on the physically pruned copy, so channels
that a residual addition ties together count only when every coupled layer drops them).

Two rules keep the result a working, CPU-friendly network:

- a layer is never emptied: when t removes every channel of a coupled group, the channel with the
  largest r_j stays (the fixed-threshold rule of :func:`.masks.filter_masks` raises instead);
- ``round_to``: each group keeps a multiple of ``round_to`` channels (rounded up, by putting back
  the removed channels with the largest r_j), counts the CPU kernels use fully (see
  :class:`~.l1.L1Prune`'s option of the same name).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from ..analysis import summary
from ..errors import PruningError
from .groups import LayerGroups
from .masks import removal_thresholds
from .surgery import Inputs, _example_inputs, _Graph, prune_channels

__all__ = ["macs_removed", "bisect_for_macs", "threshold_masks", "threshold_for_macs",
           "check_macs_reduction"]

Masks = dict[str, Tensor]


def check_macs_reduction(value: object, who: str = "macs_reduction") -> float:
    """``value`` as a float in (0, 1), else a :class:`PruningError`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise PruningError(f"{who} must be a number in (0, 1) (the fraction of the model's MACs "
                           f"removed), got {value!r}")
    return float(value)


def macs_removed(model: nn.Module, keep: Masks, example: tuple[Tensor, ...],
                 base: int | None = None) -> float:
    """The fraction of ``model``'s MACs that :func:`~.surgery.prune_channels` with ``keep``
    removes (``base``: the unpruned MACs, if already counted)."""
    base = base if base is not None else summary(model, input=example[0]).total_macs
    pruned = prune_channels(model, keep, example)
    return 1 - summary(pruned, input=example[0]).total_macs / base


def bisect_for_macs(candidates: Sequence[float], target: float,
                    attempt: Callable[[float], tuple[float, Masks]], what: str
                    ) -> tuple[float, Masks]:
    """(knob, masks) of the smallest candidate knob (``candidates`` ascending, more pruning as
    it grows) whose ``attempt(knob) -> (MACs reduction, masks)`` reaches ``target``."""
    reached, best = attempt(candidates[-1])
    if reached < target:
        raise PruningError(f"macs_reduction {target:g} is out of reach: {what} removes at most "
                           f"{reached:.1%} of the MACs")
    lo, hi = 0, len(candidates) - 1  # invariant: candidates[hi] reaches the target
    while lo < hi:
        mid = (lo + hi) // 2
        reduction, masks = attempt(candidates[mid])
        if reduction >= target:
            hi, best = mid, masks
        else:
            lo = mid + 1
    return candidates[hi], best


def _check_round_to(round_to: object) -> int:
    if isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1:
        raise PruningError(f"round_to must be a positive int, got {round_to!r}")
    return round_to


class _Scores:
    """Per prunable coupled group of ``model``: each coupled channel's score, the largest r_j of
    its member filters (it is removed only when every coupled layer drops it)."""

    def __init__(self, model: nn.Module, example: tuple[Tensor, ...],
                 groups: str | Sequence[LayerGroups], survive_fraction: float) -> None:
        graph = _Graph(model, example)
        r = removal_thresholds(model, groups, survive_fraction)
        self.scored = []
        for group in graph.groups:
            if group.reason is not None or not any(n in r for n in group.layers):
                continue
            score = torch.full((group.size,), -math.inf)
            for n in group.layers:
                # a member the groups do not cover (a Linear under "conv+bn") keeps its channels
                s = r[n].float() if n in r else torch.full((len(group.channels[n]),), math.inf)
                score.scatter_reduce_(0, group.channels[n], s, reduce="amax")
            self.scored.append((group, score))
        if not self.scored:
            raise PruningError(f"{type(model).__name__} has no prunable group of the kind "
                               f"{groups!r}")

    def candidates(self) -> list[float]:
        """The thresholds at which the masks change, ascending."""
        return torch.cat([s[torch.isfinite(s)] for _, s in self.scored]).unique().tolist()

    def masks(self, threshold: float, round_to: int) -> Masks:
        masks = {}
        for group, score in self.scored:
            count = int((score > threshold).sum())
            count = min(group.size, round_to * math.ceil(max(count, 1) / round_to))
            keep = torch.zeros(group.size, dtype=torch.bool)
            keep[torch.argsort(score, descending=True, stable=True)[:count]] = True
            for n in group.layers:
                masks[n] = keep[group.channels[n]]
        return masks


def threshold_masks(model: nn.Module, threshold: float, inputs: Inputs = None, *,
                    groups: str | Sequence[LayerGroups] = "conv+bn",
                    survive_fraction: float = 0.0, round_to: int = 1) -> Masks:
    """The keep masks of the magnitude rule at ``threshold`` over coupled channels, with the
    two rules of the module docstring (no layer emptied, counts rounded up to ``round_to``)."""
    scores = _Scores(model, _example_inputs(model, inputs), groups, survive_fraction)
    return scores.masks(threshold, _check_round_to(round_to))


def threshold_for_macs(model: nn.Module, target: float, inputs: Inputs = None, *,
                       groups: str | Sequence[LayerGroups] = "conv+bn",
                       survive_fraction: float = 0.0, round_to: int = 1
                       ) -> tuple[float, Masks]:
    """(threshold, keep masks for :func:`~.surgery.prune_channels`) of the smallest global
    magnitude threshold whose pruned model removes at least ``target`` of the MACs
    (:func:`threshold_masks` at that threshold)."""
    target = check_macs_reduction(target)
    round_to = _check_round_to(round_to)
    example = _example_inputs(model, inputs)
    scores = _Scores(model, example, groups, survive_fraction)
    base = summary(model, input=example[0]).total_macs

    def attempt(t: float) -> tuple[float, Masks]:
        masks = scores.masks(t, round_to)
        return macs_removed(model, masks, example, base), masks

    return bisect_for_macs(scores.candidates(), target, attempt,
                           "every threshold (each layer keeping its strongest channel)")
