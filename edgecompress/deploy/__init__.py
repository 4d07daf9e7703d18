"""Deployment: freeze a trained binarized model into packed 1-bit layers that run on the C
kernels, and save / load it as safetensors plus JSON metadata; export float and training-form
models to ONNX.

>>> frozen = edgecompress.deploy.freeze(trained)          # doctest: +SKIP
>>> edgecompress.deploy.save(frozen, "model.safetensors")   # doctest: +SKIP
>>> same = edgecompress.deploy.load("model.safetensors")    # doctest: +SKIP
"""

from .fileformat import load, save
from .freeze import freeze
from .modules import (PackedBinaryConv2d, PackedBinaryLinear, PackedShiftConv2d,
                      PackedShiftLinear)
from .onnx import export_onnx

__all__ = ["freeze", "save", "load", "export_onnx", "PackedBinaryLinear", "PackedBinaryConv2d",
           "PackedShiftLinear", "PackedShiftConv2d"]
