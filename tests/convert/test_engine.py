"""The conversion engine: the callable package, graph transforms, lists of methods, options of
methods and objects, and the JSON-safe spec convert writes."""

from __future__ import annotations

import importlib
import json

import pytest
import torch
from torch import nn

import edgecompress as ec
from edgecompress import quantizers
from edgecompress.convert import (BinaryConverter, ConversionReport, Converter, GraphTransform,
                                  ShiftConverter, available_methods, convert, method_options,
                                  register_method)
from edgecompress.errors import ConversionError, RecipeError
from edgecompress.graph import as_graph_module, module_of, trace
from edgecompress.layers import BinaryLinear, ShiftLinear
from edgecompress.recipe import Recipe


@register_method("drop-dropout")
class DropDropout(GraphTransform):
    """Toy whole-model rewrite: remove the Dropout modules with p <= ``max_p`` from the graph."""

    def __init__(self, *, max_p: float = 1.0) -> None:
        self.max_p = max_p

    def apply(self, model: nn.Module) -> nn.Module:
        graph = trace(model)
        modules = dict(model.named_modules())
        for node in list(graph.nodes):
            module = module_of(node, modules)
            if isinstance(module, nn.Dropout) and module.p <= self.max_p:
                node.replace_all_uses_with(node.args[0])
                graph.erase_node(node)
        return as_graph_module(model, graph)


def mlp(dropout: float = 0.2) -> nn.Module:
    """Flatten, then [Linear, BatchNorm1d, Hardtanh, Dropout] at 1-4, 5-8, 9-12, Linear 13."""
    torch.manual_seed(0)
    return ec.models.create("mlp", hidden=[16, 16, 16], activation="hardtanh", dropout=dropout)


def layer_types(model: nn.Module) -> dict[str, str]:
    return {n: type(m).__name__ for n, m in model.named_modules() if n}


# --- the package ---------------------------------------------------------------------------------

def test_package_is_callable_and_its_modules_importable():
    net = mlp()
    out = ec.convert(net, "bnn", mode="w1a1")
    assert isinstance(out.layers[5], BinaryLinear) and out.layers[5].input_bits == 1
    binary = importlib.import_module("edgecompress.convert.binary")
    assert ec.convert.binary is binary and binary.BinaryConverter is BinaryConverter
    assert ec.convert.shift.ShiftConverter is ShiftConverter
    assert "keep_first_last" in str(__import__("inspect").signature(ec.convert))


def test_each_family_registers_its_methods():
    methods = set(available_methods())
    assert set(quantizers.METHODS) <= methods
    assert {"deepshift-q", "deepshift-ps", "s3", "denseshift", "drop-dropout"} <= methods


def test_register_method_takes_converter_or_transform_classes_only():
    with pytest.raises(TypeError, match="Converter or GraphTransform subclass"):
        register_method("not-a-method")(lambda **kw: BinaryConverter("bnn"))


# --- options() -----------------------------------------------------------------------------------

def test_method_options_come_from_the_methods_class():
    policy = {"keep_first_last", "include", "exclude"}
    assert method_options("bnn") == {"mode", "scaling", "activation", "prox", "backward"} | policy
    assert {"mu", "beta"} <= method_options("bnn++")
    with_relax = method_options("bnn++", {"prox": "binaryrelax"})
    assert "lam" in with_relax and "mu" not in with_relax
    assert method_options("s3") == {"bits", "init", "activation_bits"} | policy
    assert method_options("drop-dropout") == {"max_p"}  # no layer policy for a whole-model rewrite
    with pytest.raises(ConversionError, match=r"method 'bnn\+\+': unknown quantizer 'nope'"):
        method_options("bnn++", {"prox": "nope"})

    class Open(Converter):
        def __init__(self, **anything) -> None:
            pass

    assert Open.options("open", {}) is None


# --- graph transforms ----------------------------------------------------------------------------

