"""Model summary: parameters by precision, bytes when stored at that precision, MACs by precision.

Counting and presenting are separate: :func:`summary` produces plain records
(:class:`LayerProfile`, :class:`Summary`), ``str(summary)`` renders the table and
``summary.to_dict()`` gives JSON-able data.

Precision. A layer's ``weight`` is stored at ``layer.weight_bits`` bits (see
:class:`edgecompress.layers.CompressedLayer`; plain layers are 32-bit); every other parameter is
32-bit. Buffers (BatchNorm running statistics) are not parameters and are not counted. MACs are
labelled ``"w{weight_bits}a{input_bits}"``: ``w32a32`` float, ``w1a32`` binary weights with float
activations (add/subtract), ``w1a1`` binary weights and activations (XNOR-popcount). Matmuls
between two activations (attention) are ``w32a32``.

MACs are counted for one sample (the forward pass's count divided by its batch size):
- ConvNd: output elements x in_channels / groups x kernel volume;
- Linear: output elements x in_features (so token sequences count every token);
- LSTM / GRU / RNN: sequence length x sum over layers and directions of
  gates x hidden x (layer input + recurrent size) (+ the projection when ``proj_size``); the
  elementwise gate arithmetic is not counted;
- MultiheadAttention: the q, k, v and output projections plus QK^T and AV;
- BatchNorm, activations, pooling, element-wise ops: 0.

Extension protocol for custom modules: a module that defines
``edgecompress_macs(self, inputs: tuple, output) -> dict[str, int]`` (precision key -> MACs per
sample) and/or ``edgecompress_params(self) -> dict[int, int]`` (bits -> parameter count) is treated
as one leaf: those methods replace the built-in rules and its children are not counted again.
Layers with neither parameters nor MACs (activations, pooling, flatten) are left out of the table.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from ..errors import EdgecompressError
from ..layers.base import CompressedLayer

FLOAT_BITS = 32
_RNN_GATES = {nn.LSTM: 4, nn.GRU: 3, nn.RNN: 1}


def _precision_key(weight_bits: int, input_bits: int) -> str:
    return f"w{weight_bits}a{input_bits}"


@dataclass
class LayerProfile:
    """One leaf layer: parameter counts by bit width and MACs per sample by precision key."""

    name: str
    kind: str
    output_shape: tuple[int, ...] | None
    params_by_bits: dict[int, int] = field(default_factory=dict)
    macs_by_precision: dict[str, int] = field(default_factory=dict)

    @property
    def params(self) -> int:
        return sum(self.params_by_bits.values())

    @property
    def bytes(self) -> float:
        return sum(bits * n for bits, n in self.params_by_bits.items()) / 8

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind,
                "output_shape": list(self.output_shape) if self.output_shape else None,
                "params": self.params, "params_by_bits": {str(b): n for b, n in
                                                          sorted(self.params_by_bits.items())},
                "bytes": self.bytes, "macs_by_precision": dict(sorted(
                    self.macs_by_precision.items()))}


@dataclass
class Summary:
    """Per-layer profiles and their totals. ``str()`` is the table, ``to_dict()`` the data."""

    model: str
    input_shape: tuple[int, ...]
    layers: list[LayerProfile]

    @property
    def params_by_bits(self) -> dict[int, int]:
        out: dict[int, int] = defaultdict(int)
        for layer in self.layers:
            for bits, n in layer.params_by_bits.items():
                out[bits] += n
        return dict(sorted(out.items()))

    @property
    def total_params(self) -> int:
        return sum(self.params_by_bits.values())

    @property
    def bytes(self) -> float:
        """Parameters stored at their precision (packed), in bytes."""
        return sum(layer.bytes for layer in self.layers)

    @property
    def float32_bytes(self) -> int:
        return self.total_params * 4

    @property
    def compression_ratio(self) -> float:
        """float32 size / packed size."""
        return self.float32_bytes / self.bytes if self.bytes else 1.0

    @property
    def macs_by_precision(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for layer in self.layers:
            for key, n in layer.macs_by_precision.items():
                out[key] += n
        return dict(sorted(out.items()))

    @property
    def total_macs(self) -> int:
        return sum(self.macs_by_precision.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "input_shape": list(self.input_shape),
            "layers": [layer.to_dict() for layer in self.layers],
            "total_params": self.total_params,
            "params_by_bits": {str(b): n for b, n in self.params_by_bits.items()},
            "bytes": self.bytes, "float32_bytes": self.float32_bytes,
            "compression_ratio": self.compression_ratio,
            "macs_by_precision": self.macs_by_precision, "total_macs": self.total_macs,
        }

    def __str__(self) -> str:
        bits = sorted({b for layer in self.layers for b in layer.params_by_bits})
        keys = sorted({k for layer in self.layers for k in layer.macs_by_precision})
        header = (["Layer", "Type", "Output shape"] + [f"{b}-bit params" for b in bits]
                  + ["Memory (KiB)"] + [f"MACs {k}" for k in keys])
        rows = [[layer.name, layer.kind,
                 str(tuple(layer.output_shape)) if layer.output_shape else "-"]
                + [f"{layer.params_by_bits.get(b, 0):,}" for b in bits]
                + [f"{layer.bytes / 1024:.2f}"]
                + [f"{layer.macs_by_precision.get(k, 0):,}" for k in keys]
                for layer in self.layers]
        totals = (["Total", "", ""] + [f"{self.params_by_bits.get(b, 0):,}" for b in bits]
                  + [f"{self.bytes / 1024:.2f}"]
                  + [f"{self.macs_by_precision.get(k, 0):,}" for k in keys])
        widths = [max(len(r[i]) for r in [header, *rows, totals]) for i in range(len(header))]

        def line(cells: Sequence[str]) -> str:
            return "  ".join(c.ljust(w) if i < 3 else c.rjust(w)
                             for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

        rule = "-" * len(line(header))
        out = [f"Model summary: {self.model}, input {tuple(self.input_shape)} (MACs per sample)",
               rule, line(header), rule, *map(line, rows), rule, line(totals), rule]
        out += [
            f"Parameters:        {self.total_params:,} ("
            + ", ".join(f"{n:,} at {b}-bit" for b, n in self.params_by_bits.items()) + ")",
            f"Stored size:       {_size(self.bytes)} (float32: {_size(self.float32_bytes)})",
            f"Compression ratio: {self.compression_ratio:.2f}x vs float32",
            f"MACs per sample:   {self.total_macs:,} ("
            + (", ".join(f"{k}: {n:,}" for k, n in self.macs_by_precision.items()) or "none") + ")",
        ]
        return "\n".join(out)


def _size(n: float) -> str:
    return f"{n:,.0f} B = {n / 1024:,.2f} KiB = {n / 2**20:,.3f} MiB"


def _leaves(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules counted as one unit: protocol modules, compressed layers (their quantizers are
    children), attention, and modules without children. Their descendants are skipped."""
    out, skip = [], ()
    for name, module in model.named_modules():
        if skip and name.startswith(skip):
            continue
        composite = (hasattr(module, "edgecompress_macs") or hasattr(module, "edgecompress_params")
                     or isinstance(module, (nn.MultiheadAttention, CompressedLayer)))
        if composite or not any(True for _ in module.children()):
            out.append((name or type(module).__name__, module))
            if composite and name:
                skip = skip + (name + ".",)
            elif composite:
                break  # the whole model is one unit
        elif any(True for _ in module.parameters(recurse=False)):
            out.append((f"{name or type(module).__name__} (own parameters)", module))
    return out


