"""Tensor-train method "tt" (Murua et al. 2020, arXiv 2006.05442): :class:`TTConverter`.

nn.Linear becomes :class:`~edgecompress.layers.TTLinear` and nn.LSTM becomes
:class:`~edgecompress.layers.TTLSTM`, each from the layer's trained weights by TT-SVD truncated to
``ranks``, so a trained dense model converts and then fine-tunes. With the default first/last
policy the first and last Linear layers stay dense: in a language model (embedding, LSTM,
decoder) that converts the LSTM only, leaving the embedding (not a Linear) and the decoder.
A Linear whose weight is shared with another layer (a decoder tied to the embedding) is refused:
its tensor train would silently untie them.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..errors import ConversionError
from ..layers import TTLSTM, TTLinear
from ..layers.tensor_train import LAYOUTS
from ..layers.tensor_train.lstm import WHICH
from .engine import ConversionReport, Converter, Policy, register_method


@register_method("tt")
class TTConverter(Converter):
    """Options: ``ranks`` (an int, capped at each bond's TT-rank bound, or a list per bond),
    ``mode`` ("mps" or "mpo"), ``factorization`` (None: automatic per layer; else (factors of
    the layer's input size, factors of its output size: out_features for a Linear, hidden_size
    for an LSTM), so it fits only layers of those sizes) and ``which`` (an LSTM's matrices made
    TT: "both", "input" or "hidden")."""

    supported_types = (nn.Linear, nn.LSTM)

    def __init__(self, *, ranks: int | list[int], mode: str = "mps", factorization: Any = None,
                 which: str = "both") -> None:
        if not isinstance(mode, str):
            raise ConversionError(f"tt: mode must be one of {', '.join(LAYOUTS)}, got {mode!r}")
        LAYOUTS.get(mode)  # unknown modes fail here, before any layer is converted
        if which not in WHICH:
            raise ConversionError(f"tt: which must be one of {WHICH}, got {which!r}")
        self.options = dict(ranks=ranks, mode=mode, factorization=factorization)
        self.which = which
        self._shared: dict[int, list[str]] = {}

    def _apply(self, model: nn.Module, policy: Policy, report: ConversionReport) -> nn.Module:
        owners: dict[int, list[str]] = {}
        for name, module in model.named_modules(remove_duplicate=False):
            for p in module.parameters(recurse=False):
                owners.setdefault(id(p), []).append(name)
        self._shared = {k: names for k, names in owners.items() if len(names) > 1}
        return super()._apply(model, policy, report)

    def convert_layer(self, module: nn.Module) -> nn.Module:
        if isinstance(module, nn.LSTM):
            return TTLSTM.from_lstm(module, which=self.which, **self.options)
        if id(module.weight) in self._shared:
            raise ConversionError(
                f"tt: the weight of Linear({module.in_features} -> {module.out_features}) is "
                f"shared by {', '.join(self._shared[id(module.weight)])} (tied weights): a "
                f"tensor train would untie them; exclude it (exclude=[...] or "
                f"keep_first_last=True)")
        return TTLinear.from_linear(module, **self.options)
