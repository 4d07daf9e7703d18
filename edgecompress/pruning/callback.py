"""Pruning regularizers as trainer callbacks, selectable by name (recipes' ``regularizer:``).

One callback, :class:`PenaltyRegularizer`, adds a group penalty to the training loss at every
step and logs its epoch mean; each registered regularizer is that callback with its penalty:

- ``"spr"``, :class:`SPRRegularizer` (``lam``, ``alpha``, ...): the SPR term (:class:`~.spr.SPR`),
  logged as ``spr``, plus ``spr_case1/2/3`` (the fraction of groups in each case of the closed
  form at the epoch's end). M comes from ``M``, else from ``reference``, else from the model's
  own weights when training starts; it is saved in the checkpoint, so a resumed run keeps the
  same M.
- ``"group-lasso"``, :class:`GroupLassoRegularizer` (``lam``, ``groups``): the group-lasso
  baseline (:class:`~.lasso.GroupLasso`), logged as ``group_lasso``.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from ..registry import Registry
from ..train.callbacks import Callback
from ..train.state import TrainerState
from .groups import LayerGroups, parse_kind
from .lasso import GroupLasso
from .spr import SPR, check_lambda, check_m_values, check_spr_params

__all__ = ["PenaltyRegularizer", "SPRRegularizer", "GroupLassoRegularizer", "create_regularizer",
           "regularizer_options", "available_regularizers", "register_regularizer"]

# a penalty: called with the model, returns the differentiable loss term
Penalty = Callable[[nn.Module], Tensor]

_REGULARIZERS: Registry[Callable[..., Callback]] = Registry("regularizer")
register_regularizer = _REGULARIZERS.register


def available_regularizers() -> list[str]:
    return _REGULARIZERS.available()


def regularizer_options(name: str) -> list[str]:
    """The options regularizer ``name`` takes (keywords of its constructor)."""
    params = inspect.signature(_REGULARIZERS.get(name)).parameters
    return [p for p in params if p != "self"]


def create_regularizer(spec: str | Mapping[str, Any]) -> Callback:
    """A regularizer callback from ``"spr"`` or ``{"name": "spr", "lam": 1.0, ...}``."""
    spec = {"name": spec} if isinstance(spec, str) else dict(spec)
    factory = _REGULARIZERS.get(spec.pop("name"))
    return factory(**spec)


class PenaltyRegularizer(Callback):
    """Adds ``penalty(model)`` to the training loss at every step and logs the epoch's mean of
    it as ``metrics[self.metric]``. Subclasses say which penalty (:meth:`_build`, called with the
    model when training starts) and may log diagnostics (:meth:`_diagnostics`)."""

    metric: str

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.penalty: Penalty | None = None
        self._sum, self._steps, self.last = 0.0, 0, 0.0

    def _build(self, model: nn.Module) -> Penalty:
        raise NotImplementedError

    def _diagnostics(self, model: nn.Module) -> dict[str, float]:
        return {}

    def on_fit_start(self, trainer: TrainerState) -> None:
        if self.penalty is None:
            self.penalty = self._build(trainer.model)

    def on_epoch_start(self, trainer: TrainerState, epoch: int) -> None:
        self._sum, self._steps = 0.0, 0

    def extra_loss(self, trainer: TrainerState) -> Tensor | None:
        if self.penalty is None:  # used outside Trainer.fit
            self.on_fit_start(trainer)
        term = self.penalty(trainer.model)
        self.last = float(term.detach())
        self._sum += self.last
        self._steps += 1
        return term

    def on_epoch_end(self, trainer: TrainerState, epoch: int, metrics: dict[str, Any]) -> None:
        metrics[self.metric] = self._sum / max(self._steps, 1)
        if self.penalty is not None:
            metrics.update(self._diagnostics(trainer.model))


@register_regularizer("spr")
class SPRRegularizer(PenaltyRegularizer):
    """Adds lambda * SPR (Cacciola et al., arXiv 2206.14056; formula in :mod:`.spr`) to the loss.

    Options as :class:`~.spr.SPR`: ``lam``, ``alpha``, ``reference`` (a trained unregularized
    model; in a recipe, the path of its checkpoint), ``m_scale``, ``groups``, ``M``. Without
    ``M`` and ``reference``, M is taken from the model's own weights when training starts (its
    initial weights in a run from scratch, its trained weights when fine-tuning a loaded
    model): documented, but the paper's choice is a reference.
    """

    metric = "spr"

    def __init__(self, lam: float, alpha: float, reference: nn.Module | None = None,
                 m_scale: float = 1.0, groups: str | Sequence[LayerGroups] = "conv+bn",
                 M: float | Mapping[str, float] | None = None) -> None:
        check_spr_params(lam, alpha, m_scale)
        if isinstance(groups, str):
            parse_kind(groups)
        if M is not None:
            check_m_values(M)
        super().__init__(lam=lam, alpha=alpha, reference=reference, m_scale=m_scale,
                         groups=groups, M=M)

    @property
    def spr(self) -> SPR | None:
        """The SPR term (with its M), once training has started."""
        return self.penalty

    def _build(self, model: nn.Module) -> SPR:
        return SPR(model, **self.options)

    def _diagnostics(self, model: nn.Module) -> dict[str, float]:
        cases = torch.cat(list(self.spr.cases(model).values()))
        return {f"spr_case{k}": float((cases == k).float().mean()) for k in (1, 2, 3)}

    def state_dict(self) -> dict[str, Any]:
        return {"M": dict(self.spr.M)} if self.spr is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "M" in state:  # the M of the interrupted run, not one from the resumed weights
            self.options = {**self.options, "M": dict(state["M"]), "reference": None}
            self.penalty = None


@register_regularizer("group-lasso")
class GroupLassoRegularizer(PenaltyRegularizer):
    """Adds the group-lasso term lambda * (sum_j sqrt(n_j) ||w_j||_2) / (sum_j sqrt(n_j)) (Yuan &
    Lin 2006; Wen et al. 2016; formula and gradient in :mod:`.lasso`) to the loss, over the
    groups of ``groups`` (as SPR's: ``"conv+bn"`` by default)."""

    metric = "group_lasso"

    def __init__(self, lam: float, groups: str | Sequence[LayerGroups] = "conv+bn") -> None:
        check_lambda(lam, "group lasso")
        if isinstance(groups, str):
            parse_kind(groups)
        super().__init__(lam=lam, groups=groups)

    def _build(self, model: nn.Module) -> GroupLasso:
        return GroupLasso(model, **self.options)
