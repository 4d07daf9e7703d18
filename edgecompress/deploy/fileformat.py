"""The frozen-model file: safetensors tensors plus JSON metadata, loaded without running code.

Metadata (the safetensors header's ``"edgecompress"`` entry) holds the format name and version,
the model spec (zoo name and options, conversion method and options) and, for every packed
layer, its number of output rows ``n`` and values per row ``k`` (and for shift layers their
``bits`` and method). Binary weights are stored as an unpadded little-endian bitstream
(``ceil(n k / 8)`` bytes), so the file is 1 bit per binary weight plus the float parts; rows are
re-padded to 64-bit words on load. Shift weights are their value codes, ``bits`` bits each, in
the same kind of stream (``ceil(n k bits / 8)`` bytes).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from .. import kernels
from ..convert import convert
from ..errors import ModelFileError
from ..models import create
from .freeze import freeze
from .modules import _PackedBinary, _PackedShift

FORMAT = "edgecompress-frozen"
VERSION = 1


def _bitstream(bits: torch.Tensor, k: int) -> torch.Tensor:
    signs = kernels.unpack_signs_reference(bits, k) < 0
    return torch.from_numpy(np.packbits(signs.numpy().reshape(-1), bitorder="little"))


def _words(stream: torch.Tensor, n: int, k: int) -> torch.Tensor:
    flat = np.unpackbits(stream.numpy(), count=n * k, bitorder="little").reshape(n, k)
    return kernels.pack_signs(torch.from_numpy(np.where(flat == 1, -1.0, 1.0)).float())


def _code_stream(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """uint8 codes (< 2^bits) -> a little-endian stream of ``bits`` bits per code."""
    unpacked = np.unpackbits(codes.numpy().reshape(-1, 1), axis=1, count=bits,
                             bitorder="little")
    return torch.from_numpy(np.packbits(unpacked.reshape(-1), bitorder="little"))


def _codes(stream: torch.Tensor, n: int, k: int, bits: int) -> torch.Tensor:
    flat = np.unpackbits(stream.numpy(), count=n * k * bits, bitorder="little").reshape(-1, bits)
    return torch.from_numpy(np.packbits(flat, axis=1, bitorder="little").reshape(n, k))


def save(model: nn.Module, path: str | Path) -> None:
    """Write a frozen model (see :func:`freeze`) to ``path``."""
    spec = getattr(model, "edgecompress_spec", None)
    if spec is None:
        raise ModelFileError("cannot save: the model carries no edgecompress_spec (build it with "
                             "edgecompress.models.create and convert it by method name)")
    packed = {n: m for n, m in model.named_modules() if isinstance(m, _PackedBinary)}
    shifts = {n: m for n, m in model.named_modules() if isinstance(m, _PackedShift)}
    if not packed and not shifts:
        raise ModelFileError("cannot save: the model has no packed layers; call "
                             "edgecompress.deploy.freeze(model) first")
    tensors = {}
    for key, value in model.state_dict().items():
        layer, _, leaf = key.rpartition(".")
        if leaf == "bits" and layer in packed:
            tensors[key] = _bitstream(value, packed[layer].k)
        elif leaf == "codes" and layer in shifts:
            tensors[key] = _code_stream(value, shifts[layer].weight_bits)
        else:
            tensors[key] = value.contiguous()
    meta = {"format": FORMAT, "version": VERSION, "spec": spec,
            "packed": {n: {"n": m.out_features, "k": m.k} for n, m in packed.items()},
            "shift": {n: {"n": m.out_features, "k": m.k, "bits": m.weight_bits,
                          "method": m.method} for n, m in shifts.items()}}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"edgecompress": json.dumps(meta)})


def _rebuild(spec: dict[str, Any]) -> nn.Module:
    model = create(**spec["model"])
    method = spec.get("method")
    if method:
        options = dict(method)
        model = convert(model, options.pop("name"), **options)
    return freeze(model)


def load(path: str | Path) -> nn.Module:
    """Read a model written by :func:`save`: rebuilt from its spec, weights from its tensors."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("edgecompress")
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(f"{path}: not a readable safetensors file (truncated or corrupt?): "
                             f"{exc}") from None
    if raw is None:
        raise ModelFileError(f"{path}: no edgecompress metadata; not a frozen edgecompress model")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{path}: corrupt metadata: {exc}") from None
    if meta.get("format") != FORMAT:
        raise ModelFileError(f"{path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    if not isinstance(meta.get("version"), int) or meta["version"] > VERSION:
        raise ModelFileError(f"{path}: format version {meta.get('version')!r} is newer than this "
                             f"edgecompress reads ({VERSION}); upgrade edgecompress")
    try:
        model = _rebuild(meta["spec"])
    except Exception as exc:
        raise ModelFileError(f"{path}: cannot rebuild the model from its spec "
                             f"{meta.get('spec')!r}: {exc}") from None
    expected = model.state_dict()
    packed = {n: m for n, m in model.named_modules() if isinstance(m, _PackedBinary)}
    shifts = {n: m for n, m in model.named_modules() if isinstance(m, _PackedShift)}
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ModelFileError(f"{path}: tensors do not match the model: missing {missing}, "
                             f"unexpected {unexpected}")
    state = {}
    for key, value in tensors.items():
        layer, _, leaf = key.rpartition(".")
        if leaf == "bits" and layer in packed:
            n, k = packed[layer].out_features, packed[layer].k
            if value.dtype != torch.uint8 or value.numel() != -(-n * k // 8):
                raise ModelFileError(f"{path}: tensor {key!r} has {value.numel()} "
                                     f"{value.dtype} values, expected {-(-n * k // 8)} uint8 "
                                     f"bytes for {n} x {k} bits")
            value = _words(value, n, k)
        elif leaf == "codes" and layer in shifts:
            m = shifts[layer]
            size = -(-m.out_features * m.k * m.weight_bits // 8)
            if value.dtype != torch.uint8 or value.numel() != size:
                raise ModelFileError(f"{path}: tensor {key!r} has {value.numel()} "
                                     f"{value.dtype} values, expected {size} uint8 bytes for "
                                     f"{m.out_features} x {m.k} codes of {m.weight_bits} bits")
            value = _codes(value, m.out_features, m.k, m.weight_bits)
            if int(value.max()) >= len(m.table):
                raise ModelFileError(f"{path}: tensor {key!r} holds codes beyond the "
                                     f"{len(m.table)} values of {m.method} {m.weight_bits}-bit")
        elif value.shape != expected[key].shape or value.dtype != expected[key].dtype:
            raise ModelFileError(f"{path}: tensor {key!r} is {value.dtype} "
                                 f"{tuple(value.shape)}, expected {expected[key].dtype} "
                                 f"{tuple(expected[key].shape)}")
        state[key] = value
    model.load_state_dict(state)
    return model
