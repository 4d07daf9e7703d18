"""ONNX export: onnxruntime computes what PyTorch computes, for float and binarized models."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import edgecompress as ec
from edgecompress.deploy import export_onnx
from edgecompress.errors import ConversionError
from edgecompress.layers import harden

pytestmark = pytest.mark.slow  # every test here exports through torch.export


def run_onnx(path, x: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


def calibrated(model, shape):
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, *shape))
    return model.eval()


CASES = [  # model, options, method, mode, input shape
    ("mlp", {"hidden": (64, 48)}, None, None, (1, 28, 28)),
    ("mlp", {"hidden": (64, 48)}, "bnn", "w1a32", (1, 28, 28)),
    ("mlp", {"hidden": (64, 48)}, "bnn++", "w1a1", (1, 28, 28)),
    ("resnet20", {"width": 0.25}, "bnn", "w1a1", (3, 32, 32)),
]


@pytest.mark.parametrize("name, options, method, mode, shape", CASES)
def test_onnxruntime_matches_the_deployed_forward(tmp_path, name, options, method, mode, shape):
    torch.manual_seed(0)
    model = ec.models.create(name, activation="hardtanh", **options)
    if method:
        model = ec.convert(model, method, mode=mode)
    model = calibrated(model, shape)
    before = copy.deepcopy(model.state_dict())
    path = export_onnx(model, tmp_path / "model.onnx", shape)
    onnx.checker.check_model(onnx.load(str(path)))
    reference = harden(copy.deepcopy(model)).eval()
    for batch in (1, 3):  # the batch dimension is dynamic
        x = torch.randn(batch, *shape)
        with torch.no_grad():
            expected = reference(x).numpy()
        got = run_onnx(path, x)
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)
        assert (got.argmax(1) == expected.argmax(1)).all()
    # the user's model is untouched: same weights, quantizers not hardened
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    if method == "bnn++":
        assert "ProxConnectProx" in repr(model)


def test_training_form_export_keeps_the_scheduled_prox(tmp_path):
    torch.manual_seed(1)
    model = calibrated(ec.convert(ec.models.create("mlp", hidden=(32, 32), activation="hardtanh"),
                                  "bnn++", mode="w1a32"), (1, 28, 28))  # mu = 0: F is smooth
    path = export_onnx(model, tmp_path / "soft.onnx", hard=False)  # zoo input_shape
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        soft, hard = model(x).numpy(), harden(copy.deepcopy(model))(x).numpy()
    got = run_onnx(path, x)
    np.testing.assert_allclose(got, soft, atol=1e-4, rtol=1e-4)
    assert not np.allclose(got, hard, atol=1e-3)


def test_bad_requests_are_rejected_clearly(tmp_path):
    model = ec.models.create("mlp", hidden=(8,))
    with pytest.raises(ConversionError, match="input_shape must be the positive sizes"):
        export_onnx(model, tmp_path / "m.onnx", (0, 28))
    net = ec.models.create("mlp", hidden=(8, 8), activation="hardtanh")
    frozen = ec.deploy.freeze(ec.convert(net, "bnn", mode="w1a1"))
    with pytest.raises(ConversionError, match="export the model before freeze"):
        export_onnx(frozen, tmp_path / "f.onnx", (1, 28, 28))


def test_missing_onnx_packages_are_named_with_the_install_command(tmp_path, monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxscript" else real(name, *a))
    with pytest.raises(ConversionError, match=r'needs onnxscript: pip install "edgecompress\[onnx\]"'):
        export_onnx(ec.models.create("mlp", hidden=(8,)), tmp_path / "m.onnx", (1, 28, 28))
