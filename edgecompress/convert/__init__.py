"""Turn a float model into a compressed one: ``edgecompress.convert(model, method, **options)``.

- :mod:`.engine`: the two kinds of registered method (:class:`Converter` for one layer at a
  time, :class:`GraphTransform` for whole-model rewrites), :func:`register_method`,
  :func:`convert` (names, objects, mappings, lists of methods applied in order), the
  include/exclude/first-last policy and the :class:`ConversionReport`;
- :mod:`.nonnegative`: the checks for binary layers whose inputs are never negative and for
  unsigned quantized inputs that are negative;
- one module per method family, each registering its methods when imported: :mod:`.binary`
  (BinaryConnect family, ProxConnect++, BNN++), :mod:`.euclid` (EuclidNet), :mod:`.adder`
  (AdderNet, the EuclidNet baseline), :mod:`.shift` (DeepShift, S3, DenseShift),
  :mod:`.tensor_train` (tt: MPS / MPO tensor trains for Linear and LSTM), :mod:`.uniform`
  (uniform n-bit weights and activations, Euclid layers included).
  A new family is one new module here, imported below.

The package is callable: ``edgecompress.convert(model, "bnn", mode="w1a1")`` calls
:func:`convert`, and ``edgecompress.convert.binary`` / ``import edgecompress.convert.shift`` still
reach the modules (a function bound over the package's name would hide them).
"""

import inspect as _inspect
import sys as _sys
import types as _types

from . import adder, binary, euclid, shift, tensor_train, uniform  # noqa: F401  (register methods)
from .adder import AdderConverter
from .binary import BinaryConverter
from .engine import (POLICY_OPTIONS, ConversionReport, Converter, GraphTransform, Method,
                     available_methods, convert, method_options, register_method)
from .euclid import EuclidConverter
from .shift import ShiftConverter
from .tensor_train import TTConverter
from .uniform import UniformConverter

__all__ = ["convert", "register_method", "available_methods", "method_options", "Converter",
           "GraphTransform", "Method", "ConversionReport", "AdderConverter", "BinaryConverter",
           "EuclidConverter", "ShiftConverter", "TTConverter", "UniformConverter",
           "POLICY_OPTIONS"]


class _CallablePackage(_types.ModuleType):
    """This package, callable as :func:`convert` (with its signature, for help and IDEs)."""

    __signature__ = _inspect.signature(convert)

    def __call__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return convert(*args, **kwargs)


_sys.modules[__name__].__class__ = _CallablePackage
