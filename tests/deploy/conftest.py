"""Fixtures shared by the deploy tests."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import edgecompress as ec
from edgecompress import deploy


@pytest.fixture(scope="module")
def frozen_resnet20() -> nn.Module:
    """A frozen W1A1 ResNet-20 (CIFAR, width 0.25, hardtanh; random weights, seed 0)."""
    torch.manual_seed(0)
    model = ec.models.create("resnet20", width=0.25, activation="hardtanh").eval()
    return deploy.freeze(ec.convert(model, "bnn", mode="w1a1"))