def test_graph_transform_by_name_rewrites_the_whole_model():
    net = mlp().eval()
    out, report = convert(net, "drop-dropout", return_report=True)
    assert not any(isinstance(m, nn.Dropout) for m in out.modules())
    assert any(isinstance(m, nn.Dropout) for m in net.modules()), "input must stay untouched"
    assert [n for n, _ in report.removed] == ["layers.4", "layers.8", "layers.12"]
    assert "3 removed" in str(report) and report.to_dict()["removed"][0]["type"] == "Dropout"
    x = torch.randn(3, 1, 28, 28)
    torch.testing.assert_close(out(x), net(x))
    assert out.edgecompress_spec["method"] == {"name": "drop-dropout"}
    assert set(out.state_dict()) == set(net.state_dict())


def test_graph_transform_options_and_policy_are_checked():
    net = mlp()
    kept = convert(net, "drop-dropout", max_p=0.1)
    assert sum(isinstance(m, nn.Dropout) for m in kept.modules()) == 3
    with pytest.raises(ConversionError, match=r"'drop-dropout': no option\(s\) \['p'\]; "
                                              r"valid: max_p$"):
        convert(net, "drop-dropout", p=0.5)
    with pytest.raises(ConversionError, match="graph transform of the whole model: "
                                              "keep_first_last, include and exclude apply"):
        convert(net, "drop-dropout", include=["layers.4"])
    with pytest.raises(ConversionError, match="graph transform"):
        convert(net, DropDropout(), keep_first_last=False)


def test_graph_transform_object_drops_the_spec():
    out = convert(mlp(), DropDropout())
    assert not hasattr(out, "edgecompress_spec")


# --- lists of methods ----------------------------------------------------------------------------

def test_a_list_of_methods_is_applied_in_order_with_one_report_and_spec():
    net = mlp()
    steps = ["drop-dropout", {"name": "bnn", "mode": "w1a1", "include": ["layers.5"]},
             {"name": "s3", "bits": 3}]
    out, report = convert(net, steps, return_report=True)
    types = layer_types(out)
    assert isinstance(out.get_submodule("layers.5"), BinaryLinear)
    assert isinstance(out.get_submodule("layers.9"), ShiftLinear)
    assert types["layers.1"] == "Linear" and types["layers.13"] == "Linear"  # first/last
    assert "layers.4" not in types
    assert report.method == "drop-dropout -> bnn -> s3"
    assert [n for n, _, _ in report.converted] == ["layers.5", "layers.9"]
    # layers.9 was "not included" by bnn but converted by s3: it is not listed as kept
    assert {n: r for n, _, r in report.kept} == {"layers.1": "first layer",
                                                 "layers.13": "last layer"}
    spec = out.edgecompress_spec["method"]
    assert [s["name"] for s in spec] == ["drop-dropout", "bnn", "s3"]
    assert spec[1]["include"] == ["layers.5"] and spec[2]["bits"] == 3
    # the spec rebuilds the same model
    again = convert(mlp(), spec)
    assert layer_types(again) == types
    again.load_state_dict(out.state_dict())


def test_sequential_convert_calls_record_the_same_list():
    once = convert(mlp(), [{"name": "bnn", "include": ["layers.5"]}, "s3"])
    twice = convert(convert(mlp(), "bnn", include=["layers.5"]), "s3")
    assert once.edgecompress_spec == twice.edgecompress_spec
    assert layer_types(once) == layer_types(twice)


def test_options_with_a_list_or_mapping_belong_inside_it():
    with pytest.raises(ConversionError, match="inside its mapping; got include, mode"):
        convert(mlp(), [{"name": "bnn"}], mode="w1a1", include=["layers.5"])
    with pytest.raises(ConversionError, match="empty list"):
        convert(mlp(), [])
    with pytest.raises(ConversionError, match="mapping with a 'name', got \\{'mode': 'w1a1'\\}"):
        convert(mlp(), [{"mode": "w1a1"}])
    with pytest.raises(ConversionError, match="or a list of those, got 3"):
        convert(mlp(), 3)