def _params(module: nn.Module, own_only: bool) -> dict[int, int]:
    if hasattr(module, "edgecompress_params"):
        return {int(b): int(n) for b, n in module.edgecompress_params().items()}
    weight_bits = int(getattr(module, "weight_bits", FLOAT_BITS))
    out: dict[int, int] = defaultdict(int)
    for pname, p in module.named_parameters(recurse=not own_only):
        out[weight_bits if pname == "weight" else FLOAT_BITS] += p.numel()
    return dict(out)


def _first_tensor(value: Any) -> Tensor | None:
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (tuple, list)) and value:
        return _first_tensor(value[0])
    return None


def _rnn_macs(module: nn.RNNBase, inputs: tuple) -> int:
    x = inputs[0]
    if not isinstance(x, Tensor):
        raise EdgecompressError(f"summary: packed sequences are not supported ({module})")
    seq_len = x.shape[1 if module.batch_first else 0] if x.dim() == 3 else x.shape[0]
    gates = _RNN_GATES[type(module)] if type(module) in _RNN_GATES else 1
    dirs = 2 if module.bidirectional else 1
    hidden = module.hidden_size
    proj = getattr(module, "proj_size", 0) or 0
    recurrent = proj or hidden
    per_step = 0
    for layer in range(module.num_layers):
        layer_in = module.input_size if layer == 0 else recurrent * dirs
        per_dir = gates * hidden * (layer_in + recurrent) + (proj * hidden if proj else 0)
        per_step += per_dir * dirs
    return seq_len * per_step


