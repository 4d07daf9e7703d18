"""The binarization methods of specs/binarization.md as PC++ pairs (F = P o B, backward B').

| method      | P (prox)               | B (backward) | scheduled                         |
|-------------|------------------------|--------------|-----------------------------------|
| bc          | sign                   | identity     | -                                 |
| bnn         | sign                   | clip         | -                                 |
| bnn+        | sign                   | SignSwish    | beta (default constant 5)         |
| binaryrelax | BinaryRelax(lam)       | identity     | lam: geometric 1 -> 1000          |
| proxquant   | ProxQuant(lam)         | identity     | lam: linear 0 -> 1                |
| pc          | ProxConnect(mu)        | identity     | mu: linear 0 -> 1                 |
| bnn++       | ProxConnect(mu)        | SignSwish    | mu: linear 0 -> 1, beta 5         |

sign o clip = sign o SignSwish = sign, so the sign-forward methods are F = P o B with P = sign.
The default schedules are our reading (the papers schedule per iteration with constants tuned
for long ImageNet/CIFAR runs): each reaches (or, for BinaryRelax, nearly reaches) sign at the
last epoch, whatever the run length. Pass ``lam=``, ``mu=`` or ``beta=`` as a number (constant),
a :class:`Schedule` or a mapping such as ``{"kind": "linear", "start": 0, "end": 1.5}``.
After training, every method deploys ``sign(theta)``.
"""

from __future__ import annotations

from typing import Any, Callable

from .base import Elementwise, QuantizerPair
from .elementary import Clip, Identity, Sign, SignSwish
from .proximal import BinaryRelaxProx, ProxConnectProx, ProxQuantProx
from .schedule import Schedule

# method -> (prox factory, backward factory, {scheduled parameter: default schedule})
_TABLE: dict[str, tuple[Callable[[], Elementwise], Callable[[], Elementwise], dict[str, Schedule]]] = {
    "bc": (Sign, Identity, {}),
    "bnn": (Sign, Clip, {}),
    "bnn+": (Sign, SignSwish, {"beta": Schedule("constant", 5.0)}),
    "binaryrelax": (BinaryRelaxProx, Identity, {"lam": Schedule("geometric", 1.0, 1000.0)}),
    "proxquant": (ProxQuantProx, Identity, {"lam": Schedule("linear", 0.0, 1.0)}),
    "pc": (ProxConnectProx, Identity, {"mu": Schedule("linear", 0.0, 1.0)}),
    "bnn++": (ProxConnectProx, SignSwish, {"mu": Schedule("linear", 0.0, 1.0),
                                           "beta": Schedule("constant", 5.0)}),
}

METHODS = tuple(_TABLE)


def method_parameters(name: str) -> dict[str, Schedule]:
    """The scheduled parameters of method ``name`` and their default schedules."""
    return dict(_TABLE[name][2])


def method_pair(name: str, **params: Any) -> QuantizerPair:
    """The quantizer pair of binarization method ``name`` (see the table above)."""
    if name not in _TABLE:
        raise ValueError(f"unknown binarization method {name!r}; available: {', '.join(METHODS)}")
    make_prox, make_backward, defaults = _TABLE[name]
    unknown = set(params) - set(defaults)
    if unknown:
        raise ValueError(f"method {name!r} has no parameter(s) {sorted(unknown)}; it has "
                         f"{sorted(defaults) or 'none'}")
    prox, backward = make_prox(), make_backward()
    for param, default in defaults.items():
        schedule = Schedule.from_value(params.get(param, default))
        owner = prox if param in prox.params else backward
        owner.set_param(param, schedule.value(0, 1))
        if schedule.kind != "constant":
            owner.schedules[param] = schedule
    return QuantizerPair(prox, backward, name)
