"""The packed-layer extension point: a layer family defined and registered in this file alone
is frozen, BatchNorm-folded, saved (in its own compact form) and loaded; the registry and the
bitstream helpers behave."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgecompress import deploy
from edgecompress.deploy import PackedLayer, register_packed
from edgecompress.deploy.packed import (from_bitstream, packed_class, packed_class_for,
                                        to_bitstream)
from edgecompress.errors import UnknownNameError
from edgecompress.layers import BinaryConv2d, BinaryLinear

from .test_deploy import calibrated


class TernaryLinear(nn.Linear):
    """A toy training layer: weights in {-a, 0, +a} (a = one scale per output row, mean |w|
    of the row), w_q = a * sign(w) where |w| > a / 2, else 0."""

    def quantized_weight(self) -> Tensor:
        a = self.weight.abs().mean(dim=1, keepdim=True)
        return torch.where(self.weight.abs() > a / 2, torch.sign(self.weight), 0.0) * a

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.quantized_weight(), self.bias)


@register_packed(TernaryLinear)
class PackedTernaryLinear(PackedLayer):
    """Ternary codes (0: -1, 1: 0, 2: +1), 2 bits each on disk, a per-row scale and a bias."""

    weight_bits = 2

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("codes", torch.ones(out_features, in_features, dtype=torch.uint8))
        self.register_buffer("scale", torch.ones(out_features))
        self.register_buffer("bias", torch.zeros(out_features))
        self.register_buffer("ternary", None, persistent=False)
        self.prepare()

    @classmethod
    def from_trained(cls, layer: TernaryLinear) -> "PackedTernaryLinear":
        new = cls(layer.in_features, layer.out_features)
        with torch.no_grad():
            w = layer.quantized_weight()
            new.scale.copy_(w.abs().amax(dim=1).clamp_min(1e-12))
            new.codes.copy_((torch.sign(w) + 1).to(torch.uint8))
            if layer.bias is not None:
                new.bias.copy_(layer.bias)
        new.prepare()
        return new

    def config(self) -> dict:
        return {"in_features": self.in_features, "out_features": self.out_features}

    def prepare(self) -> None:
        self.ternary = self.codes.to(torch.float32) - 1

    def encode_tensor(self, name: str, value: Tensor) -> Tensor:
        return to_bitstream(value, 2) if name == "codes" else value

    def decode_tensor(self, name: str, stored: Tensor) -> Tensor:
        if name != "codes":
            return stored
        codes = from_bitstream(stored, (self.out_features, self.in_features), 2)
        if int(codes.max()) > 2:
            raise ValueError("holds a ternary code 3")
        return codes

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.ternary) * self.scale + self.bias


def _ternary_net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), TernaryLinear(40, 24), nn.BatchNorm1d(24), nn.ReLU(),
                        TernaryLinear(24, 16, bias=False), nn.Linear(16, 3))
    return calibrated(net, (5, 8))


def test_a_packed_layer_registered_in_one_place_freezes_folds_saves_and_loads(tmp_path):
    net = _ternary_net()
    frozen = deploy.freeze(net)
    assert isinstance(frozen[1], PackedTernaryLinear)
    assert isinstance(frozen[4], PackedTernaryLinear)
    assert isinstance(frozen[2], nn.Identity)  # BatchNorm folded by the protocol's fold_affine
    x = torch.randn(6, 5, 8)
    with torch.no_grad():
        torch.testing.assert_close(frozen(x), net(x), atol=1e-5, rtol=1e-5)
        path = tmp_path / "ternary.safetensors"
        deploy.save(frozen, path)
        loaded = deploy.load(path)
        assert torch.equal(loaded(x), frozen(x))
    # a GraphModule named after the model's class, with its submodule names
    assert isinstance(loaded, torch.fx.GraphModule) and type(loaded).__name__ == "Sequential"
    assert isinstance(loaded.get_submodule("1"), PackedTernaryLinear)
    assert loaded.state_dict().keys() == frozen.state_dict().keys()
    # the codes are on disk at 2 bits each: 40 * 24 + 24 * 16 codes -> 336 bytes, not 1344
    floats = sum(t.numel() * t.element_size() for k, t in frozen.state_dict().items()
                 if not k.endswith("codes"))
    header = 8 + int.from_bytes(path.read_bytes()[:8], "little")
    assert os.path.getsize(path) - header == (40 * 24 + 24 * 16) * 2 // 8 + floats


def test_the_registry_maps_training_classes_to_packed_classes():
    assert packed_class_for(TernaryLinear(2, 2)) is PackedTernaryLinear
    assert PackedTernaryLinear.trained_types == (TernaryLinear,)
    assert packed_class("PackedTernaryLinear") is PackedTernaryLinear
    assert packed_class_for(nn.Linear(2, 2)) is None
    assert packed_class_for(BinaryConv2d(2, 2, 1, weight_quantizer=_pair())) is \
        deploy.PackedBinaryConv2d
    assert packed_class_for(BinaryLinear(2, 2, weight_quantizer=_pair())) is \
        deploy.PackedBinaryLinear

    class Subclass(TernaryLinear):  # the nearest registered base class packs it
        pass

    assert packed_class_for(Subclass(2, 2)) is PackedTernaryLinear
    with pytest.raises(UnknownNameError, match="PackedNothing"):
        packed_class("PackedNothing")
    with pytest.raises(ValueError, match="TernaryLinear is already packed by PackedTernaryLinear"):
        register_packed(TernaryLinear)(type("Other", (PackedLayer,), {}))
    with pytest.raises(TypeError, match="PackedLayer subclasses"):
        register_packed(TernaryLinear)(nn.Linear)


def _pair():
    from edgecompress.quantizers import method_pair
    return method_pair("bnn")


@pytest.mark.parametrize("bits", [1, 2, 3, 5, 8])
def test_bitstreams_round_trip_at_their_size(bits):
    g = torch.Generator().manual_seed(bits)
    codes = torch.randint(0, 2 ** bits, (7, 13), generator=g, dtype=torch.uint8)
    stream = to_bitstream(codes, bits)
    assert stream.dtype == torch.uint8 and stream.numel() == -(-7 * 13 * bits // 8)
    assert torch.equal(from_bitstream(stream, (7, 13), bits), codes)
    with pytest.raises(ValueError, match=f"has {stream.numel() - 1} torch.uint8 values, "
                                         f"expected {stream.numel()} uint8 bytes"):
        from_bitstream(stream[:-1], (7, 13), bits)
