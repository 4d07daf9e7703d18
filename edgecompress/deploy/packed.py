"""The packed-layer protocol and the registry from training-layer class to packed class.

A packed layer is the inference form of a trained compressed layer. Its class declares the
training classes it packs (``@register_packed(BinaryLinear)``, as brevitas's export handlers
declare the layer they handle); :func:`~edgecompress.deploy.freeze`, ``deploy.save`` /
``deploy.load`` and the ONNX guard find it through that declaration, so a new layer family is
one new module (``deploy/binary.py`` and ``deploy/shift.py`` are the built-in ones)::

    @register_packed(MyTrainingLinear)
    class PackedMyLinear(PackedLayer):
        @classmethod
        def from_trained(cls, layer): ...        # build from the (hardened) training layer
        def config(self): ...                    # JSON constructor keywords, written to the file
        def forward(self, x): ...

What the protocol asks (:class:`PackedLayer` has a default for every part but the first two):

- ``from_trained(layer)`` and ``config()``; ``from_config(config)`` rebuilds an empty layer of
  the same shapes (default ``cls(**config)``), whose ``state_dict`` the file then fills;
- ``fold_affine(s, t)``: fold ``y -> s * y + t`` per output channel (a BatchNorm) into the
  layer (default: the ``scale`` and ``bias`` buffers of a layer whose output is
  ``scale * (...) + bias``); a class with ``folds_affine = False`` keeps its BatchNorm;
- ``encode_tensor(name, t)`` / ``decode_tensor(name, stored)``: the compact on-disk form of a
  ``state_dict`` entry (default: as it is; the binary layers write a 1-bit stream, the shift
  layers a ``bits``-bit stream, with :func:`to_bitstream` / :func:`from_bitstream`);
- ``prepare()``: derive what the forward pass needs from the state (``PackedLayer.__init__``
  runs it after every ``load_state_dict``);
- ``freeze_options``: the names of keyword options of ``freeze`` that ``from_trained``
  accepts (default none), e.g. ``core_bits`` of the tensor-train layers;
- capabilities that ``freeze``'s W1A1 fusions ask for (``signs_layout``, ``fuses_residual``)
  and the ONNX guard reads (``onnx_exportable``).
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar, TypeVar

import numpy as np
import torch
from torch import Tensor, nn

from ..layers.base import CompressedLayer
from ..layers.distance import explicit_padding
from ..registry import Registry

__all__ = ["PackedLayer", "PackedLinearShape", "PackedConv2dShape", "register_packed",
           "packed_class_for", "pack_layer", "packed_class", "registered_packed_classes",
           "to_bitstream", "from_bitstream"]


class PackedLayer(CompressedLayer):
    """Base class of packed (inference) layers; see the module docstring for the protocol."""

    #: the training-layer classes this class packs (set by :func:`register_packed`)
    trained_types: ClassVar[tuple[type[nn.Module], ...]] = ()
    #: the keyword options of :func:`~edgecompress.deploy.freeze` that ``from_trained`` takes
    #: (e.g. the tensor-train layers' ``core_bits``); freeze passes each class only its own
    freeze_options: ClassVar[tuple[str, ...]] = ()
    #: whether torch.onnx can export the layer (packed kernels have no ONNX operators)
    onnx_exportable: ClassVar[bool] = False
    #: whether freeze may fold a following BatchNorm into the layer (:meth:`fold_affine`);
    #: False for the distance layers, which keep theirs as a module
    folds_affine: ClassVar[bool] = True
    #: set by freeze on a layer whose ``signs_layout`` is not None when only the signs of its
    #: output are used (by the next layers of the same layout): forward then returns them packed
    emit_signs: bool = False
    #: set by freeze on a layer that ``fuses_residual``: (lo, hi) of the clamp that follows
    #: ``layer(x) + residual`` and is computed with it, or None
    fused_clamp: tuple[float, float] | None = None

    #: attributes that hold this process's kernel plans (dicts of objects with ctypes pointers
    #: into its memory): a pickled or deep-copied layer gets them empty and makes its own at its
    #: first call
    process_local: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        super().__init__()
        self.register_load_state_dict_post_hook(_prepare_after_load)

    def __getstate__(self) -> dict[str, Any]:
        """Pickle and ``copy.deepcopy`` state: ``__dict__`` with the :attr:`process_local`
        plans emptied."""
        state = self.__dict__.copy()
        for name in self.process_local:
            if name in state:
                state[name] = {}
        return state

    @classmethod
    def from_trained(cls, layer: nn.Module, **options: Any) -> "PackedLayer":
        """The packed form of a (hardened, eval-mode) training layer of ``trained_types``;
        ``options``: the freeze options named in :attr:`freeze_options`."""
        raise NotImplementedError(f"{cls.__name__} does not implement from_trained")

    def config(self) -> dict[str, Any]:
        """Constructor keywords (ints, floats, bools, str, None, tuples, lists) that rebuild
        this layer with the same ``state_dict`` keys and shapes."""
        raise NotImplementedError(f"{type(self).__name__} does not implement config")

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "PackedLayer":
        """An empty layer from :meth:`config`'s keywords; load fills its ``state_dict``."""
        return cls(**config)

    def prepare(self) -> None:
        """Derive what the forward pass needs from the state (after freezing or loading)."""

    def fold_affine(self, s: Tensor, t: Tensor) -> None:
        """Fold ``y -> s * y + t`` (one factor and offset per output channel, e.g. a BatchNorm)
        into the layer. Default, for an output ``scale * (...) + bias`` with optional ``scale``
        and ``bias`` buffers: scale <- scale * s, bias <- bias * s + t."""
        with torch.no_grad():
            scale = self.scale if self.scale is not None else torch.ones_like(s)
            bias = self.bias if self.bias is not None else torch.zeros_like(s)
            self.scale = (scale * s).clone()
            self.bias = (bias * s + t).clone()
        self.prepare()

    def encode_tensor(self, name: str, value: Tensor) -> Tensor:
        """The form written to the file of ``state_dict`` entry ``name`` (relative to the
        layer); the default writes it as it is."""
        return value

    def decode_tensor(self, name: str, stored: Tensor) -> Tensor:
        """The ``state_dict`` entry ``name`` from its stored form (inverse of
        :meth:`encode_tensor`). A stored tensor of the wrong size or values raises ValueError
        saying what it holds and what was expected ("has 12 uint8 values, expected 16 ...")."""
        return stored

    @property
    def signs_layout(self) -> str | None:
        """The layout of packed signs this layer reads as input and emits as output
        (``emit_signs``), e.g. "rows" or "pixels"; None if it cannot (the default)."""
        return None

    @property
    def fuses_residual(self) -> bool:
        """Whether ``forward(x, residual)`` adds ``residual`` to the output and applies
        ``fused_clamp`` in one pass (freeze then rewrites ``act(layer(x) + r)`` into it)."""
        return False


