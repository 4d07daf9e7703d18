"""The binarization methods as PC++ pairs (F = P o B, backward B'): BinaryConnect, BNN, BNN+,
BinaryRelax, ProxQuant, ProxConnect, and BNN++ (Lu et al., NeurIPS 2023, arXiv 2402.17710).

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

Our reading (where the PC++ paper's exact choice could not be checked), each an option: the ProxConnect map P^mu (pc, bnn++) and
bnn++'s composition P^mu o SignSwish — replace P or B by name with ``prox=`` / ``backward=``
(``convert(net, "bnn++", prox="binaryrelax")``). The default schedules are our reading too
(the papers schedule per iteration with constants tuned for long ImageNet/CIFAR runs): each reaches (or, for BinaryRelax, nearly reaches) sign at the
last epoch, whatever the run length. Pass ``lam=``, ``mu=`` or ``beta=`` as a number (constant),
a :class:`Schedule` or a mapping such as ``{"kind": "linear", "start": 0, "end": 1.5}``.
After training, every method deploys ``sign(theta)``.
"""

from __future__ import annotations

from typing import Any, Callable

from .base import Elementwise, QuantizerPair
from .elementary import Clip, Identity, Sign, SignSwish
from .proximal import BinaryRelaxProx, ProxConnectProx, ProxQuantProx
from .registry import elementwise
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


def _default_schedule(owner: Elementwise, param: str) -> Schedule | None:
    """The default schedule of ``param`` of a quantizer like ``owner``: the one of the first
    method in the table that uses that quantizer class with that parameter."""
    for make_prox, make_backward, defaults in _TABLE.values():
        if param in defaults and type(owner) in (make_prox, make_backward):
            return defaults[param]
    return None


def _quantizer(spec: "str | Elementwise") -> Elementwise:
    return elementwise(spec) if isinstance(spec, str) else spec


def method_pair(name: str, *, prox: "str | Elementwise | None" = None,
                backward: "str | Elementwise | None" = None, **params: Any) -> QuantizerPair:
    """The quantizer pair of binarization method ``name`` (see the table above).

    ``prox`` / ``backward`` replace the method's P or B by another registered quantizer (a name
    from :func:`edgecompress.quantizers.available` or an object): the "our reading" choices of
    the spec are options, e.g. ``method_pair("bnn++", prox="binaryrelax")`` or
    ``method_pair("pc", prox="proxquant")``. Scheduled parameters of a replacement get the
    default schedule its own method uses (ProxQuant's lam: linear 0 -> 1, ...).
    """
    name = name.lower()
    if name not in _TABLE:
        raise ValueError(f"unknown binarization method {name!r}; available: {', '.join(METHODS)}")
    make_prox, make_backward, defaults = _TABLE[name]
    p = make_prox() if prox is None else _quantizer(prox)
    b = make_backward() if backward is None else _quantizer(backward)
    owned = {param: owner for owner in (b, p) for param in owner.params}  # P wins a shared name
    unknown = set(params) - set(owned)
    if unknown:
        raise ValueError(f"method {name!r} has no parameter(s) {sorted(unknown)}; it has "
                         f"{sorted(owned) or 'none'}")
    for param, owner in owned.items():
        default = defaults.get(param) if (prox is None and backward is None) else None
        default = default or _default_schedule(owner, param)
        if param not in params and default is None:
            continue  # the quantizer's own constructor value
        schedule = Schedule.from_value(params.get(param, default))
        owner.set_param(param, schedule.start)  # the value before training steps it
        if schedule.kind != "constant":
            owner.schedules[param] = schedule
    label = name if prox is None and backward is None else (
        f"{name} (P = {type(p).__name__}, B = {type(b).__name__})")
    return QuantizerPair(p, b, label)
