"""Shared by the distance-converter tests (Euclid, adder): the tiny model they convert and the
default policy every distance method keeps."""

from __future__ import annotations

import torch
from torch import nn

import edgecompress as ec


def tiny_convnet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return ec.models.create("convnet", width=0.25)


def convert_with_default_policy(method: str, conv_type: str) -> tuple[nn.Module, nn.Module]:
    """The tiny model and ``convert(model, method)``, checked: the inner convolutions became
    ``conv_type`` with the weights copied, the first and last layers stayed float."""
    model = tiny_convnet()
    converted, report = ec.convert(model, method, return_report=True)
    assert [(n, s, t) for n, s, t in report.converted] == [
        ("features.4", "Conv2d", conv_type), ("features.8", "Conv2d", conv_type)]
    assert {n: r for n, _, r in report.kept} == {"features.0": "first layer",
                                                 "classifier": "last layer"}
    assert torch.equal(converted.features[4].weight, model.features[4].weight)
    return model, converted


def check_not_converted_again(method: str, other: str, layer_type: type) -> None:
    """A model converted by ``method`` converted by ``other``: its ``layer_type`` layers stay."""
    converted = ec.convert(tiny_convnet(), method)
    again, report = ec.convert(converted, other, return_report=True)
    assert isinstance(again.features[4], layer_type)
    assert "features.4" not in {n for n, _, _ in report.converted}
