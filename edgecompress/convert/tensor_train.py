"""Tensor-train method "tt" (Murua et al. 2020, arXiv 2006.05442): :class:`TTConverter`.

nn.Linear becomes :class:`~edgecompress.layers.TTLinear` and nn.LSTM becomes
:class:`~edgecompress.layers.TTLSTM`, each from the layer's trained weights by TT-SVD truncated to
``ranks``, so a trained dense model converts and then fine-tunes. With the default first/last
policy the first and last Linear layers stay dense: in a language model (embedding, LSTM,
decoder) that converts the LSTM only, leaving the embedding (not a Linear) and the decoder.
A Linear whose weight is shared with another layer (a decoder tied to the embedding) is refused:
its tensor train would silently untie them.

To train a TT model from scratch, use ``init="random"`` (variance-matched random cores): the
low-rank TT-SVD of a freshly initialised random weight keeps only a few percent of its norm
(rank 4 of an 800 x 200 LSTM matrix: ~6 %), and cores that small barely receive a gradient (the
TT-LSTM then learns little more than the word frequencies). A TT-SVD that keeps less than
:data:`WEAK_KEPT_NORM` of a layer's norm is reported with a :class:`WeakConversionWarning`.
"""

from __future__ import annotations

import warnings
from typing import Any

from torch import nn

from ..errors import ConversionError, WeakConversionWarning
from ..layers import TTLSTM, TTLinear
from ..layers.tensor_train import LAYOUTS
from ..layers.tensor_train.linear import check_init
from ..layers.tensor_train.lstm import WHICH
from .engine import ConversionReport, Converter, Policy, register_method


@register_method("tt")
class TTConverter(Converter):
    """Options: ``ranks`` (an int, capped at each bond's TT-rank bound, or a list per bond),
    ``mode`` ("mps" or "mpo"), ``factorization`` (None: automatic per layer; else (factors of
    the layer's input size, factors of its output size: out_features for a Linear, hidden_size
    for an LSTM), so it fits only layers of those sizes), ``which`` (an LSTM's matrices made
    TT: "both", "input" or "hidden") and ``init`` ("svd": the TT-SVD of the layer's weights, to
    convert a trained model; "random": variance-matched random cores, to train from scratch)."""

    supported_types = (nn.Linear, nn.LSTM)

    def __init__(self, *, ranks: int | list[int], mode: str = "mps", factorization: Any = None,
                 which: str = "both", init: str = "svd") -> None:
        if not isinstance(mode, str):
            raise ConversionError(f"tt: mode must be one of {', '.join(LAYOUTS)}, got {mode!r}")
        LAYOUTS.get(mode)  # unknown modes fail here, before any layer is converted
        if which not in WHICH:
            raise ConversionError(f"tt: which must be one of {WHICH}, got {which!r}")
        check_init(init)
        self.options = dict(ranks=ranks, mode=mode, factorization=factorization, init=init)
        self.which = which
        self._shared: dict[int, list[str]] = {}
        self._names: dict[int, str] = {}
        self._report: ConversionReport | None = None

    def _apply(self, model: nn.Module, policy: Policy, report: ConversionReport) -> nn.Module:
        owners: dict[int, list[str]] = {}
        for name, module in model.named_modules(remove_duplicate=False):
            self._names.setdefault(id(module), name)
            for p in module.parameters(recurse=False):
                owners.setdefault(id(p), []).append(name)
        self._shared = {k: names for k, names in owners.items() if len(names) > 1}
        self._report = report
        try:
            return super()._apply(model, policy, report)
        finally:
            self._names, self._report = {}, None

    def convert_layer(self, module: nn.Module) -> nn.Module:
        if isinstance(module, nn.LSTM):
            new: nn.Module = TTLSTM.from_lstm(module, which=self.which, **self.options)
            pairs = [(getattr(new, kind)[layer], getattr(module, f"weight_{kind}_l{layer}"))
                     for layer in range(module.num_layers) for kind in ("ih", "hh")]
        else:
            if id(module.weight) in self._shared:
                raise ConversionError(
                    f"tt: the weight of Linear({module.in_features} -> {module.out_features}) "
                    f"is shared by {', '.join(self._shared[id(module.weight)])} (tied "
                    f"weights): a tensor train would untie them; exclude it (exclude=[...] or "
                    f"keep_first_last=True)")
            new = TTLinear.from_linear(module, **self.options)
            pairs = [(new, module.weight)]
        if self.options["init"] == "svd":
            kept = min(tt.kept_norm(w) for tt, w in pairs if isinstance(tt, TTLinear))
            if kept < WEAK_KEPT_NORM:
                self._warn(module, kept)
        return new

    def _warn(self, module: nn.Module, kept: float) -> None:
        name = self._names.get(id(module), type(module).__name__)
        message = (
            f"tt: {name}: the TT-SVD at ranks {self.options['ranks']} keeps only {kept:.0%} of "
            f"the weight's Frobenius norm. If these weights are an untrained initialisation "
            f"(training from scratch), use init='random' (variance-matched cores): cores this "
            f"small barely receive a gradient. Trained weights: raise the ranks or fine-tune "
            f"longer")
        if self._report is not None:
            self._report.warnings.append(message)
        warnings.warn(message, WeakConversionWarning, stacklevel=8)


#: a TT-SVD keeping less than this fraction of a layer's Frobenius norm is warned about
WEAK_KEPT_NORM = 0.25
