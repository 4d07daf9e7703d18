"""convert warns about binary layers whose inputs are never negative (sign is always +1)."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import edgecompress as ec
from edgecompress.convert import convert
from edgecompress.errors import MeaninglessInputWarning


def w1a1(model: nn.Module, **policy):
    with pytest.warns(MeaninglessInputWarning) as caught:
        out, report = convert(model, "bnn", mode="w1a1", return_report=True, **policy)
    assert len(caught) == 1 and report.warnings == [str(caught[0].message)]
    return out, report, str(caught[0].message)


def no_warning(model: nn.Module, **options) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", MeaninglessInputWarning)
        _, report = convert(model, "bnn", return_report=True, **options)
    assert report.warnings == []


def test_resnet20_with_relu_names_its_binary_convolutions():
    _, report, message = w1a1(ec.models.create("resnet20", width=0.25))
    assert message.startswith("20 layer(s) binarize inputs that are never negative")
    assert "stages.0.0.conv1 (after stem.2 (ReLU))" in message
    assert "stages.0.0.conv2 (after stages.0.0.act1 (ReLU))" in message
    assert "and 15 more" in message and "activation='hardtanh'" in message
    assert "RSign" in message
    assert "warning    20 layer(s)" in str(report)
    assert report.to_dict()["warnings"] == [message]


def test_resnet18_with_relu_through_max_pool_and_shortcuts():
    _, _, message = w1a1(ec.models.create("resnet18", width=0.125))
    # 16 block convolutions and 3 projection shortcuts; the stem's ReLU reaches through MaxPool
    assert message.startswith("19 layer(s)")
    assert "stages.0.0.conv1 (after stem.2 (ReLU))" in message


@pytest.mark.parametrize("name", ["resnet20", "resnet18"])
def test_no_warning_with_hardtanh(name):
    no_warning(ec.models.create(name, width=0.125, activation="hardtanh"), mode="w1a1")


def test_no_warning_for_float_inputs_or_a_hardtanh_mlp():
    no_warning(ec.models.create("resnet20", width=0.25), mode="w1a32")
    no_warning(ec.models.create("mlp", hidden=(16, 16), activation="hardtanh", dropout=0.1),
               mode="w1a1")


class Functional(nn.Module):
    """Two branches joined by ``join``; each branch is a conv followed by ``op``."""

    def __init__(self, op, join) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.a, self.b = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.op, self.join = op, join
        self.head = nn.Linear(8 * 2 * 2, 3)
        self.out = nn.Linear(3, 2)

    def forward(self, x):
        x = self.stem(x)
        y = self.join(self.op(self.a(x), self), self.op(self.b(x), self))
        y = F.max_pool2d(y, 2).flatten(1)
        return self.out(self.head(y))


@pytest.mark.parametrize("op, join, warned", [
    (lambda t, m: F.relu(t), lambda u, v: torch.cat([u, v], dim=1), True),
    (lambda t, m: t.clamp(min=0), lambda u, v: torch.cat((u, v), 1), True),
    (lambda t, m: torch.sigmoid(t), lambda u, v: torch.cat([u, u + v], 1), True),
    (lambda t, m: F.relu(t), lambda u, v: torch.cat([u, u - v], 1), False),  # a difference
    (lambda t, m: F.relu(t), lambda u, v: torch.cat([u, u + (-1.0)], 1), False),
    (lambda t, m: m.bn(F.relu(t)), lambda u, v: torch.cat([u, v], 1), False),  # BatchNorm
    (lambda t, m: t.clamp(min=-1), lambda u, v: torch.cat([u, v], 1), False),
    (lambda t, m: F.hardtanh(t), lambda u, v: torch.cat([u, v], 1), False),
])
def test_functional_producers_and_the_ops_that_keep_non_negativity(op, join, warned):
    net = Functional(op, join)
    if warned:
        _, _, message = w1a1(net, include=["head"])
        assert message.startswith("1 layer(s)") and "head (after " in message
    else:
        no_warning(net, mode="w1a1", include=["head"])


class Untraceable(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self, activation: nn.Module) -> None:
        super().__init__()
        self.inp, self.act = nn.Linear(6, 8), activation
        self.mid, self.out = nn.Linear(8, 8), nn.Linear(8, 2)

    def forward(self, x):
        h = self.act(self.inp(x))
        if h.sum() > -1e9:
            h = self.mid(h)
        return self.out(h)


def test_untraceable_model_is_checked_once_on_its_first_forward():
    with warnings.catch_warnings():
        warnings.simplefilter("error", MeaninglessInputWarning)
        net, report = convert(Untraceable(nn.ReLU()), "bnn", mode="w1a1", return_report=True)
    assert report.warnings == []  # nothing known before a forward
    with pytest.warns(MeaninglessInputWarning, match=r"1 layer\(s\) .*: mid \(every input of "
                                                     r"the first forward was >= 0"):
        net(torch.randn(4, 6))
    assert len(report.warnings) == 1 and "mid" in report.warnings[0]
    assert not net.mid._forward_pre_hooks and not net._forward_hooks  # removed after use
    with warnings.catch_warnings():
        warnings.simplefilter("error", MeaninglessInputWarning)
        net(torch.randn(4, 6))


def test_untraceable_model_with_signed_inputs_gets_no_warning():
    net, report = convert(Untraceable(nn.Hardtanh()), "bnn", mode="w1a1", return_report=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", MeaninglessInputWarning)
        net(torch.randn(16, 6))
    assert report.warnings == [] and not net._forward_hooks


def test_a_layer_hidden_inside_a_module_kept_whole_is_checked_on_the_first_forward():
    """torch.fx keeps torch.nn's own modules whole: the binary feed-forward layers inside a
    TransformerEncoderLayer are not in the graph, so they get the first-forward check."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0),
                        nn.Linear(8, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error", MeaninglessInputWarning)
        out, report = convert(net, "bnn", mode="w1a1", return_report=True)
    assert [n for n, _, _ in report.converted] == ["1.linear1", "1.linear2"]
    with pytest.warns(MeaninglessInputWarning, match=r"^1 layer\(s\) .*: 1.linear2 \(every"):
        out(torch.randn(3, 5, 4))
    assert len(report.warnings) == 1


class _Block(nn.Module):
    """pre -> (LayerNorm | ReLU) -> mid -> ReLU -> post: "mid" is the one converted layer
    with inputs after a ReLU or signed ones, "post" always after a ReLU."""

    def __init__(self, signed_inputs: bool) -> None:
        super().__init__()
        self.pre, self.mid, self.post = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8)
        self.between = nn.LayerNorm(8) if signed_inputs else nn.ReLU()
        self.mid2 = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.post(torch.relu(self.mid2(torch.relu(self.mid(self.between(self.pre(x)))))))


