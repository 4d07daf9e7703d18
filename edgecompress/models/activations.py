"""Activation choice shared by the zoo's models.

Binary-activation (W1A1) networks need a signed activation before each binarized layer: after a
ReLU every input is >= 0 and sign() maps all of them to +1, so ``hardtanh`` is the choice there
(as in BNN, Hubara et al. 2016).
"""

from __future__ import annotations

from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "hardtanh": nn.Hardtanh}


def make_activation(name: str, model: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"{model}: activation must be one of {sorted(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]()
