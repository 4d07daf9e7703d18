"""The self-describing model file: models that the zoo cannot rebuild (narrowed widths, a
user's own module, conversions with Schedule or quantizer objects) save and load with
identical outputs; files that are not what this version writes are refused, naming the file."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.fx
import torch.nn.functional as F
from torch import Tensor, nn

import edgecompress as ec
from edgecompress import deploy
from edgecompress.deploy.structure import decode_value, encode_value
from edgecompress.errors import ModelFileError
from edgecompress.layers import harden
from edgecompress.quantizers.schedule import Schedule

from .test_deploy import _rewrite_metadata, calibrated, saved_mlp


def round_trip(frozen: nn.Module, tmp_path, x: Tensor) -> nn.Module:
    path = tmp_path / "model.safetensors"
    deploy.save(frozen, path)
    loaded = deploy.load(path)
    with torch.no_grad():
        assert torch.equal(loaded(x), frozen(x))
    assert loaded.state_dict().keys() == frozen.state_dict().keys()
    for key, value in frozen.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert type(loaded).__name__ == type(frozen).__name__
    deploy.save(loaded, tmp_path / "again.safetensors")  # a loaded model saves as it loaded
    again = deploy.load(tmp_path / "again.safetensors")
    with torch.no_grad():
        assert torch.equal(again(x), frozen(x))
    return loaded


def _narrow(conv: nn.Conv2d, keep_out: list[int] | None = None,
            keep_in: list[int] | None = None) -> nn.Conv2d:
    """A copy of ``conv`` keeping the output / input channels listed (as pruning would)."""
    weight = conv.weight.detach()
    if keep_out is not None:
        weight = weight[keep_out]
    if keep_in is not None:
        weight = weight[:, keep_in]
    new = nn.Conv2d(weight.shape[1], weight.shape[0], conv.kernel_size, conv.stride,
                    conv.padding, bias=False)
    with torch.no_grad():
        new.weight.copy_(weight)
    return new


def _narrow_bn(bn: nn.BatchNorm2d, keep: list[int]) -> nn.BatchNorm2d:
    new = nn.BatchNorm2d(len(keep))
    new.load_state_dict({k: v[keep] if v.dim() else v for k, v in bn.state_dict().items()})
    return new


def test_a_resnet20_with_narrowed_channels_saves_and_loads(tmp_path):
    """Inner widths of two blocks cut (conv1 -> bn1 -> conv2's inputs), as pruning does: the
    zoo's resnet20 has other shapes, the file alone rebuilds it."""
    torch.manual_seed(0)
    model = ec.models.create("resnet20", width=0.5, activation="hardtanh")
    for block, keep in ((model.stages[0][1], [0, 2, 3, 5, 7]),
                        (model.stages[1][0], list(range(0, 16, 2)) + [15])):
        block.conv1 = _narrow(block.conv1, keep_out=keep)
        block.bn1 = _narrow_bn(block.bn1, keep)
        block.conv2 = _narrow(block.conv2, keep_in=keep)
    model = ec.convert(model, "bnn", mode="w1a1", scaling="channel")
    frozen = deploy.freeze(calibrated(model, (3, 32, 32)))
    loaded = round_trip(frozen, tmp_path, torch.randn(3, 3, 32, 32))
    narrowed = loaded.get_submodule("stages.0.1")
    assert narrowed.conv1.out_features == 5
    assert loaded.get_submodule("stages.1.0").conv2.in_channels == 9
    assert isinstance(narrowed.conv2, deploy.PackedBinaryConv2d)
    assert narrowed.conv1.emit_signs  # the fusions freeze chose are in the file
    assert narrowed.conv2.fused_clamp == (-1.0, 1.0)
    assert loaded.edgecompress_spec == frozen.edgecompress_spec  # informational, kept
    assert loaded.input_shape == (3, 32, 32)


class TwoBranches(nn.Module):
    """A user's own model: two branches concatenated, a functional relu, a view, a parameter
    and a buffer of its own, a slice, ``size()`` and ``.shape``."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8),
                                  nn.Hardtanh())
        self.left = nn.Conv2d(8, 8, 3, padding=1)
        self.right = nn.Conv2d(8, 4, 1)
        self.bn = nn.BatchNorm2d(12)
        self.mix = nn.Linear(12 * 4 * 4, 16)
        self.head = nn.Linear(4, 5)
        self.offset = nn.Parameter(torch.randn(12))
        self.register_buffer("gain", torch.tensor(1.5))

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        y = torch.cat([self.left(x), self.right(x)], dim=1)
        y = F.relu(self.bn(y)) + self.offset.view(1, -1, 1, 1)
        y = F.max_pool2d(y[:, :, 1:, 1:], 2)
        y = self.mix(y.reshape(y.size(0), -1) * self.gain)
        return self.head(F.hardtanh(y).view(y.shape[0], 4, 4).sum(dim=2))


def test_a_users_own_module_with_binary_layers_saves_and_loads(tmp_path):
    torch.manual_seed(1)
    model = ec.convert(TwoBranches(), "bnn", scaling="channel")
    assert isinstance(model.left, ec.layers.BinaryConv2d)
    assert isinstance(model.mix, ec.layers.BinaryLinear)
    frozen = deploy.freeze(calibrated(model, (3, 9, 9)))
    loaded = round_trip(frozen, tmp_path, torch.randn(4, 3, 9, 9))
    assert type(loaded).__name__ == "TwoBranches"
    assert isinstance(loaded.left, deploy.PackedBinaryConv2d)
    assert isinstance(loaded.stem, nn.Sequential) and isinstance(loaded.stem[1], nn.Identity)


@pytest.mark.parametrize("method, options", [
    ("bnn++", {"mu": Schedule("linear", 0.0, 1.0), "beta": Schedule("constant", 3.0)}),
    ("bnn++", {"prox": "binaryrelax-object", "lam": Schedule("geometric", 0.1, 10.0)}),
])
def test_models_converted_with_schedule_or_quantizer_objects_save_and_load(tmp_path, method,
                                                                           options):
    if options.get("prox") == "binaryrelax-object":
        options = {**options, "prox": ec.quantizers.get("binaryrelax")}
    torch.manual_seed(2)
    model = ec.convert(ec.models.create("mlp", hidden=(32, 24), activation="hardtanh"), method,
                       mode="w1a1", **options)
    frozen = deploy.freeze(calibrated(model, (1, 28, 28)))
    loaded = round_trip(frozen, tmp_path, torch.randn(5, 1, 28, 28))
    assert loaded.input_shape == (1, 28, 28)
    # convert records a Schedule as its mapping and drops the spec for a quantizer object; the
    # file keeps it as information only (never needed to load)
    assert getattr(loaded, "edgecompress_spec", None) == getattr(frozen, "edgecompress_spec", None)
    assert ("edgecompress_spec" in vars(loaded)) == (not isinstance(options.get("prox"), nn.Module))


def test_a_frozen_float_model_saves_and_loads(tmp_path):
    """E.g. a pruned float network, frozen (BatchNorms folded): its only packed layers are
    the direct float convolutions (with their fused ReLUs) and max-pools, which the file
    rebuilds."""
    torch.manual_seed(3)
    model = calibrated(ec.models.create("convnet", width=0.25), (1, 28, 28))
    frozen = deploy.freeze(model)
    packed = [m for m in frozen.modules() if isinstance(m, deploy.PackedLayer)]
    kinds = {type(m) for m in packed}
    assert kinds == {deploy.PackedFloatConv2d, deploy.PackedMaxPool2d}
    assert any(m.fused_clamp == (0.0, float("inf")) for m in packed)
    loaded = round_trip(frozen, tmp_path, torch.randn(2, 1, 28, 28))
    assert [m.config() for m in loaded.modules() if isinstance(m, deploy.PackedLayer)] == \
        [m.config() for m in packed]


@pytest.mark.slow
def test_a_loaded_w1a1_model_compiles_as_one_graph(tmp_path):
    torch.manual_seed(4)
    model = ec.convert(ec.models.create("resnet20", width=0.25, activation="hardtanh"), "bnn",
                       mode="w1a1")
    frozen = deploy.freeze(calibrated(model, (3, 16, 16)))
    loaded = round_trip(frozen, tmp_path, torch.randn(2, 3, 16, 16))
    torch._dynamo.reset()
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(loaded, fullgraph=True)(x), loaded(x))


def test_a_model_torch_fx_cannot_trace_is_refused_at_save_saying_why(tmp_path):
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(6, 6), nn.Linear(6, 2)

        def forward(self, x: Tensor) -> Tensor:
            if x.sum() > 0:  # data-dependent control flow
                x = -x
            return self.b(self.a(x))

    frozen = deploy.freeze(ec.convert(Branchy(), "bnn", keep_first_last=False))
    with pytest.raises(ModelFileError, match=r"cannot save Branchy to .*m\.safetensors: torch.fx "
                                             r"cannot trace it \(.*"):
        deploy.save(frozen, tmp_path / "m.safetensors")


def _unregistered_double(x: Tensor) -> Tensor:
    return x * 2


@deploy.register_function
def _registered_halve(x: Tensor) -> Tensor:
    return x / 2


torch.fx.wrap("_unregistered_double")
torch.fx.wrap("_registered_halve")


class _Wrapped(nn.Module):
    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn
        self.a, self.b = nn.Linear(6, 6), nn.Linear(6, 2)

    def forward(self, x: Tensor) -> Tensor:
        if self.fn == "double":
            return self.b(_unregistered_double(self.a(x)))
        return self.b(_registered_halve(self.a(x)))


def test_functions_outside_the_allowlist_are_refused_at_save_and_registered_ones_load(tmp_path):
    path = tmp_path / "m.safetensors"
    frozen = deploy.freeze(ec.convert(_Wrapped("double"), "bnn", keep_first_last=False))
    with pytest.raises(ModelFileError, match=r"m\.safetensors: .*_unregistered_double, which is "
                                             r"not a function a file may call"):
        deploy.save(frozen, path)
    frozen = deploy.freeze(ec.convert(_Wrapped("halve"), "bnn", keep_first_last=False))
    round_trip(frozen, tmp_path, torch.randn(3, 6))


def _first(meta, op):
    return next(n for n in meta["graph"] if n["op"] == op)


@pytest.mark.parametrize("damage, message", [
    ("module type", r"layer 'layers.1': unknown layer type torch.nn.Frobnicator"),
    ("packed type", r"layer 'layers.2': unknown packed layer type 'PackedTernaryConv9d'"),
    ("function", r"function 'os.system' is not one a model file may call"),
    ("builtin", r"function 'builtins.eval' is not one a model file may call"),
    ("method", r"method '__reduce_ex__' is not a public torch.Tensor method"),
    ("getattr", r"does not read a public attribute"),
    ("node", r"unknown or malformed value \{'node': 'nowhere'\}"),
    ("bad tag", r"unknown or malformed value \{'pickle': 'gASV'\}"),
    ("layout", r"channels_last names 'layers.9.weight', not a 4-D tensor"),
    # names torch.fx writes into the loaded model's Python code
    ("module name", r"'layers.1\"\)or\(print\(1' is not a dotted name"),
    ("call target", r"'layers.1\"\)or\(print\(1' is not a dotted name"),
    ("keyword", r"malformed keyword arguments"),
    ("placeholder", r"placeholder 'x=print\(1\)' is not an identifier"),
])
def test_files_with_unknown_types_or_disallowed_calls_are_refused_naming_the_file(
        tmp_path, damage, message):
    _, path = saved_mlp(tmp_path)

    def change(meta):
        modules, graph = meta["modules"], meta["graph"]
        if damage == "module type":
            modules["layers.1"] = {"torch.nn": "Frobnicator", "args": {"dict": []}}
        elif damage == "packed type":
            modules["layers.2"]["packed"] = "PackedTernaryConv9d"
        elif damage in ("function", "builtin"):
            _first(meta, "call_module")["op"] = "call_function"
            _first(meta, "call_function")["target"] = ("os.system" if damage == "function"
                                                       else "builtins.eval")
        elif damage == "method":
            _first(meta, "call_module").update(op="call_method", target="__reduce_ex__")
        elif damage == "getattr":
            node = _first(meta, "call_module")
            node.update(op="call_function", target="builtins.getattr",
                        args=[node["args"][0], "__class__"])
        elif damage == "node":
            graph[-1]["args"] = [{"node": "nowhere"}]
        elif damage == "bad tag":
            graph[-1]["args"] = [{"pickle": "gASV"}]
        elif damage == "module name":
            meta["modules"] = {(k if k != "layers.1" else 'layers.1")or(print(1'): v
                               for k, v in modules.items()}
        elif damage == "call target":
            _first(meta, "call_module")["target"] = 'layers.1")or(print(1'
        elif damage == "keyword":
            _first(meta, "call_module")["kwargs"] = {"dict": [["x=print(1)", 1]]}
        elif damage == "placeholder":
            _first(meta, "placeholder")["target"] = "x=print(1)"
        else:
            meta["channels_last"] = ["layers.9.weight"]

    _rewrite_metadata(path, change)
    with pytest.raises(ModelFileError, match=message) as info:
        deploy.load(path)
    assert str(info.value).startswith(str(path))


def test_the_tagged_encoding_round_trips_what_graphs_and_configs_hold():
    value = {"a": (1, 2.5, float("inf"), float("-inf")), 3: [None, True, "s", slice(1, None, 2)],
             "dtype": torch.float16, "format": torch.channels_last, "device": torch.device("cpu"),
             "size": torch.Size([2, 3]), "dots": Ellipsis, "layout": torch.strided}
    encoded = json.loads(json.dumps(encode_value(value), allow_nan=False))
    decoded = decode_value(encoded)
    assert decoded == value and isinstance(decoded["size"], torch.Size)
    assert isinstance(decoded["a"], tuple) and isinstance(decoded[3], list)
    nan = decode_value(json.loads(json.dumps(encode_value(float("nan")))))
    assert nan != nan
    with pytest.raises(TypeError, match="Schedule"):
        encode_value(Schedule("linear", 0.0, 1.0))


class ViewHead(nn.Module):
    """The common hand-written pattern: conv features flattened with ``view``."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.conv = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.head = nn.Linear(8 * 6 * 6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.hardtanh(self.bn(self.conv(F.hardtanh(self.stem(x)))))
        return self.head(y.view(y.size(0), -1))


def test_a_view_across_channels_survives_the_channels_last_freeze(tmp_path):
    torch.manual_seed(5)
    model = ec.convert(ViewHead(), "bnn", mode="w1a1")
    x = torch.randn(3, 1, 6, 6)
    with torch.no_grad():
        expected = harden(copy.deepcopy(model)).eval()(x)
        frozen = deploy.freeze(model)
        torch.testing.assert_close(frozen(x), expected, rtol=1e-5, atol=1e-5)
    loaded = round_trip(frozen, tmp_path, x)
    assert "reshape" in loaded.code and ".view(" not in loaded.code
