"""Model summary: parameters by precision, bytes when stored at that precision, operations by
precision and by kind.

Counting and presenting are separate: :func:`summary` produces plain records
(:class:`LayerProfile`, :class:`Summary`), ``str(summary)`` renders the table and
``summary.to_dict()`` gives JSON-able data.

Precision. A layer's ``weight`` is stored at ``layer.weight_bits`` bits (see
:class:`edgecompress.layers.CompressedLayer`; plain layers are 32-bit); every other parameter is
32-bit. Buffers (BatchNorm running statistics) are not parameters and are not counted. MACs are
labelled ``"w{weight_bits}a{input_bits}"``: ``w32a32`` float, ``w1a32`` binary weights with float
activations (add/subtract), ``w1a1`` binary weights and activations (XNOR-popcount). Matmuls
between two activations (attention) are ``w32a32``, unless the module running them reports its
own precisions: the binary attention of :class:`edgecompress.layers.AttentionCore` counts
q k^T of +-1 tokens as ``w1a1`` and its {0, a} probabilities times +-1 values as ``u1a1``
(an unsigned 1-bit operand times a signed one: add-only work).

Operation kind. "MACs" counts one operation per (input, weight) pair whatever that operation is;
each counted operation also has a kind (:data:`edgecompress.layers.base.OP_KINDS`), the
layer's ``op_kind`` (plain layers and products written in ``forward``: ``"mac"``; a mapping
from precision key to kind for a layer whose products differ, e.g. binary attention):
``"mac"`` multiply-accumulate, ``"add"`` add/subtract only (binary weights, float inputs),
``"xnor-popcount"`` (binary weights and inputs), ``"shift-add"`` (power-of-two weights),
``"squared-diff"`` (EuclidNet layers at theta = 1: subtract and square, no general multiplier;
below 1 the blend is ``"mac"``), ``"abs-diff"`` (AdderNet's L1 distance). A layer's row shows
its kind; ``ops_by_kind`` gives the counts.

MACs are counted for one sample (the forward pass's count divided by its batch size):
- ConvNd: output elements x in_channels / groups x kernel volume;
- Linear: output elements x in_features (so token sequences count every token);
- LSTM / GRU / RNN: sequence length x sum over layers and directions of
  gates x hidden x (layer input + recurrent size) (+ the projection when ``proj_size``); the
  elementwise gate arithmetic is not counted;
- MultiheadAttention: the q, k, v and output projections plus QK^T and AV;
- tensor-train layers (TTLinear, TTLSTM; through the protocol below): the multiply-adds of the
  core contractions they run, in the order they choose for the batch, never the dense count;
- matrix products written in a module's ``forward`` (``q @ k.transpose(-2, -1)``,
  ``torch.matmul`` / ``mm`` / ``bmm`` / ``mv`` / ``dot`` / ``addmm`` / ``baddbmm``, ``F.linear``,
  two-or-more-operand ``torch.einsum`` and ``F.scaled_dot_product_attention``): output elements x
  contracted size (SDPA: batch x heads x L x S x (E + Ev), the causal mask not subtracted;
  einsum: contracted left to right, each contracting step costing the product of the sizes it
  involves). They are seen with a :class:`torch.overrides.TorchFunctionMode` during the
  summary's forward pass, counted ``w32a32`` and charged to the innermost module running them
  (a leaf, or the container whose own ``forward`` issued them: its row is
  ``"name (own ops)"``). Products issued inside a layer counted by the rules above (conv,
  linear, RNN, MultiheadAttention, compressed layers, protocol modules) are part of that layer's
  count and are not added again. Functional convolutions (``F.conv2d``) are not counted;
- BatchNorm, activations, pooling, element-wise ops: 0.

The forward pass runs in eval mode under ``torch.no_grad``; torch's fused inference fast paths
(``nn.TransformerEncoderLayer``, ``nn.MultiheadAttention``), which would skip the submodules' own
``forward``, are not taken while a torch-function mode is active, so every layer is seen.

Extension protocol for custom modules: a module that defines
``edgecompress_macs(self, inputs: tuple, output) -> dict[str, int]`` (precision key -> MACs per
sample) and/or ``edgecompress_params(self) -> dict[int, int]`` (bits -> parameter count) is treated
as one leaf: those methods replace the built-in rules and its children are not counted again.
Layers with neither parameters nor MACs (activations, pooling, flatten) are left out of the table.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from ..errors import EdgecompressError
from ..layers.base import (FLOAT_BITS, OP_KINDS, CompressedLayer, params_by_bits,
                           precision_key)

_RNN_GATES = {nn.LSTM: 4, nn.GRU: 3, nn.RNN: 1}


def _precision_key(weight_bits: int, input_bits: int) -> str:
    return f"w{weight_bits}a{input_bits}"


@dataclass
class LayerProfile:
    """One leaf layer: parameter counts by bit width, MACs per sample by precision key and the
