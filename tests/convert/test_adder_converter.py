"""convert(model, "adder"): policy, copied weights, eta, a training step, bad options."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import edgecompress as ec
from edgecompress.errors import ConversionError
from edgecompress.layers import AdderConv2d, AdderLinear

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
