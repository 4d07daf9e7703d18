"""Structured pruning: physical channel surgery through Torch-Pruning's dependency graph
(:mod:`.surgery`) and the L1-norm filter pruning baseline (:mod:`.l1`, method ``"l1-prune"``)."""

from .l1 import L1Prune, l1_keep
from .surgery import CoupledGroup, coupled_groups, effective_keep, prune_channels, width_changes

__all__ = ["CoupledGroup", "coupled_groups", "effective_keep", "prune_channels",
           "width_changes", "L1Prune", "l1_keep"]
