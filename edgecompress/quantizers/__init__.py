"""Quantizers, by name: elementwise maps with their derivatives, and the PC++ pairs built from
them (F = P o B forward, B' backward).

>>> from edgecompress import quantizers
>>> quantizers.get("signswish", beta=5.0)
SignSwish(beta=5)
>>> quantizers.pair("sign", "clip")          # BNN: F = sign o clip = sign, B' = 1{|x| <= 1}
>>> quantizers.method_pair("bnn++")          # a binarization method, see quantizers.methods
>>> quantizers.get("uniform-weight", bits=4)  # n-bit uniform, see quantizers.uniform
"""

from __future__ import annotations

from .base import Elementwise, QuantizerPair, sign
from .elementary import ApproxSign, Clip, Identity, Sign, SignSwish
from .methods import METHODS, method_pair, method_parameters
from .proximal import BinaryRelaxProx, ProxConnectProx, ProxQuantProx
from .registry import available, get, pair, register
from .schedule import Schedule
from .uniform import UniformActivationQuantizer, UniformWeightQuantizer, calibrate

__all__ = [
    "Elementwise", "QuantizerPair", "Schedule", "sign", "get", "available", "register", "pair",
    "method_pair", "method_parameters", "METHODS", "Sign", "Identity", "Clip", "SignSwish",
    "ApproxSign", "BinaryRelaxProx", "ProxQuantProx", "ProxConnectProx",
    "UniformWeightQuantizer", "UniformActivationQuantizer", "calibrate",
]