def _prepare_after_load(module: PackedLayer, incompatible_keys: object) -> None:
    """The load_state_dict hook of every packed layer (a module-level function, not a lambda,
    so that a model holding packed layers pickles with ``torch.save``)."""
    module.prepare()


class _PackedShape:
    """``from_trained`` and ``config`` for a packed layer whose constructor takes the trained
    layer's shape (:attr:`SHAPE`, read from the trained layer and from the packed one alike)
    followed by its family's keywords. The family supplies ``_options(layer)`` (its keywords
    from the trained layer), ``_fill_from(layer)`` (copy the trained tensors) and ``_config()``
    (its keywords as stored)."""

    SHAPE: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_trained(cls, layer: nn.Module) -> "PackedLayer":
        new = cls(**cls._shape_of(layer),  # type: ignore[call-arg]
                  **cls._options(layer))  # type: ignore[attr-defined]
        new._fill_from(layer)  # type: ignore[attr-defined]
        return new  # type: ignore[return-value]

    @classmethod
    def _shape_of(cls, layer: nn.Module) -> dict[str, Any]:
        """The :attr:`SHAPE` keywords of the trained layer."""
        return {k: getattr(layer, k) for k in cls.SHAPE}

    def config(self) -> dict[str, Any]:
        return {**{k: getattr(self, k) for k in self.SHAPE},
                **self._config()}  # type: ignore[attr-defined]


class PackedLinearShape(_PackedShape):
    """Mixin of packed linear layers: ``(in_features, out_features, **family keywords)``."""

    SHAPE = ("in_features", "out_features")

    def _weight_shape(self) -> tuple[int, ...]:
        """(out_features, in_features)."""
        return (self.out_features, self.in_features)

    def edgecompress_macs(self, inputs, output) -> dict[str, int]:
        """Per sample: every output row costs in_features x out_features operations, counted
        under the layer's ``w<weight_bits>a<input_bits>`` key."""
        rows = output.shape[1:-1].numel()
        return {f"w{self.weight_bits}a{self.input_bits}": rows * self.in_features
                * self.out_features}


