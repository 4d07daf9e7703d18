"""convert(model, "adder"): policy, copied weights, eta, a training step, bad options; then
"uniform" in a chain: the quantized AdderNet."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import edgecompress as ec
from edgecompress.errors import ConversionError
from edgecompress.layers import AdderConv2d, AdderLinear, UniformAdderConv2d

from .distance_checks import check_not_converted_again, convert_with_default_policy, tiny_convnet


def test_convert_replaces_inner_layers_keeps_first_and_last_and_copies_weights():
    model, adder = convert_with_default_policy("adder", "AdderConv2d")
    assert adder.features[4].eta == 0.2
    everything = ec.convert(model, "adder", keep_first_last=False, eta=None)
    assert isinstance(everything.classifier, AdderLinear)
    assert isinstance(everything.features[0], AdderConv2d) and everything.features[0].eta is None
    assert everything.edgecompress_spec["method"] == {  # a recipe can rebuild it
        "name": "adder", "keep_first_last": False, "include": None, "exclude": None,
        "eta": None}


def test_a_converted_model_trains_one_step_and_its_loss_is_finite():
    model = ec.convert(tiny_convnet(), "adder")
    x, y = torch.randn(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    before = model.features[4].weight.detach().clone()
    torch.optim.SGD(model.parameters(), lr=0.01).step()
    assert torch.isfinite(loss) and not torch.equal(model.features[4].weight, before)


def test_bad_options_are_conversion_errors_before_converting():
    with pytest.raises(ConversionError, match=r"eta .* must be a positive number or None"):
        ec.convert(tiny_convnet(), "adder", eta=-1)
    with pytest.raises(ConversionError, match=r"no option\(s\) \['theta'\]"):
        ec.convert(tiny_convnet(), "adder", theta=1.0)


def test_converted_layers_are_not_converted_again_by_another_method():
    check_not_converted_again("adder", "euclid", AdderConv2d)


def test_uniform_after_adder_quantizes_the_adder_layers_and_keeps_first_and_last_float():
    """["adder", uniform 8-bit] (the benchmark's 8-bit AdderNet): the inner adder layers become
    UniformAdderConv2d with the weights and eta copied; the first and last layers, kept float
    by "adder", are kept by "uniform" too; the spec lists both methods; one step trains."""
    model = ec.convert(tiny_convnet(), "adder", eta=0.1)
    quantized, report = ec.convert(
        model, {"name": "uniform", "bits": 8, "activation_bits": 8}, return_report=True)
    assert [(n, s, t) for n, s, t in report.converted] == [
        ("features.4", "AdderConv2d", "UniformAdderConv2d"),
        ("features.8", "AdderConv2d", "UniformAdderConv2d")]
    assert {n: r for n, _, r in report.kept} == {"features.0": "first layer",
                                                 "classifier": "last layer"}
    layer = quantized.features[4]
    assert isinstance(layer, UniformAdderConv2d) and layer.eta == 0.1
    assert (layer.weight_bits, layer.input_bits) == (8, 8)
    assert torch.equal(layer.weight, model.features[4].weight)
    assert type(quantized.features[0]) is nn.Conv2d and type(quantized.classifier) is nn.Linear
    chained = ec.convert(tiny_convnet(), ["adder", {"name": "uniform", "bits": 8,
                                                    "activation_bits": 8}])
    assert [type(chained.features[i]) for i in (0, 4, 8)] == [nn.Conv2d, UniformAdderConv2d,
                                                               UniformAdderConv2d]
    assert [m["name"] for m in chained.edgecompress_spec["method"]] == ["adder", "uniform"]
    x, y = torch.randn(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    loss = nn.functional.cross_entropy(chained(x), y)
    loss.backward()
    before = chained.features[4].weight.detach().clone()
    torch.optim.SGD(chained.parameters(), lr=0.01).step()
    assert torch.isfinite(loss) and not torch.equal(chained.features[4].weight, before)
    assert chained.features[4].input_quantizer.step.grad is not None
