"""Pruning regularizers as trainer callbacks, selectable by name (recipes' ``regularizer:``).

``SPRRegularizer(lam, alpha, ...)`` adds the SPR term (:class:`~.spr.SPR`) to the training loss
at every step and logs it: ``spr`` (the epoch's mean of the term added to the loss) and
``spr_case1/2/3`` (the fraction of groups in each case of the closed form at the epoch's end).
M comes from ``M``, else from ``reference``, else from the model's own weights when training
starts; it is saved in the checkpoint, so a resumed run keeps the same M.
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
from .spr import SPR, check_m_values, check_spr_params

__all__ = ["SPRRegularizer", "create_regularizer", "regularizer_options",
           "available_regularizers", "register_regularizer"]

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


@register_regularizer("spr")
class SPRRegularizer(Callback):
    """Adds lambda * SPR (Cacciola et al., arXiv 2206.14056; formula in :mod:`.spr`) to the loss.

    Options as :class:`~.spr.SPR`: ``lam``, ``alpha``, ``reference`` (a trained unregularized
    model; in a recipe, the path of its checkpoint), ``m_scale``, ``groups``, ``M``. Without
    ``M`` and ``reference``, M is taken from the model's own weights when training starts (its
    initial weights in a run from scratch, its trained weights when fine-tuning a loaded
    model): documented, but the paper's choice is a reference.
    """

    def __init__(self, lam: float, alpha: float, reference: nn.Module | None = None,
                 m_scale: float = 1.0, groups: str | Sequence[LayerGroups] = "conv+bn",
                 M: float | Mapping[str, float] | None = None) -> None:
        check_spr_params(lam, alpha, m_scale)
        if isinstance(groups, str):
            parse_kind(groups)
        if M is not None:
            check_m_values(M)
        self.options = dict(lam=lam, alpha=alpha, reference=reference, m_scale=m_scale,
                            groups=groups, M=M)
        self.spr: SPR | None = None
        self._sum, self._steps, self.last = 0.0, 0, 0.0

    def on_fit_start(self, trainer: TrainerState) -> None:
        if self.spr is None:
            self.spr = SPR(trainer.model, **self.options)

    def on_epoch_start(self, trainer: TrainerState, epoch: int) -> None:
        self._sum, self._steps = 0.0, 0

    def extra_loss(self, trainer: TrainerState) -> Tensor | None:
        if self.spr is None:  # used outside Trainer.fit
            self.on_fit_start(trainer)
        term = self.spr(trainer.model)
        self.last = float(term.detach())
        self._sum += self.last
        self._steps += 1
        return term

    def on_epoch_end(self, trainer: TrainerState, epoch: int, metrics: dict[str, Any]) -> None:
        metrics["spr"] = self._sum / max(self._steps, 1)
        cases = torch.cat(list(self.spr.cases(trainer.model).values()))
        for k in (1, 2, 3):
            metrics[f"spr_case{k}"] = float((cases == k).float().mean())

    def state_dict(self) -> dict[str, Any]:
        return {"M": dict(self.spr.M)} if self.spr is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "M" in state:  # the M of the interrupted run, not one from the resumed weights
            self.options = {**self.options, "M": dict(state["M"]), "reference": None}
            self.spr = None
