"""Structured pruning: the Structured Perspective Regularization (SPR; Cacciola, Frangioni, Li,
Lodi, arXiv 2206.14056), pruning decisions (masks of kept output channels), fine-tuning with
fixed masks, physical channel surgery through Torch-Pruning's dependency graph
(:mod:`.surgery`: :func:`prune_channels`, :func:`coupled_groups`) and the L1-norm filter pruning
baseline (:mod:`.l1`, Li et al. 2017, method ``"l1-prune"`` of :func:`edgecompress.convert`)
and the group-lasso baseline (:mod:`.lasso`, Yuan & Lin 2006, Wen et al. 2016; regularizer
``"group-lasso"``, the same groups and callback mechanism as SPR).

The procedure, in Python::

    import copy
    from edgecompress import pruning
    from edgecompress.train import Trainer, TrainConfig, evaluate

    reference = ...                      # a trained, unregularized resnet20
    model = copy.deepcopy(reference)
    spr = pruning.SPRRegularizer(lam=1.0, alpha=0.1, reference=reference)  # M from reference
    Trainer(model, train_set, test_set, TrainConfig(epochs=30), callbacks=[spr]).fit()

    accuracy = lambda m: evaluate(m, train_set)["top1"]
    found = pruning.search_threshold(model, accuracy, tolerance=1.0)   # <= 1 point drop
    masks = found.masks                  # {"stem.0": BoolTensor(16), ...}, True = kept
    # or a fixed threshold: masks = pruning.filter_masks(model, threshold=1e-3)
    # or a MACs budget: t, masks = pruning.threshold_for_macs(model, 0.5)  # 50 % fewer MACs
    pruning.apply_masks(model, masks)    # removed filters and their BN gamma/beta -> 0
    Trainer(model, train_set, test_set, TrainConfig(epochs=10),
            callbacks=[pruning.FixedMasks(masks)]).fit()   # fine-tune, regularizer off
    small = pruning.prune_channels(model, masks)  # physically smaller, same outputs (eval)

``pruning.SPR(model, lam, alpha, reference=..., m_scale=1.0, groups="conv+bn")`` is the term
itself (``spr(model)`` -> a differentiable scalar) for a custom training loop. Groups
(:func:`find_groups`): a Conv2d filter joined with the BatchNorm that consumes its output
(``"conv+bn"``, default), filters only (``"conv"``), Linear rows (``"conv+bn+linear"``).

In a recipe, ``regularizer: {name: spr, lam: 1.0, alpha: 0.1, reference: PATH_OR_NULL,
m_scale: 1.0, groups: conv+bn}`` adds the SPR callback to training; ``reference`` is the
checkpoint of the unregularized run, and without it M comes from the model's own weights when
training starts. ``regularizer: {name: group-lasso, lam: 0.5, groups: conv+bn}`` trains with the
group-lasso baseline instead (:class:`GroupLasso`, :class:`GroupLassoRegularizer`).
"""

from . import budget
from .budget import threshold_for_macs
from .callback import (GroupLassoRegularizer, PenaltyRegularizer, SPRRegularizer,
                       available_regularizers, create_regularizer, register_regularizer,
                       regularizer_options)
from .groups import LayerGroups, find_groups
from .l1 import L1Prune, l1_keep
from .lasso import GroupLasso
from .masks import (FixedMasks, ThresholdSearch, apply_masks, filter_masks, removal_thresholds,
                    search_threshold)
from .pipeline import PruneResult, compare_models, prune_recipe
from .spr import SPR, spr_cases, spr_values
from .surgery import CoupledGroup, coupled_groups, effective_keep, prune_channels, width_changes

__all__ = [
    "SPR", "spr_values", "spr_cases",
    "LayerGroups", "find_groups",
    "SPRRegularizer", "create_regularizer", "regularizer_options", "available_regularizers",
    "register_regularizer",
    "FixedMasks", "ThresholdSearch", "apply_masks", "filter_masks", "removal_thresholds",
    "search_threshold", "threshold_for_macs",
    "CoupledGroup", "coupled_groups", "effective_keep", "prune_channels", "width_changes",
    "L1Prune", "l1_keep",
    "PruneResult", "compare_models", "prune_recipe",
    "GroupLasso", "GroupLassoRegularizer", "PenaltyRegularizer",
]