def test_unsigned_quantized_inputs_that_are_negative_are_named_after_the_first_forward():
    torch.manual_seed(0)
    model, report = convert(_Block(signed_inputs=True), "uniform", bits=4, return_report=True)
    assert report.warnings == []  # the check runs on the first forward
    with pytest.warns(MeaninglessInputWarning) as caught:
        model(torch.randn(16, 8))
    message = str(caught[0].message)
    assert len(caught) == 1 and report.warnings == [message]
    assert message.startswith("1 layer(s) quantize signed inputs with an unsigned quantizer")
    assert "mid (" in message and "of its first inputs < 0" in message and "mid2" not in message
    assert "activation_signed=True" in message
    with warnings.catch_warnings():  # once only: the hooks are gone
        warnings.simplefilter("error", MeaninglessInputWarning)
        model(torch.randn(16, 8))
    assert not model.mid._forward_pre_hooks and not model._forward_hooks


@pytest.mark.parametrize("signed_inputs, options", [(False, {}),
                                                    (True, {"activation_signed": True}),
                                                    (True, {"activation_bits": None})])
def test_no_unsigned_input_warning_after_a_relu_or_with_signed_or_float_inputs(signed_inputs,
                                                                                 options):
    torch.manual_seed(0)
    model = convert(_Block(signed_inputs), "uniform", bits=4, **options)
    with warnings.catch_warnings():
        warnings.simplefilter("error", MeaninglessInputWarning)
        model(torch.randn(16, 8))


def test_the_unsigned_input_check_waits_for_an_eager_forward_when_compiled():
    torch.manual_seed(0)
    model = convert(_Block(signed_inputs=True), "uniform", bits=4).eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("error", MeaninglessInputWarning)
        torch.compile(model, fullgraph=True, backend="eager")(torch.randn(16, 8))
    with pytest.warns(MeaninglessInputWarning):
        model(torch.randn(16, 8))