same operations by kind."""

    name: str
    kind: str
    output_shape: tuple[int, ...] | None
    params_by_bits: dict[int, int] = field(default_factory=dict)
    macs_by_precision: dict[str, int] = field(default_factory=dict)
    ops_by_kind: dict[str, int] = field(default_factory=dict)

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
                    self.macs_by_precision.items())),
                "ops_by_kind": _by_kind(self.ops_by_kind)}


def _summed(counts: Iterable[dict[Any, int]]) -> dict[Any, int]:
    """The ``counts`` mappings added key by key (the totals of per-layer counts)."""
    out: dict[Any, int] = defaultdict(int)
    for count in counts:
        for key, n in count.items():
            out[key] += n
    return out


@dataclass
class Summary:
    """Per-layer profiles and their totals. ``str()`` is the table, ``to_dict()`` the data."""

    model: str
    input_shape: tuple[int, ...]
    layers: list[LayerProfile]

    @property
    def params_by_bits(self) -> dict[int, int]:
        return dict(sorted(_summed(layer.params_by_bits for layer in self.layers).items()))

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
        return dict(sorted(_summed(layer.macs_by_precision for layer in self.layers).items()))

    @property
    def total_macs(self) -> int:
        return sum(self.macs_by_precision.values())

    @property
    def ops_by_kind(self) -> dict[str, int]:
        """The operations of :attr:`total_macs` by kind (in the order of ``OP_KINDS``)."""
        return _by_kind(_summed(layer.ops_by_kind for layer in self.layers))

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "input_shape": list(self.input_shape),
            "layers": [layer.to_dict() for layer in self.layers],
            "total_params": self.total_params,
            "params_by_bits": {str(b): n for b, n in self.params_by_bits.items()},
            "bytes": self.bytes, "float32_bytes": self.float32_bytes,
            "compression_ratio": self.compression_ratio,
            "macs_by_precision": self.macs_by_precision, "total_macs": self.total_macs,
            "ops_by_kind": self.ops_by_kind,
        }

    def __str__(self) -> str:
        bits = sorted({b for layer in self.layers for b in layer.params_by_bits})
        keys = sorted({k for layer in self.layers for k in layer.macs_by_precision})
        header = (["Layer", "Type", "Operation", "Output shape"]
                  + [f"{b}-bit params" for b in bits] + ["Memory (KiB)"]
                  + [f"MACs {k}" for k in keys])
        rows = [[layer.name, layer.kind, "+".join(_by_kind(layer.ops_by_kind)) or "-",
                 str(tuple(layer.output_shape)) if layer.output_shape else "-"]
                + [f"{layer.params_by_bits.get(b, 0):,}" for b in bits]
                + [f"{layer.bytes / 1024:.2f}"]
                + [f"{layer.macs_by_precision.get(k, 0):,}" for k in keys]
                for layer in self.layers]
        totals = (["Total", "", "", ""] + [f"{self.params_by_bits.get(b, 0):,}" for b in bits]
                  + [f"{self.bytes / 1024:.2f}"]
                  + [f"{self.macs_by_precision.get(k, 0):,}" for k in keys])
        widths = [max(len(r[i]) for r in [header, *rows, totals]) for i in range(len(header))]

        def line(cells: Sequence[str]) -> str:
            return "  ".join(c.ljust(w) if i < 4 else c.rjust(w)
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
            "Operations:        "
            + (", ".join(f"{k}: {n:,}" for k, n in self.ops_by_kind.items()) or "none"),
        ]
        return "\n".join(out)


def _by_kind(counts: dict[str, int]) -> dict[str, int]:
    """Non-zero counts in the order of ``OP_KINDS``."""
    return {kind: counts[kind] for kind in OP_KINDS if counts.get(kind)}


def _op_kind(module: nn.Module, precision: str) -> str:
    """The kind of the module's operations counted at ``precision``: its ``op_kind`` (``"mac"``
    when it has none), or, for a module whose products differ in kind (attention), its
    ``op_kind`` mapping from precision key to kind; checked against ``OP_KINDS``."""
    kind = getattr(module, "op_kind", "mac")
    if isinstance(kind, dict):
        kind = kind.get(precision, "mac")
    if kind not in OP_KINDS:
        raise EdgecompressError(f"summary: {type(module).__name__}.op_kind is {kind!r}; "
                                f"accepted kinds: {', '.join(OP_KINDS)}")
    return kind


def _size(n: float) -> str:
    return f"{n:,.0f} B = {n / 1024:,.2f} KiB = {n / 2**20:,.3f} MiB"


def _counts_itself(module: nn.Module) -> bool:
    """A layer whose MACs come from its own rule (or protocol): everything run inside it is
    already in that count."""
    return (hasattr(module, "edgecompress_macs") or hasattr(module, "edgecompress_params")
            or isinstance(module, (nn.MultiheadAttention, CompressedLayer, nn.Linear,
                                   nn.modules.conv._ConvNd, nn.RNNBase)))


def _rows(model: nn.Module) -> list[tuple[str, nn.Module, bool]]:
    """(name, module, is_leaf) for every module that gets a row, in ``named_modules`` order.

    Leaves are counted as one unit: protocol modules, compressed layers (their quantizers are
    children), attention, and modules without children; their descendants are skipped. Every
    other module gets a row for what it holds and runs itself (its own parameters, the matrix
    products its ``forward`` writes); rows left empty are dropped later."""
    out, skip = [], ()
    for name, module in model.named_modules():
        if skip and name.startswith(skip):
            continue
        composite = (hasattr(module, "edgecompress_macs") or hasattr(module, "edgecompress_params")
                     or isinstance(module, (nn.MultiheadAttention, CompressedLayer)))
        leaf = composite or not any(True for _ in module.children())
        out.append((name or type(module).__name__, module, leaf))
        if composite and name:
            skip = skip + (name + ".",)
        elif composite:
            break  # the whole model is one unit
    return out


# --- matrix products written in forward() ----------------------------------------------------

def _arg(args: tuple, kwargs: dict, index: int, name: str) -> Any:
    return args[index] if len(args) > index else kwargs.get(name)


def _product(result: Any, left: Any) -> int:
    """MACs of a matrix product: output elements x contracted size (``left``'s last dim)."""
    if not isinstance(result, Tensor) or not isinstance(left, Tensor) or left.dim() == 0:
        return 0
    return result.numel() * left.shape[-1]


def _sdpa_macs(args: tuple, kwargs: dict, result: Any) -> int:
    query, key = _arg(args, kwargs, 0, "query"), _arg(args, kwargs, 1, "key")
    out = _first_tensor(result)
    if not all(isinstance(t, Tensor) for t in (query, key, out)) or query.dim() < 2:
        return 0
    embed, source, value_embed = query.shape[-1], key.shape[-2], out.shape[-1]
    rows = out.numel() // value_embed  # batch x heads x target length
    return rows * source * (embed + value_embed)  # QK^T and (softmax) V


_ELLIPSIS = "..."


def _einsum_labels(term: str, ndim: int) -> list[str] | None:
    if term.count(_ELLIPSIS) > 1:
        return None
    letters = term.replace(_ELLIPSIS, "")
    if not all(c.isalpha() for c in letters):
        return None
    n_ell = ndim - len(letters)
    if n_ell < 0 or (n_ell and _ELLIPSIS not in term):
        return None
    before, _, after = term.partition(_ELLIPSIS) if _ELLIPSIS in term else (term, "", "")
    # ellipsis dimensions are named by their distance from the right, so they broadcast
    return [*before, *(chr(0x100 + n_ell - 1 - i) for i in range(n_ell)), *after]


def _einsum_macs(args: tuple, kwargs: dict, result: Any) -> int | None:
    """Two or more operands contracted left to right; None when the call is not understood."""
    if not args or not isinstance(args[0], str):
        return None
    equation, operands = args[0].replace(" ", ""), list(args[1:])
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = list(operands[0])
    if not operands or not all(isinstance(t, Tensor) for t in operands):
        return None
    lhs, arrow, rhs = equation.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(operands):
        return None
    labels = [_einsum_labels(t, op.dim()) for t, op in zip(terms, operands)]
    if any(lab is None for lab in labels):
        return None
    sizes: dict[str, int] = {}
    for lab, op in zip(labels, operands):
        for c, n in zip(lab, op.shape):
            sizes[c] = max(sizes.get(c, 1), int(n))
    ellipsis = sorted({c for lab in labels for c in lab if ord(c) >= 0x100}, reverse=True)
    if arrow:
        n_out_ell = len(ellipsis) if _ELLIPSIS in rhs else 0
        output = _einsum_labels(rhs, len(rhs.replace(_ELLIPSIS, "")) + n_out_ell)
        if output is None:
            return None
    else:
        counts: dict[str, int] = defaultdict(int)
        for lab in labels:
            for c in lab:
                counts[c] += 1
        output = ellipsis + sorted(c for c, n in counts.items() if n == 1 and ord(c) < 0x100)
    total, current = 0, set(labels[0])
    for j in range(1, len(labels)):
        involved = current | set(labels[j])
        still_needed = set(output).union(*labels[j + 1:])
        kept = involved & still_needed
        if involved - kept:  # a contraction (a broadcast product alone is element-wise)
            total += math.prod(sizes[c] for c in involved)
        current = kept
    return total


def _matmul_rules() -> dict[Any, Callable[[tuple, dict, Any], int | None]]:
    rules: dict[Any, Callable[[tuple, dict, Any], int | None]] = {}

    def add(funcs: Sequence[Any], rule: Callable[[tuple, dict, Any], int | None]) -> None:
        for f in funcs:
            if f is not None:
                rules[f] = rule

    tensor = torch.Tensor
    first = [getattr(torch, n, None) for n in ("matmul", "mm", "bmm", "mv", "dot", "inner")]
    first += [getattr(tensor, n, None) for n in ("matmul", "__matmul__", "mm", "bmm", "mv", "dot",
                                                 "inner")]
    add(first, lambda a, k, r: _product(r, _arg(a, k, 0, "input")))
    add([getattr(tensor, "__rmatmul__", None)], lambda a, k, r: _product(r, _arg(a, k, 1, "other")))
    added = [getattr(torch, n, None) for n in ("addmm", "baddbmm", "addmv")]
    added += [getattr(tensor, n, None) for n in ("addmm", "baddbmm", "addmv")]
    add(added, lambda a, k, r: _product(r, a[1] if len(a) > 1 else next(
        (k[n] for n in ("mat1", "batch1", "mat") if n in k), None)))
    add([F.linear], lambda a, k, r: _product(r, _arg(a, k, 1, "weight")))
    add([torch.einsum], _einsum_macs)
    add([getattr(F, "scaled_dot_product_attention", None)], _sdpa_macs)
    return rules


_MATMUL_RULES = _matmul_rules()


class _MatmulCounter(TorchFunctionMode):
    """Counts the matrix products of a forward pass, charged to the innermost running module
    unless a self-counting layer is running (its own rule already covers them)."""

    def __init__(self, charge: Callable[[int], None]) -> None:
        super().__init__()
        self.charge = charge

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        rule = _MATMUL_RULES.get(func)
        if rule is not None:
            macs = rule(args, kwargs, result)
            if macs is None:
                warnings.warn(f"summary: {getattr(func, '__name__', func)} call not understood "
                              f"({args[0] if args and isinstance(args[0], str) else ''}); its "
                              "MACs are not counted", stacklevel=2)
            elif macs:
                self.charge(macs)
        return result


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
    key = precision_key(module)
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
    rows = _rows(model)
    profiles: dict[int, LayerProfile] = {}
    macs: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    kinds: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    leaf_ids = {id(module) for _, module, leaf in rows if leaf}
    counted = {id(m) for m in model.modules() if _counts_itself(m)}
    handles = []
    seen: set[int] = set()

    for name, module, leaf in rows:
        profiles[id(module)] = LayerProfile(name, type(module).__name__, None,
                                            params_by_bits(module, own_only=not leaf, seen=seen))

        def hook(mod: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            if id(mod) in leaf_ids:
                for k, v in _macs(mod, args, kwargs, output, batch_size).items():
                    macs[id(mod)][k] += v
                    kinds[id(mod)][_op_kind(mod, k)] += v
            out = _first_tensor(output)
            profiles[id(mod)].output_shape = tuple(out.shape) if out is not None else None

        handles.append(module.register_forward_hook(hook, with_kwargs=True))

    # which module is running, for the matrix products written in forward()
    stack: list[nn.Module] = []
    op_macs: dict[int, int] = defaultdict(int)  # whole batch; divided by batch_size below
    float_key = _precision_key(FLOAT_BITS, FLOAT_BITS)

    def enter(mod: nn.Module, args: tuple) -> None:
        stack.append(mod)

    def leave(mod: nn.Module, args: tuple, output: Any) -> None:
        if stack and stack[-1] is mod:
            stack.pop()

    def charge(n: int) -> None:
        if any(id(m) in counted for m in stack):
            return  # inside a layer whose own rule counts this product
        owner = next((m for m in reversed(stack) if id(m) in profiles), None)
        if owner is not None:
            op_macs[id(owner)] += n

    for module in model.modules():
        handles.append(module.register_forward_pre_hook(enter))
        handles.append(module.register_forward_hook(leave, always_call=True))
    was_training = model.training
    model.eval()
    try:
        # with the mode active torch takes no fused fast path that would skip submodules
        with torch.no_grad(), _MatmulCounter(charge):
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
    for key, n in op_macs.items():
        macs[key][float_key] += n // batch_size
        kinds[key]["mac"] += n // batch_size
    for (name, module, leaf) in rows:
        profile = profiles[id(module)]
        profile.macs_by_precision = {k: v for k, v in macs[id(module)].items() if v}
        profile.ops_by_kind = _by_kind(kinds[id(module)])
        if not leaf:
            profile.name = name + (" (own ops)" if not profile.params else " (own parameters)"
                                   if not profile.macs_by_precision
                                   else " (own parameters and ops)")
            if not profile.macs_by_precision:
                profile.output_shape = None
    layers = [p for p in profiles.values() if p.params or p.macs_by_precision]
    return Summary(type(model).__name__, shown_shape, layers)
