"""The Structured Perspective Regularization (SPR) term.

Cacciola, Frangioni, Li, Lodi, "Deep Neural Networks pruning via the Structured Perspective
Regularization", arXiv 2206.14056 (SIAM J. Math. Data Science 2024); closed form as in the
authors' code.

The MIP view of structured pruning, with y_j = 1 keeping group j (see :mod:`.groups`)::

    min L(W) + lambda * sum_j [alpha ||w_j||^2 + (1 - alpha) y_j]
    s.t. ||w_j||_inf <= M y_j,  y_j in {0, 1}

The perspective reformulation of alpha ||w||^2 as alpha ||w||^2 / y, with y relaxed to (0, 1]
and projected out (the optimal y is clamp(max(c ||w||_2, ||w||_inf / M), max=1)), gives the SPR
term of one group, with c = sqrt(alpha / (1 - alpha)):

    z(w) = alpha ||w||_2^2 + (1 - alpha)                  if max(||w||_inf / M, c ||w||_2) >= 1
         = 2 sqrt(alpha (1 - alpha)) ||w||_2              elif ||w||_inf / M <= c ||w||_2
         = alpha M ||w||_2^2 / ||w||_inf + (1 - alpha) ||w||_inf / M      otherwise

z is continuous and convex; the middle case is a group-lasso penalty, the first a ridge plus
the constant cost of keeping the group. The division of the third case is guarded (it is only
taken when ||w||_inf > 0, and ||w||_2 is differentiated safely at 0), so z has a finite value
and a finite (sub)gradient at an all-zero group. Gradients are plain autograd of this formula.

Training loss: L + lambda * (sum_j n_j z(w_j)) / (sum_j n_j), n_j the number of entries of
group j, summed over the groups of every grouped layer. M is per layer: M_scale (default 1)
times the largest |entry| of that layer's groups (filter weights, and gamma/beta when joined, as
the authors' code does) in a trained, unregularized reference model of the same architecture.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
from torch import Tensor, nn

from ..errors import PruningError
from .groups import LayerGroups, find_groups

__all__ = ["SPR", "spr_values", "spr_cases", "check_lambda", "check_spr_params",
           "check_m_values"]


def check_lambda(lam: float, penalty: str) -> None:
    """A penalty's lambda is a finite number >= 0 (not a bool), else a :class:`PruningError`
    naming the penalty and the value."""
    if (isinstance(lam, bool) or not isinstance(lam, (int, float)) or not math.isfinite(lam)
            or lam < 0):
        raise PruningError(f"{penalty} lambda must be a finite number >= 0, got {lam!r}")


def check_spr_params(lam: float, alpha: float, m_scale: float = 1.0) -> None:
    """lambda >= 0, alpha in (0, 1), M_scale > 0 (all finite), else a :class:`PruningError`
    naming the value."""
    check_lambda(lam, "SPR")
    if not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise PruningError(f"SPR alpha must be in the open interval (0, 1), got {alpha!r}")
    if not isinstance(m_scale, (int, float)) or not math.isfinite(m_scale) or m_scale <= 0:
        raise PruningError(f"SPR M_scale must be a finite number > 0, got {m_scale!r}")


def _check_m(value: float, layer: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or number <= 0:
        raise PruningError(f"SPR M of layer {layer!r} must be a finite number > 0, got {value!r}")
    return number


def check_m_values(M: float | Mapping[str, float]) -> None:
    """Explicit M values (one number, or layer name -> number) are finite and > 0, else a
    :class:`PruningError` naming the layer and the value."""
    items = M.items() if isinstance(M, Mapping) else [("(every layer)", M)]
    for layer, value in items:
        _check_m(value, layer)


def _spr(w: Tensor, m: float, alpha: float) -> tuple[Tensor, Tensor]:
    """(z, case) per row of ``w`` (groups x entries); case is 1, 2 or 3 as in the module
    docstring."""
    c = math.sqrt(alpha / (1 - alpha))
    sq = (w * w).sum(dim=1)
    tiny = torch.finfo(w.dtype).tiny
    l2 = torch.where(sq > 0, sq.clamp_min(tiny).sqrt(), torch.zeros_like(sq))
    inf = w.abs().amax(dim=1)
    a, b = inf / m, c * l2
    case1 = torch.maximum(a, b) >= 1
    case2 = ~case1 & (a <= b)
    case3 = ~case1 & ~case2  # implies ||w||_inf > 0
    safe_inf = torch.where(case3, inf, torch.ones_like(inf))
    z = torch.where(case1, alpha * sq + (1 - alpha),
                    torch.where(case2, 2 * math.sqrt(alpha * (1 - alpha)) * l2,
                                alpha * m * sq / safe_inf + (1 - alpha) * inf / m))
    case = 1 * case1 + 2 * case2 + 3 * case3
    return z, case


def spr_values(w: Tensor, m: float, alpha: float) -> Tensor:
    """z(w_j) for every row ``w_j`` of ``w`` (shape groups x entries), vectorized; see the
    module docstring for the formula."""
    return _spr(w, m, alpha)[0]


def spr_cases(w: Tensor, m: float, alpha: float) -> Tensor:
    """Which case of the closed form (1, 2 or 3) each row of ``w`` falls in."""
    with torch.no_grad():
        return _spr(w, m, alpha)[1]


class SPR:
    """The SPR loss term over the groups of a model: ``spr(model)`` -> lambda * (sum_j n_j
    z(w_j)) / (sum_j n_j), differentiable (see the module docstring).

    - ``lam`` (lambda >= 0), ``alpha`` in (0, 1): the regularizer's weights.
    - ``groups``: a kind (``"conv+bn"`` default, ``"conv"``, ``"conv+linear"``,
      ``"conv+bn+linear"``... see :mod:`.groups`) detected on ``model``, or a list of
      :class:`LayerGroups`.
    - ``M``: explicit big-M values, one float for every layer or a mapping layer name -> float;
      else M = ``m_scale`` x the largest |entry| of each layer's groups in ``reference`` (a
      trained, unregularized model of the same architecture), or in ``model`` itself when no
      reference is given (its weights now, e.g. at the start of training).

    The term reads the weights of the model it is called with, so the same SPR serves a copy or
    the unwrapped model of a DDP run.
    """

    def __init__(self, model: nn.Module, lam: float, alpha: float, *,
                 reference: nn.Module | None = None, m_scale: float = 1.0,
                 groups: str | Sequence[LayerGroups] = "conv+bn",
                 M: float | Mapping[str, float] | None = None) -> None:
        check_spr_params(lam, alpha, m_scale)
        self.lam, self.alpha = float(lam), float(alpha)
        self.groups = find_groups(model, groups) if isinstance(groups, str) else list(groups)
        if not self.groups:
            raise PruningError(f"no pruning groups of kind {groups!r} in "
                               f"{type(model).__name__}")
        self.M = self._big_m(model, reference, m_scale, M)

    @classmethod
    def from_reference(cls, model: nn.Module, reference: nn.Module, lam: float, alpha: float,
                       **kw) -> "SPR":
        """SPR with M from a trained, unregularized ``reference`` model (the paper's way)."""
        return cls(model, lam, alpha, reference=reference, **kw)

    def _big_m(self, model: nn.Module, reference: nn.Module | None, m_scale: float,
               explicit: float | Mapping[str, float] | None) -> dict[str, float]:
        names = [g.layer for g in self.groups]
        if explicit is not None:
            if isinstance(explicit, Mapping):
                missing = [n for n in names if n not in explicit]
                extra = sorted(set(explicit) - set(names))
                if missing or extra:
                    raise PruningError(f"SPR M values must name exactly the grouped layers; "
                                       f"missing {missing}, unknown {extra}")
                return {n: _check_m(explicit[n], n) for n in names}
            return {n: _check_m(explicit, n) for n in names}
        source = reference if reference is not None else model
        values = {}
        with torch.no_grad():
            for g in self.groups:
                try:
                    rows = g.matrix(source)
                except AttributeError:
                    raise PruningError(f"reference model {type(source).__name__} has no layer "
                                       f"{g.layer!r} (or BatchNorm {g.bn!r})") from None
                if rows.shape != g.matrix(model).shape:
                    raise PruningError(f"layer {g.layer!r}: reference groups {tuple(rows.shape)}"
                                       f" differ from the model's {tuple(g.matrix(model).shape)}")
                values[g.layer] = _check_m(m_scale * float(rows.abs().max()), g.layer)
        return values

    def __call__(self, model: nn.Module) -> Tensor:
        total, count = None, 0
        for g in self.groups:
            rows = g.matrix(model)
            term = spr_values(rows, self.M[g.layer], self.alpha).sum() * rows.shape[1]
            total = term if total is None else total + term
            count += rows.numel()
        return self.lam * total / count

    def cases(self, model: nn.Module) -> dict[str, Tensor]:
        """Layer name -> the case (1, 2, 3) of each of its groups, for diagnostics."""
        with torch.no_grad():
            return {g.layer: spr_cases(g.matrix(model), self.M[g.layer], self.alpha)
                    for g in self.groups}
