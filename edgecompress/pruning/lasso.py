"""The group-lasso penalty: the structured-sparsity baseline of the pruning comparison.

Yuan & Lin, "Model selection and estimation in regression with grouped variables", JRSS-B 2006;
applied to filters of deep networks by Wen, Wu, Wang, Chen, Li, "Learning Structured Sparsity
in Deep Neural Networks", NeurIPS 2016. The groups are those of SPR (:func:`.groups.find_groups`:
a conv filter joined with its BatchNorm's gamma_j and beta_j by default).

Per group, with n_j its number of entries, Yuan & Lin's size-weighted penalty is
sqrt(n_j) ||w_j||_2. The training-loss term is its weighted mean over the groups of every
grouped layer, normalised like SPR's term (weights over the sum of the weights)::

    forward:  G(W) = lambda * (sum_j sqrt(n_j) ||w_j||_2) / (sum_j sqrt(n_j))
    backward: dG/dw_j = lambda * sqrt(n_j) / (sum_k sqrt(n_k)) * w_j / ||w_j||_2,  0 if w_j = 0

(the subgradient 0 is taken at an all-zero group, so the gradient is always finite). SPR's term is
lambda * (sum_j n_j z_j) / (sum_j n_j), whose middle case is z_j = 2 sqrt(alpha (1 - alpha))
||w_j||_2: when every group has the same size, both are a plain mean over groups, and group lasso
with lambda' = 2 sqrt(alpha (1 - alpha)) lambda equals SPR wherever every group is in that case.
The per-group term is of the order of ||w_j||_2 for both, so their lambda ranges are comparable.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

from ..errors import PruningError
from .groups import LayerGroups, find_groups
from .spr import check_lambda

__all__ = ["GroupLasso"]


class GroupLasso:
    """The group-lasso loss term over the groups of a model: ``lasso(model)`` -> G(W) of the
    module docstring, a differentiable scalar (vectorized: one norm per layer's group matrix).

    - ``lam``: lambda >= 0.
    - ``groups``: a kind (``"conv+bn"`` default, ``"conv"``, ``"conv+bn+linear"``...; see
      :mod:`.groups`) detected on ``model``, or a list of :class:`LayerGroups`.

    The term reads the weights of the model it is called with (a copy, the unwrapped model of a
    DDP run).
    """

    def __init__(self, model: nn.Module, lam: float, *,
                 groups: str | Sequence[LayerGroups] = "conv+bn") -> None:
        check_lambda(lam, "group lasso")
        self.lam = float(lam)
        self.groups = find_groups(model, groups) if isinstance(groups, str) else list(groups)
        if not self.groups:
            raise PruningError(f"no pruning groups of kind {groups!r} in "
                               f"{type(model).__name__}")

    def norms(self, model: nn.Module) -> dict[str, Tensor]:
        """Layer name -> ||w_j||_2 of each of its groups (differentiable; subgradient 0 at 0)."""
        return {g.layer: torch.linalg.vector_norm(g.matrix(model), dim=1) for g in self.groups}

    def __call__(self, model: nn.Module) -> Tensor:
        total, weight = None, 0.0
        for g in self.groups:
            rows = g.matrix(model)
            root_n = math.sqrt(rows.shape[1])
            term = root_n * torch.linalg.vector_norm(rows, dim=1).sum()
            total = term if total is None else total + term
            weight += root_n * rows.shape[0]
        return self.lam * total / weight
