"""L1-norm filter pruning (Li, Kadav, Durdanovic, Samet, Graf, "Pruning Filters for Efficient
ConvNets", ICLR 2017), registered as the graph transform ``"l1-prune"``.

Per prunable layer, the score of output filter j is s_j = sum |K_j| (the sum of the absolute
weights of the filter, bias excluded); the ``ratio`` fraction of the filters with the smallest
scores is removed (floor(ratio * n), so at least one filter stays), each layer independently
(the paper's "independent" strategy: scores from the unpruned weights). The channels are then
removed physically by :func:`~edgecompress.pruning.surgery.prune_channels`.

Channels tied by residual additions (a :class:`~edgecompress.pruning.surgery.CoupledGroup` of
several layers) are left alone by default, as the paper does for ResNets (it prunes the first
layer of each residual block only); ``residual=True`` prunes them too, scoring a coupled channel
by the sum of the L1 norms of all its filters. convert's first/last policy applies: with
``keep_first_last`` (the default) the first layer's output channels and the last Linear's input
features are kept (with the groups coupled to them); ``include``/``exclude`` choose the layers.

>>> import edgecompress
>>> net = edgecompress.models.create("resnet20")
>>> small = edgecompress.convert(net, "l1-prune", ratio=0.5)
>>> both = edgecompress.convert(net, [{"name": "l1-prune", "ratio": 0.5},
...                                   {"name": "bnn", "mode": "w1a32"}])
"""

from __future__ import annotations

import fnmatch
import math
from typing import Mapping, Sequence, Union

import torch
from torch import Tensor, nn

from ..convert.engine import (POLICY_OPTIONS, ConversionReport, GraphTransform, Policy,
                              _first_last_names, _matches, register_method)
from ..analysis import summary
from ..errors import ConversionError, PruningError
from .budget import bisect_for_macs, check_macs_reduction, macs_removed
from .surgery import CoupledGroup, Inputs, _Graph, _example_inputs, prune_channels, width_changes

__all__ = ["L1Prune", "l1_keep", "filter_l1"]

Ratio = Union[float, Mapping[str, float]]


def filter_l1(module: nn.Module) -> Tensor:
    """s_j = sum of |weight| over output filter j of a conv or linear layer."""
    return module.weight.detach().abs().flatten(1).sum(1)


def _check_ratio(ratio: Ratio) -> None:
    values = ratio.values() if isinstance(ratio, Mapping) else [ratio]
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not 0 <= value < 1:
            raise ConversionError(f"l1-prune: ratio must be a number in [0, 1) (the fraction of "
                                  f"output channels removed), or a mapping from layer-name "
                                  f"globs to such numbers; got {value!r}")
    if isinstance(ratio, Mapping) and not all(isinstance(k, str) for k in ratio):
        raise ConversionError(f"l1-prune: the keys of a ratio mapping are layer-name globs, got "
                              f"{list(ratio)!r}")


def _layer_ratio(name: str, ratio: Ratio) -> float:
    if not isinstance(ratio, Mapping):
        return float(ratio)
    return next((float(r) for glob, r in ratio.items() if fnmatch.fnmatchcase(name, glob)), 0.0)


def _skip_reason(group: CoupledGroup, residual: bool, protected: Mapping[str, str],
                 last: str | None) -> str | None:
    """Why l1-prune leaves a whole group alone (None: it may prune it)."""
    for name in group.layers:
        if name in protected:
            why = protected[name]
            return why if len(group.layers) == 1 else f"coupled with the {why} {name!r}"
    if last is not None and last in group.layers:
        return "last layer"
    if group.reason is not None:
        return group.reason
    if last is not None and last in group.feeds:
        return f"feeds the last layer {last!r}"
    if len(group.layers) > 1 and not residual:
        return "channels tied by a residual addition (residual=False)"
    return None


def l1_keep(model: nn.Module, ratio: Ratio, inputs: Inputs = None, *, residual: bool = False,
            round_to: int = 1, policy: Policy = Policy()
            ) -> tuple[dict[str, Tensor], dict[str, str]]:
    """(keep masks for :func:`prune_channels`, layer -> why it is not pruned) for L1-norm filter
    pruning of ``model`` with ``ratio`` (a fraction, or layer-name glob -> fraction; layers no
    glob matches are not pruned; a coupled group takes the smallest ratio of its layers)."""
    _check_ratio(ratio)
    _check_round_to(round_to)
    return _l1_keep(_Graph(model, _example_inputs(model, inputs)), ratio, residual, round_to,
                    policy)


def _check_round_to(round_to: int) -> None:
    if isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1:
        raise ConversionError(f"l1-prune: round_to must be a positive int, got {round_to!r}")


def _kept_count(size: int, rate: float, round_to: int) -> int:
    """Channels kept of ``size`` at ``rate``: size - floor(rate * size), rounded up to a
    multiple of ``round_to`` (never more than ``size``)."""
    kept = size - math.floor(rate * size + 1e-9)
    return min(size, round_to * math.ceil(kept / round_to))


