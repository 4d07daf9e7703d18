"""Deployment: freeze a trained compressed model into packed layers (binary weights 1 bit each,
run by the C kernels; shift weights as their value codes; uniform n-bit weights as their b-bit
integer codes), save / load it as one
self-describing file (safetensors tensors plus the model's torch.fx graph and layers as JSON;
no model zoo, no pickle), and export float and training-form models to ONNX.

>>> frozen = edgecompress.deploy.freeze(trained)          # doctest: +SKIP
>>> edgecompress.deploy.save(frozen, "model.safetensors")   # doctest: +SKIP
>>> same = edgecompress.deploy.load("model.safetensors")    # doctest: +SKIP

A file may also carry :class:`ModelMetadata` (``save(frozen, path, metadata=...)``, read back
with :func:`load_metadata`): the dataset, input preprocessing and class names that
``edgecompress predict`` needs; ``edgecompress freeze CHECKPOINT`` writes it.

Modules: ``packed`` (the packed-layer protocol and the registry from training-layer class to
packed class: the extension point), ``binary``, ``shift``, ``uniform``, ``tensor_train`` and
``transformer`` and ``lstm`` (the built-in packed layers; ``lstm``: frozen LSTMs whose gate
maps are packed as standalone layers; ``freeze(model, core_bits=8)`` stores tensor-train
cores in 8 bits; ``transformer``: BinaryViT's binary linears and binary attention),
``float_conv`` (the float convolution freeze gives plain ``nn.Conv2d`` layers the direct kernel
takes), ``max_pool`` (the max-pool freeze gives plain ``nn.MaxPool2d`` layers), ``distance`` (EuclidNet's and AdderNet's distance layers; the adder ones run the direct
kernel's L1 form),
``freeze``, ``structure`` (the JSON encoding of graphs, layers and values; the function
allowlist), ``fileformat`` (save / load), ``metadata`` (the file's optional metadata section),
``predict`` (top-k classes of inputs), ``onnx``, ``benchmark`` (timings against float;
:func:`fastest_layout`: a frozen model in the faster of its memory layouts on this CPU) and
``profile`` (the per-part time breakdown of a frozen model).
"""

from .benchmark import fastest_layout
from .binary import PackedBinaryConv2d, PackedBinaryLinear
from .distance import PackedAdderConv2d, PackedAdderLinear, PackedEuclidConv2d, PackedEuclidLinear
from .fileformat import load, load_metadata, save
from .float_conv import PackedFloatConv2d
from .max_pool import PackedMaxPool2d
from .freeze import freeze
from .lstm import PackedGateLSTM
from .metadata import ModelMetadata
from .onnx import export_onnx
from .packed import PackedLayer, register_packed
from .shift import PackedShiftConv2d, PackedShiftLinear
from .transformer import (PackedAttentionCore, PackedBinaryLinearBlock, PackedCenteredBinaryLinear,
                          PackedPoolingBranches)
from .structure import register_function
from .tensor_train import PackedTTLinear, PackedTTLSTM
from .uniform import (PackedUniformAdderConv2d, PackedUniformAdderLinear, PackedUniformConv2d,
                      PackedUniformEuclidConv2d, PackedUniformEuclidLinear, PackedUniformLinear)

__all__ = ["freeze", "fastest_layout", "save", "load", "load_metadata", "ModelMetadata",
           "export_onnx", "PackedLayer", "register_packed", "register_function",
           "PackedBinaryLinear",
           "PackedBinaryConv2d", "PackedFloatConv2d", "PackedMaxPool2d", "PackedShiftLinear", "PackedShiftConv2d",
           "PackedTTLinear", "PackedTTLSTM", "PackedGateLSTM", "PackedUniformLinear", "PackedUniformConv2d",
           "PackedUniformEuclidLinear", "PackedUniformEuclidConv2d", "PackedUniformAdderLinear",
           "PackedUniformAdderConv2d", "PackedCenteredBinaryLinear",
           "PackedAttentionCore", "PackedBinaryLinearBlock", "PackedPoolingBranches",
           "PackedEuclidLinear", "PackedEuclidConv2d", "PackedAdderLinear", "PackedAdderConv2d"]
