"""Compressed layers (nn.Modules) that can be used on their own, without the trainer or CLI."""

from .base import CompressedLayer
from .binary import BinaryConv2d, BinaryLinear, harden
from .shift import ActivationQuantizer, ShiftConv2d, ShiftLinear

__all__ = ["CompressedLayer", "BinaryLinear", "BinaryConv2d", "harden", "ShiftLinear",
           "ShiftConv2d", "ActivationQuantizer"]