def _l1_keep(graph: _Graph, ratio: Ratio, residual: bool, round_to: int, policy: Policy
             ) -> tuple[dict[str, Tensor], dict[str, str]]:
    model = graph.model
    protected = _first_last_names(model) if policy.keep_first_last else {}
    last = next((n for n, why in protected.items() if why == "last layer"), None)
    protected = {n: why for n, why in protected.items() if why != "last layer"}
    keep: dict[str, Tensor] = {}
    reasons: dict[str, str] = {}
    for group in graph.groups:
        skip = _skip_reason(group, residual, protected, last)
        if skip is not None:
            reasons.update({n: protected.get(n, skip) for n in group.layers})
            continue
        rates = {}
        for name in group.layers:
            module = graph.layers[name]
            if policy.include is not None and not _matches(name, module, policy.include):
                reasons[name], rates[name] = "not included", 0.0
            elif policy.exclude is not None and _matches(name, module, policy.exclude):
                reasons[name], rates[name] = "excluded", 0.0
            else:
                rates[name] = _layer_ratio(name, ratio)
        rate = min(rates.values())
        count = group.size - _kept_count(group.size, rate, round_to)
        if count == 0:
            for name in group.layers:
                reasons.setdefault(name, f"ratio {rate:g} removes no channel of {group.size}"
                                   if rates[name] == rate else "coupled with a layer kept whole")
            continue
        scores = torch.zeros(group.size)
        for name in group.layers:
            scores.index_add_(0, group.channels[name], filter_l1(graph.layers[name]).float())
        removed = torch.argsort(scores, stable=True)[:count]
        for name in group.layers:
            keep[name] = ~torch.isin(group.channels[name], removed)
    return keep, reasons


@register_method("l1-prune")
class L1Prune(GraphTransform):
    """L1-norm filter pruning (Li et al. 2017) with physical channel removal.

    Args:
        ratio: fraction of output channels removed per layer (or per coupled group), in [0, 1);
            or a mapping layer-name glob -> fraction (first match wins, unmatched layers kept).
            Default 0.5 (unless ``macs_reduction`` is given).
        macs_reduction: instead of ``ratio``, the fraction of the model's MACs to remove, in
            (0, 1): the smallest uniform ratio that removes at least that much (bisection on the
            physically pruned model's MACs, so the pruning is matched by cost, not by ratio).
        residual: also prune channels tied by residual additions (summed L1 norm of the coupled
            filters); False (default) prunes only layers no addition ties, as the paper does.
        round_to: keep a multiple of this many channels per layer or group (rounding the kept
            count up): channel counts the CPU kernels like (e.g. 8) turn saved MACs into saved
            latency better.
        input_shape: example input shape without the batch dimension for tracing; by default
            the model's ``input_shape`` attribute.

    convert's ``keep_first_last``, ``include`` and ``exclude`` choose the layers pruned.
    """

    policy_options = POLICY_OPTIONS
    #: bisection steps of ``macs_reduction`` (the ratio to 1/2**14, finer than any channel count)
    STEPS = 14

    def __init__(self, *, ratio: Ratio | None = None, macs_reduction: float | None = None,
                 residual: bool = False, round_to: int = 1,
                 input_shape: Sequence[int] | None = None) -> None:
        if ratio is not None and macs_reduction is not None:
            raise ConversionError("l1-prune: give ratio or macs_reduction, not both")
        if macs_reduction is not None:
            try:
                check_macs_reduction(macs_reduction)
            except PruningError as exc:
                raise ConversionError(f"l1-prune: {exc}") from None
        ratio = 0.5 if ratio is None and macs_reduction is None else ratio
        if ratio is not None:
            _check_ratio(ratio)
        if not isinstance(residual, bool):
            raise ConversionError(f"l1-prune: residual must be true or false, got {residual!r}")
        _check_round_to(round_to)
        self.ratio, self.macs_reduction, self.residual = ratio, macs_reduction, residual
        self.round_to = round_to
        self.input_shape = tuple(input_shape) if input_shape is not None else None

    def apply(self, model: nn.Module) -> nn.Module:
        """The pruned copy of ``model`` (default policy: first and last layers kept)."""
        return self._apply(model, Policy(), ConversionReport("l1-prune"))

    def keep_masks(self, model: nn.Module, policy: Policy = Policy()
                   ) -> tuple[dict[str, Tensor], dict[str, str]]:
        """(keep masks for :func:`~.surgery.prune_channels`, layer -> why it is not pruned): the
        decision alone, without the surgery (``edgecompress prune`` uses it)."""
        example = _example_inputs(model, self.input_shape)
        graph = _Graph(model, example)
        if self.macs_reduction is not None:
            return self._matched(graph, example, policy)
        return _l1_keep(graph, self.ratio, self.residual, self.round_to, policy)

    def _apply(self, model: nn.Module, policy: Policy, report: ConversionReport) -> nn.Module:
        keep, reasons = self.keep_masks(model, policy)
        pruned = prune_channels(model, keep, _example_inputs(model, self.input_shape))
        changes = width_changes(model, pruned)
        report.converted += changes
        changed = {n for n, _, _ in changes}
        report.kept += [(n, type(m).__name__, reasons.get(n, "no channel removed"))
                        for n, m in model.named_modules()
                        if isinstance(m, (nn.Conv2d, nn.Linear)) and n not in changed]
        return pruned

    def _matched(self, graph: _Graph, example: tuple[Tensor, ...], policy: Policy
                 ) -> tuple[dict[str, Tensor], dict[str, str]]:
        """The keep masks of the smallest uniform ratio removing ``macs_reduction`` of the MACs
        (bisection over the ratios k / 2**STEPS)."""
        base = summary(graph.model, input=example[0]).total_macs
        reasons: dict[float, dict[str, str]] = {}

        def attempt(ratio: float) -> tuple[float, dict[str, Tensor]]:
            keep, reasons[ratio] = _l1_keep(graph, ratio, self.residual, self.round_to, policy)
            return macs_removed(graph.model, keep, example, base), keep

        ratios = [k / 2 ** self.STEPS for k in range(2 ** self.STEPS)]
        try:
            ratio, keep = bisect_for_macs(ratios, self.macs_reduction, attempt,
                                          "pruning every prunable layer to a single channel")
        except PruningError as exc:
            raise ConversionError(
                f"l1-prune: {exc} (the layers kept are listed with their reasons in the "
                f"conversion report; see residual, keep_first_last, include and exclude)") from None
        return keep, reasons[ratio]