# --- a Converter object takes only the policy options --------------------------------------------

def test_options_next_to_a_converter_object_are_an_error_not_ignored():
    net = mlp()
    with pytest.raises(ConversionError, match=r"option\(s\) \['mode'\] cannot be given to "
                                              r"convert\(\) with a BinaryConverter object.*"
                                              r"pass them to its constructor"):
        convert(net, BinaryConverter("bnn"), mode="w1a1")
    out = convert(net, BinaryConverter("bnn", mode="w1a1"), keep_first_last=False,
                  exclude=["layers.13"])
    assert out.layers[1].input_bits == 1 and isinstance(out.layers[13], nn.Linear)
    assert not hasattr(out, "edgecompress_spec")  # an object cannot be written down


# --- the spec is JSON -----------------------------------------------------------------------------

def test_spec_records_schedules_as_mappings_and_drops_what_it_cannot_write():
    mu = quantizers.Schedule("linear", 0.0, 2.0)
    out = convert(mlp(), "bnn++", mu=mu, include=("layers.5",))
    method = json.loads(json.dumps(out.edgecompress_spec))["method"]
    assert method["mu"] == {"kind": "linear", "start": 0.0, "end": 2.0, "per": "epoch"}
    assert method["include"] == ["layers.5"]
    rebuilt = convert(mlp(), method)
    assert rebuilt.layers[5].weight_quantizer.prox.schedules["mu"] == mu
    # a quantizer object or a class rule has no written form: no spec rather than a broken one
    assert not hasattr(convert(mlp(), "pc", prox=quantizers.get("proxquant")),
                       "edgecompress_spec")
    assert not hasattr(convert(mlp(), "bnn", exclude=[nn.Linear]), "edgecompress_spec")
    # a later method cannot bring back a spec that was dropped
    assert not hasattr(convert(convert(mlp(), BinaryConverter("bnn")), "s3"), "edgecompress_spec")


# --- recipes -------------------------------------------------------------------------------------

def test_a_registered_transform_is_usable_in_a_recipe():
    recipe = Recipe.from_dict({
        "model": {"name": "mlp", "hidden": [16, 16], "dropout": 0.1, "activation": "hardtanh"},
        "data": "mnist-bundled",
        "method": [{"name": "drop-dropout", "max_p": 0.5}, {"name": "bnn", "mode": "w1a1"}]})
    model, report = recipe.build_model(10, (1, 28, 28))
    assert report.method == "drop-dropout -> bnn" and len(report.removed) == 2
    assert isinstance(model.get_submodule("layers.5"), BinaryLinear)
    with pytest.raises(RecipeError, match=r"'method\[0\].include'.*valid keys of method\[0\] "
                                          r"'drop-dropout': name, max_p$"):
        Recipe.from_dict({"model": "mlp", "data": "mnist-bundled",
                          "method": [{"name": "drop-dropout", "include": ["x"]}, "bnn"]})


def test_report_lists_every_section():
    report = ConversionReport("bnn", converted=[("a", "Linear", "BinaryLinear")],
                              kept=[("b", "Linear", "last layer")], removed=[("c", "Dropout")],
                              warnings=["careful"])
    text = str(report)
    for line in ("converted  a", "kept       b", "removed    c", "warning    careful"):
        assert line in text
    assert report.to_dict()["warnings"] == ["careful"]


def test_transform_report_names_each_change_once_at_its_top_most_module():
    class BinarizeOne(GraphTransform):
        def apply(self, model: nn.Module) -> nn.Module:
            from edgecompress.graph import replace_submodule

            replace_submodule(model, "layers.5", BinaryLinear.from_float(
                model.layers[5], weight_quantizer=quantizers.method_pair("bnn")))
            return model

    _, report = convert(mlp(), BinarizeOne(), return_report=True)
    assert report.converted == [("layers.5", "Linear", "BinaryLinear")]  # not its quantizers
    assert report.removed == [] and report.method == "BinarizeOne"
