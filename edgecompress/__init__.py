"""edgecompress: compress neural networks for edge devices and run them fast.

>>> import edgecompress
>>> net = edgecompress.models.create("mlp", num_classes=10, activation="hardtanh")
>>> binary = edgecompress.convert(net, "bnn", mode="w1a1")  # W1A1 wants signed activations
>>> print(edgecompress.summary(binary, (1, 28, 28)))  # doctest: +SKIP
"""

from . import data, deploy, kernels, layers, models, quantizers
from .analysis import summary
from . import convert  # the package is callable: edgecompress.convert(model, "bnn", ...)
from .convert import available_methods, register_method
from . import pruning  # registers the pruning methods ("l1-prune")

__version__ = "0.1.0"

__all__ = [
    "data", "deploy", "kernels", "layers", "models", "pruning", "quantizers", "summary", "convert",
    "available_methods", "register_method", "__version__",
]