class PackedConv2dShape(_PackedShape):
    """Mixin of packed 2-D convolutions: ``(in_channels, out_channels, kernel_size, stride,
    padding, dilation, groups, **family keywords)``; :meth:`_set_shape` stores them."""

    SHAPE = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation",
             "groups")
    out_features: int

    @classmethod
    def _shape_of(cls, layer: nn.Module) -> dict[str, Any]:
        """The geometry with a "valid" / "same" padding as its (height, width) pair; a "same"
        that pads one side more (an even kernel extent) raises ValueError."""
        shape = super()._shape_of(layer)
        if isinstance(shape["padding"], str):
            left, right, top, bottom = explicit_padding(shape["padding"], shape["kernel_size"],
                                                        shape["dilation"])
            if (left, top) != (right, bottom):
                raise ValueError(f"{type(layer).__name__}: padding={shape['padding']!r} pads "
                                 f"({left}, {right}, {top}, {bottom}) (left, right, top, bottom), "
                                 f"which cannot be frozen; only the same padding on both sides")
            shape["padding"] = (top, left)
        return shape

    def _set_shape(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int],
                   stride: tuple[int, int], padding: tuple[int, int],
                   dilation: tuple[int, int], groups: int) -> int:
        """Store the geometry; returns ``k``, the values per output row (one filter)."""
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"groups={groups} must divide in_channels={in_channels} and "
                             f"out_channels={out_channels}")
        self.in_channels, self.kernel_size = in_channels, tuple(kernel_size)
        self.stride, self.padding, self.dilation = tuple(stride), tuple(padding), tuple(dilation)
        self.groups = groups
        return in_channels // groups * self.kernel_size[0] * self.kernel_size[1]

    @property
    def out_channels(self) -> int:
        return self.out_features

    def _weight_shape(self) -> tuple[int, ...]:
        """(out_channels, in_channels / groups, kernel height, kernel width)."""
        return (self.out_features, self.in_channels // self.groups, *self.kernel_size)

    def edgecompress_macs(self, inputs, output) -> dict[str, int]:
        """Per sample: every output value costs ``k`` (one filter's values) operations, counted
        under the layer's ``w<weight_bits>a<input_bits>`` key (an NCHW-shaped output)."""
        return {f"w{self.weight_bits}a{self.input_bits}": output[0].numel() * self.k}


P = TypeVar("P", bound=type[PackedLayer])

_BY_NAME: Registry[type[PackedLayer]] = Registry("packed layer")
_BY_TRAINED: dict[type[nn.Module], type[PackedLayer]] = {}


def register_packed(*trained: type[nn.Module]) -> Callable[[P], P]:
    """Class decorator: the decorated :class:`PackedLayer` subclass is the packed form of the
    training classes ``trained`` (freeze replaces their instances by ``cls.from_trained``), and
    files name it by its class name."""

    def add(cls: P) -> P:
        if not (isinstance(cls, type) and issubclass(cls, PackedLayer)):
            raise TypeError(f"register_packed decorates PackedLayer subclasses, got {cls!r}")
        for t in trained:
            if _BY_TRAINED.get(t, cls) is not cls:
                raise ValueError(f"{t.__name__} is already packed by "
                                 f"{_BY_TRAINED[t].__name__}")
        _BY_NAME.register(cls.__name__, cls)
        for t in trained:
            _BY_TRAINED[t] = cls
        cls.trained_types = tuple(trained)
        return cls

    return add


def packed_class_for(layer: nn.Module) -> type[PackedLayer] | None:
    """The packed class registered for ``layer``'s class (or its nearest registered base
    class), None if there is none."""
    for base in type(layer).__mro__:
        if base in _BY_TRAINED:
            return _BY_TRAINED[base]
    return None


def pack_layer(layer: nn.Module, options: dict[str, Any]) -> PackedLayer | None:
    """``layer`` packed by the class registered for it, given the freeze ``options`` that class
    declares (:attr:`PackedLayer.freeze_options`); None if no class is registered for it."""
    cls = packed_class_for(layer)
    if cls is None:
        return None
    return cls.from_trained(layer, **{k: v for k, v in options.items() if k in cls.freeze_options})


def packed_class(name: str) -> type[PackedLayer]:
    """The packed class registered under ``name`` (a file's layer type); unknown names raise
    :class:`~edgecompress.errors.UnknownNameError` listing the known ones."""
    return _BY_NAME.get(name)


def registered_packed_classes() -> list[type[PackedLayer]]:
    """Every registered packed class (in registration order)."""
    return list(dict.fromkeys(_BY_TRAINED.values()))


def to_bitstream(codes: Tensor, bits: int) -> Tensor:
    """Non-negative integer codes (< 2^bits, any shape) -> a little-endian stream of ``bits``
    bits per code, as uint8 bytes (``ceil(numel * bits / 8)`` of them)."""
    flat = codes.reshape(-1, 1).to(torch.uint8).numpy()
    unpacked = np.unpackbits(flat, axis=1, count=bits, bitorder="little")
    return torch.from_numpy(np.packbits(unpacked.reshape(-1), bitorder="little"))


def from_bitstream(stream: Tensor, shape: tuple[int, ...], bits: int) -> Tensor:
    """The uint8 codes of ``shape`` that :func:`to_bitstream` wrote to ``stream``; a stream
    of the wrong dtype or size raises ValueError."""
    n = int(np.prod(shape))
    size = -(-n * bits // 8)
    if stream.dtype != torch.uint8 or stream.dim() != 1 or stream.numel() != size:
        raise ValueError(f"has {stream.numel()} {stream.dtype} values, expected {size} uint8 "
                         f"bytes for {' x '.join(map(str, shape))} codes of {bits} bit(s)")
    flat = np.unpackbits(stream.numpy(), count=n * bits, bitorder="little").reshape(-1, bits)
    return torch.from_numpy(np.packbits(flat, axis=1, bitorder="little").reshape(shape))
