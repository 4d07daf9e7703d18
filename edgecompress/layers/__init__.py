"""Compressed layers (nn.Modules) that can be used on their own, without the trainer or CLI."""

from .adder import AdderConv2d, AdderLinear
from .base import CompressedLayer
from .binary import BinaryConv2d, BinaryLinear, harden
from .euclid import EuclidConv2d, EuclidLinear
from .lstm import GateLSTM
from .shift import ActivationQuantizer, ShiftConv2d, ShiftLinear
from .transformer import (AttentionCore, BinaryLinearBlock, CenteredBinaryLinear,
                          LearnableThresholdSign, RPReLU, ZeroOrAlpha)
from .tensor_train import TTLSTM, TTLinear, tt_flops, tt_params
from .uniform import (UniformAdderConv2d, UniformAdderLinear, UniformConv2d, UniformEuclidConv2d,
                      UniformEuclidLinear, UniformLinear)

__all__ = ["CompressedLayer", "BinaryLinear", "BinaryConv2d", "harden", "EuclidLinear",
           "EuclidConv2d", "AdderLinear", "AdderConv2d", "ShiftLinear", "ShiftConv2d",
           "ActivationQuantizer", "GateLSTM", "TTLinear", "TTLSTM", "tt_params", "tt_flops",
           "LearnableThresholdSign", "CenteredBinaryLinear", "RPReLU", "BinaryLinearBlock",
           "ZeroOrAlpha", "AttentionCore", "UniformLinear", "UniformConv2d",
           "UniformEuclidLinear", "UniformEuclidConv2d", "UniformAdderLinear",
           "UniformAdderConv2d"]
