"""The shift converter passes a method's own options (deepshift-q's clamp_latent) through."""

from __future__ import annotations

import pytest
from torch import nn

import edgecompress as ec
from edgecompress.errors import ConversionError


def test_deepshift_q_clamp_latent_option_reaches_its_layers_and_others_refuse_it():
    net = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 2))
    assert ec.convert(net, "deepshift-q")[1].weight_param.clamp_latent is True
    assert ec.convert(net, "deepshift-q", clamp_latent=False)[1].weight_param.clamp_latent is False
    assert "clamp_latent" in ec.convert.method_options("deepshift-q", {})
    assert "clamp_latent" not in ec.convert.method_options("s3", {})
    with pytest.raises(ConversionError, match="clamp_latent"):
        ec.convert(net, "s3", clamp_latent=False)
    with pytest.raises(ConversionError, match="True or False"):
        ec.convert(net, "deepshift-q", clamp_latent="yes")