def _attention_macs(module: nn.MultiheadAttention, inputs: tuple, kwargs: dict) -> int:
    query = inputs[0] if inputs else kwargs["query"]
    key = inputs[1] if len(inputs) > 1 else kwargs.get("key", query)
    if query.dim() == 3:
        target, source = (query.shape[1], key.shape[1]) if module.batch_first else (
            query.shape[0], key.shape[0])
    else:
        target, source = query.shape[0], key.shape[0]
    e = module.embed_dim
    projections = target * e * e + source * module.kdim * e + source * module.vdim * e
    return projections + 2 * target * source * e + target * e * e


def _macs(module: nn.Module, inputs: tuple, kwargs: dict, output: Any,
          batch: int) -> dict[str, int]:
    if hasattr(module, "edgecompress_macs"):
        return {k: int(v) for k, v in module.edgecompress_macs(inputs, output).items()}
    key = _precision_key(int(getattr(module, "weight_bits", FLOAT_BITS)),
                         int(getattr(module, "input_bits", FLOAT_BITS)))
    out = _first_tensor(output)
    if isinstance(module, nn.modules.conv._ConvNd) and out is not None:
        per_out = module.in_channels // module.groups * math.prod(module.kernel_size)
        return {key: out.numel() // batch * per_out}
    if isinstance(module, nn.Linear) and out is not None:
        return {key: out.numel() // batch * module.in_features}
    if isinstance(module, nn.RNNBase):
        return {key: _rnn_macs(module, inputs)}
    if isinstance(module, nn.MultiheadAttention):
        return {key: _attention_macs(module, inputs, kwargs)}
    return {}


def summary(model: nn.Module, input_shape: Sequence[int] | None = None, *, batch_size: int = 1,
            dtype: torch.dtype = torch.float32, input: Tensor | None = None) -> Summary:
    """Profile ``model`` with one forward pass on zeros of shape ``(batch_size, *input_shape)``
    (or on ``input``, whose batch size ``batch_size`` then states; for a sequence-first LSTM pass
    ``input`` of shape (T, B, F) and ``batch_size=B``)."""
    if input is None:
        if input_shape is None:
            raise ValueError("summary() needs input_shape or input")
        input = torch.zeros((batch_size, *input_shape), dtype=dtype)
        shown_shape = tuple(input_shape)
    else:
        shown_shape = tuple(input.shape)
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    input = input.to(device)
    leaves = _leaves(model)
    profiles: dict[int, LayerProfile] = {}
    macs: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    handles = []

    for name, module in leaves:
        own_only = name.endswith("(own parameters)")
        profiles[id(module) if not own_only else -id(module)] = LayerProfile(
            name, type(module).__name__, None, _params(module, own_only))
        if own_only:
            continue

        def hook(mod: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            for k, v in _macs(mod, args, kwargs, output, batch_size).items():
                macs[id(mod)][k] += v
            out = _first_tensor(output)
            profiles[id(mod)].output_shape = tuple(out.shape) if out is not None else None

        handles.append(module.register_forward_hook(hook, with_kwargs=True))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(input)
    except EdgecompressError:
        raise
    except Exception as exc:
        raise EdgecompressError(
            f"summary: {type(model).__name__} cannot run on an input of shape "
            f"{tuple(input.shape)} (batch first): {type(exc).__name__}: {exc}") from None
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    for key, profile in profiles.items():
        if key > 0:
            profile.macs_by_precision = {k: v for k, v in macs[key].items() if v}
    layers = [p for p in profiles.values() if p.params or p.macs_by_precision]
    return Summary(type(model).__name__, shown_shape, layers)
