"""The model zoo: shapes, parameter counts against hand counts, layer order, round-trips."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgecompress import models
from edgecompress.errors import UnknownNameError

SMALL = {  # name -> (options, input shape) kept tiny so the suite stays fast
    "mlp": ({"hidden": (16,)}, (1, 28, 28)),
    "vgg-small": ({"width": 0.0625}, (3, 32, 32)),
    "resnet20": ({"width": 0.25}, (3, 32, 32)),
    "resnet32": ({"width": 0.25, "shortcut": "A"}, (3, 32, 32)),
    "resnet56": ({"width": 0.25}, (3, 16, 16)),
    "resnet18": ({"width": 0.125, "stem": "cifar"}, (3, 32, 32)),
    "convnet": ({"width": 0.25}, (1, 28, 28)),
    "kws-resnet": ({"channels": 8, "blocks": 2}, (1, 40, 101)),
    "deit": ({"size": "mini", "depth": 2}, (1, 28, 28)),
    "binary-deit": ({"size": "mini", "depth": 2}, (3, 32, 32)),
    "binaryvit": ({}, (3, 32, 32)),
}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


SEQUENCE = {"lstm-lm"}  # token models, tested in test_lstm_lm.py


def test_every_registered_model_is_covered():
    assert sorted(SMALL.keys() | SEQUENCE) == models.available()


@pytest.mark.parametrize("name", sorted(SMALL))
def test_output_shape_and_gradients(name):
    options, shape = SMALL[name]
    torch.manual_seed(0)
    model = models.create(name, num_classes=7, input_shape=shape, **options)
    out = model(torch.randn(3, *shape))
    assert out.shape == (3, 7)
    out.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", sorted(SMALL))
def test_first_weighted_layer_is_the_stem_and_last_linear_the_classifier(name):
    options, shape = SMALL[name]
    model = models.create(name, input_shape=shape, **options)
    weighted = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert weighted[0].weight.shape[1] in (shape[0], shape[0] * shape[1] * shape[2])
    assert isinstance(weighted[-1], nn.Linear) and weighted[-1].out_features == 10


@pytest.mark.parametrize("name", sorted(SMALL))
def test_state_dict_round_trip(name):
    options, shape = SMALL[name]
    torch.manual_seed(1)
    a = models.create(name, input_shape=shape, **options).eval()
    torch.manual_seed(2)
    b = models.create(name, input_shape=shape, **options).eval()
    x = torch.randn(2, *shape)
    assert not torch.allclose(a(x), b(x))
    b.load_state_dict(a.state_dict())
    assert torch.equal(a(x), b(x))


def test_resnet18_imagenet_parameter_count():
    # stem 3*64*49 + bn 128; stage widths 64,128,256,512 with two blocks each; fc 512*1000+1000
    def block(cin, cout, project):
        convs = 9 * cin * cout + 9 * cout * cout + 2 * 2 * cout
        return convs + (cin * cout + 2 * cout if project else 0)
    stem = 3 * 64 * 49 + 2 * 64
    stages = (block(64, 64, False) * 2 + block(64, 128, True) + block(128, 128, False)
              + block(128, 256, True) + block(256, 256, False)
              + block(256, 512, True) + block(512, 512, False))
    expected = stem + stages + 512 * 1000 + 1000
    assert expected == 11_689_512  # the published torchvision count
    assert n_params(models.create("resnet18", num_classes=1000)) == expected


def test_resnet20_option_a_parameter_count():
    # stem 3*16*9 + bn; 3 stages x 3 blocks of two 3x3 convs + two BNs; no projection params.
    def block(cin, cout):
        return 9 * cin * cout + 9 * cout * cout + 4 * cout
    stem = 3 * 16 * 9 + 2 * 16
    stages = sum(block(cin, c) + 2 * block(c, c) for cin, c in ((16, 16), (16, 32), (32, 64)))
    expected = stem + stages + 64 * 10 + 10
    assert expected == 269_722  # He et al. 2016 report 0.27M
    assert n_params(models.create("resnet20", shortcut="A")) == expected


def test_mlp_parameter_count_and_other_input_shapes():
    model = models.create("mlp", hidden=(256, 256), batchnorm=False)
    assert n_params(model) == 784 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10
    wide = models.create("mlp", input_shape=(3, 32, 32), hidden=(8,))
    assert wide(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_convnet_and_kws_resnet_parameter_counts():
    conv = models.create("convnet")
    bn = lambda c: 2 * c  # noqa: E731  (weight and bias)
    assert n_params(conv) == (9 * 32 + bn(32) + 9 * 32 * 64 + bn(64) + 9 * 64 * 128 + bn(128)
                              + 128 * 10 + 10)
    kws = models.create("kws-resnet", num_classes=12)
    c = 45
    assert n_params(kws) == 9 * c + bn(c) + 3 * 2 * (9 * c * c + bn(c)) + c * 12 + 12


def test_default_input_shapes():
    assert models.create("resnet18").input_shape == (3, 224, 224)
    assert models.create("resnet18", stem="cifar").input_shape == (3, 32, 32)
    assert models.create("mlp").input_shape == (1, 28, 28)


@pytest.mark.slow
def test_torch_compile_matches_eager():
    model = models.create("mlp", hidden=(16,)).eval()
    x = torch.randn(4, 1, 28, 28)
    torch.testing.assert_close(torch.compile(model)(x), model(x))


def test_bad_names_and_options():
    with pytest.raises(UnknownNameError,
                       match="available: binary-deit, binaryvit, convnet, deit, kws-resnet, lstm-lm, mlp"):
        models.create("alexnet")
    with pytest.raises(TypeError, match=r"model 'resnet20' got unknown option\(s\) \['depth_x'\]"):
        models.create("resnet20", depth_x=3)
    with pytest.raises(ValueError, match="activation must be one of"):
        models.create("vgg-small", activation="gelu")
    with pytest.raises(ValueError, match="shortcut must be"):
        models.create("resnet20", shortcut="C")
