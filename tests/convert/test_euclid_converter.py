"""convert(model, "euclid"): policy, copied weights, the trainer stepping theta, state dicts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import edgecompress as ec
from edgecompress.errors import ConversionError
from edgecompress.layers import EuclidConv2d, EuclidLinear
from edgecompress.train import ScheduleStepper, TrainConfig, Trainer

from .distance_checks import check_not_converted_again, convert_with_default_policy, tiny_convnet

HOMOTOPY = {"kind": "linear", "start": 0.0, "end": 1.0}


def test_convert_replaces_inner_layers_keeps_first_and_last_and_copies_weights():
    model, euclid = convert_with_default_policy("euclid", "EuclidConv2d")
    assert euclid.features[4].theta.item() == 1.0
    everything = ec.convert(model, "euclid", keep_first_last=False, theta=HOMOTOPY)
    assert isinstance(everything.classifier, EuclidLinear)
    assert isinstance(everything.features[0], EuclidConv2d)
    assert everything.edgecompress_spec["method"] == {  # a recipe can rebuild it
        "name": "euclid", "keep_first_last": False, "include": None, "exclude": None,
        "theta": HOMOTOPY}


def test_theta_zero_conversion_computes_what_the_float_model_computes():
    model = tiny_convnet().double().eval()
    x = torch.randn(2, 1, 28, 28, dtype=torch.float64)
    converted = ec.convert(model, "euclid", theta=0.0, keep_first_last=False)
    assert torch.equal(converted(x), model(x))
    assert not torch.allclose(ec.convert(model, "euclid", keep_first_last=False)(x), model(x))


def test_weight_scale_multiplies_weights_and_biases_and_keeps_a_batchnormed_model_at_theta_0():
    model = tiny_convnet(3).double().train()  # batch statistics: BatchNorm removes the scale
    x = torch.randn(8, 1, 28, 28, dtype=torch.float64)
    scaled = ec.convert(model, "euclid", theta=0.0, weight_scale=50.0)
    everything = ec.convert(model, "euclid", keep_first_last=False, weight_scale=50.0)
    converted = [(n, m) for n, m in everything.named_modules()
                 if isinstance(m, (EuclidConv2d, EuclidLinear))]
    assert len(converted) == 4 and everything.classifier.bias is not None
    for name, module in converted:
        source = model.get_submodule(name)
        assert torch.equal(module.weight, 50.0 * source.weight)
        assert module.bias is None or torch.equal(module.bias, 50.0 * source.bias)
    assert scaled.edgecompress_spec["method"]["weight_scale"] == 50.0
    # the converted conv is followed by a BatchNorm: only its eps sees the factor
    torch.testing.assert_close(scaled(x), model(x), rtol=1e-4, atol=1e-4)


def test_a_larger_weight_scale_brings_the_euclid_layer_towards_the_product():
    """At theta = 1 the output is alpha x.w - 1/2 ||x||^2 - alpha^2/2 ||w||^2 (+ alpha b):
    divided by alpha, it tends to x.w - alpha/2 ||w||^2 as alpha grows; per channel after
    subtracting its constant, to the ordinary layer."""
    conv = nn.Conv2d(4, 6, 3, padding=1, bias=False).double()
    x = torch.rand(2, 4, 8, 8, dtype=torch.float64)
    product = conv(x)

    def gap(alpha: float) -> float:
        layer = ec.convert(nn.Sequential(conv), "euclid", keep_first_last=False,
                           weight_scale=alpha)[0]
        out = layer(x) / alpha
        out = out - out.mean((0, 2, 3), keepdim=True)
        return (out - (product - product.mean((0, 2, 3), keepdim=True))).abs().max().item()

    assert gap(1000.0) < gap(10.0) / 50 < gap(1.0)


@pytest.mark.parametrize("scale", [0, -1.0, float("nan"), float("inf"), True, "2"])
def test_bad_weight_scale_is_a_conversion_error_naming_it(scale):
    with pytest.raises(ConversionError, match=r"weight_scale .* must be a finite number > 0"):
        ec.convert(tiny_convnet(), "euclid", weight_scale=scale)


def test_bad_theta_is_a_conversion_error_before_converting():
    with pytest.raises(ConversionError, match=r"theta must be a number in \[0, 1\].*got 2"):
        ec.convert(tiny_convnet(), "euclid", theta=2)
    with pytest.raises(ConversionError, match=r"no option\(s\) \['bits'\]"):
        ec.convert(tiny_convnet(), "euclid", bits=3)


def test_converted_layers_are_not_converted_again_by_another_method():
    check_not_converted_again("euclid", "bnn", EuclidConv2d)


def test_state_dict_round_trip_restores_weights_and_theta():
    source = ec.convert(tiny_convnet(0), "euclid", theta=HOMOTOPY)
    for module in source.modules():
        if isinstance(module, EuclidConv2d):
            module.set_param("theta", 0.75)
    target = ec.convert(tiny_convnet(1), "euclid", theta=HOMOTOPY)
    target.load_state_dict(source.state_dict())
    assert target.features[4].theta.item() == 0.75
    source.eval(), target.eval()
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(target(x), source(x))


def test_the_trainer_steps_theta_from_product_to_distance_and_the_loss_goes_down():
    train = ec.data.load("mnist-bundled", split="train", limit=200)
    model = ec.convert(tiny_convnet(), "euclid", theta=HOMOTOPY)
    trainer = Trainer(model, train, None, TrainConfig(epochs=3, batch_size=50, optimizer="adam",
                                                      lr=1e-2, progress=False))
    assert any(isinstance(cb, ScheduleStepper) for cb in trainer.callbacks)
    trainer.fit()
    assert [h["theta"] for h in trainer.history] == [0.0, 0.5, 1.0]
    assert all(m.theta.item() == 1.0 for m in model.modules()
               if isinstance(m, (EuclidConv2d, EuclidLinear)))
    losses = [h["train_loss"] for h in trainer.history]
    assert losses[-1] < losses[0]


def test_a_theta_ramp_reaches_one_early_and_holds():
    train = ec.data.load("mnist-bundled", split="train", limit=100)
    model = ec.convert(tiny_convnet(), "euclid", theta={**HOMOTOPY, "ramp": 3})
    trainer = Trainer(model, train, None, TrainConfig(epochs=4, batch_size=50, progress=False))
    trainer.fit()
    assert [h["theta"] for h in trainer.history] == [0.0, 0.5, 1.0, 1.0]


def test_a_theta_ramp_longer_than_the_run_stops_before_training():
    from edgecompress.errors import ScheduleError

    train = ec.data.load("mnist-bundled", split="train", limit=100)
    model = ec.convert(tiny_convnet(), "euclid", theta={**HOMOTOPY, "ramp": 5})
    trainer = Trainer(model, train, None, TrainConfig(epochs=3, batch_size=50, progress=False))
    with pytest.raises(ScheduleError, match=r"schedule of 'theta' in layer 'features.4': "
                                            r"ramp=5 epochs is longer than the run \(3 epochs\)"):
        trainer.fit()
    assert trainer.history == []


def test_a_euclidnet_from_scratch_trains_a_few_steps():
    torch.manual_seed(5)
    train = ec.data.load("mnist-bundled", split="train", limit=200)
    model = ec.convert(tiny_convnet(), "euclid", theta=1.0)
    trainer = Trainer(model, train, None, TrainConfig(epochs=3, batch_size=50, optimizer="adam",
                                                      lr=1e-2, progress=False))
    trainer.fit()
    losses = [h["train_loss"] for h in trainer.history]
    assert losses[-1] < losses[0]


def test_summary_counts_euclid_layers_like_the_layers_they_replace():
    model = tiny_convnet()
    plain = ec.summary(model, (1, 28, 28))
    euclid = ec.summary(ec.convert(model, "euclid", keep_first_last=False), (1, 28, 28))
    assert euclid.macs_by_precision == plain.macs_by_precision
    assert euclid.params_by_bits == plain.params_by_bits


def test_freeze_save_load_keep_the_distance_layers_exact(tmp_path):
    """Freezing must not fold the following BatchNorm into a Euclid layer's weights (that is
    only right for products) and the saved file must compute the same outputs."""
    from edgecompress import deploy
    model = ec.convert(tiny_convnet(), "euclid").eval()
    with torch.no_grad():  # BatchNorm statistics that a wrong fold would change
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-1, 1), module.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 1, 28, 28)
    frozen = deploy.freeze(model)
    torch.testing.assert_close(frozen(x), model(x))
    deploy.save(frozen, tmp_path / "euclid.ecm")
    torch.testing.assert_close(deploy.load(tmp_path / "euclid.ecm")(x), model(x))


def _first_forward_warnings(model: nn.Module, x: torch.Tensor) -> list[str]:
    import warnings

    from edgecompress.errors import MeaninglessInputWarning
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model(x), model(x)  # the check runs on the first forward only
    return [str(w.message) for w in caught if w.category is MeaninglessInputWarning]


def test_a_shared_term_swamping_the_channels_warns_once_naming_the_layers_and_the_fix():
    model = tiny_convnet(2)
    x = torch.rand(4, 1, 28, 28) * 3  # inputs well above the weights' scale, as after a ReLU
    euclid, report = ec.convert(model, "euclid", theta=HOMOTOPY, return_report=True)
    found = _first_forward_warnings(euclid, x)  # at theta 0 now, judged at the schedule's end
    assert len(found) == 1 and found == report.warnings
    assert "2 layer(s) output mostly the per-patch -theta/2 ||x||^2" in found[0]
    assert "features.4 (shared part" in found[0] and "weight_scale" in found[0]
    assert _first_forward_warnings(ec.convert(model, "euclid", weight_scale=1000.0), x) == []
    assert _first_forward_warnings(ec.convert(model, "euclid", theta=0.0), x) == []


def test_the_shared_ratio_is_the_spread_of_the_group_mean_over_the_rest():
    conv = EuclidConv2d(4, 6, 3, padding=1, groups=2).double()
    x = torch.rand(3, 4, 6, 6, dtype=torch.float64) * 2
    y = conv(x) - conv.bias.view(1, -1, 1, 1)
    y = y - y.mean((0, 2, 3), keepdim=True)
    g = y.unflatten(1, (2, 3))
    shared = g.mean(2, keepdim=True)
    expected = (shared.std() / (g - shared).std()).item()
    assert conv.shared_ratio(x) == pytest.approx(expected, rel=1e-9)
    with torch.no_grad():
        conv.weight.mul_(1000.0)
    assert conv.shared_ratio(x) < 2 < expected  # the mean of x.w over 3 channels stays


def test_the_check_leaves_quantizers_alone_on_the_first_forward():
    """The check reruns the float layer, never its input quantizer (which may be observing its
    inputs for calibration): one quantizer call per layer on the checked forward."""
    model = ec.convert(tiny_convnet(2), ["euclid", {"name": "uniform", "bits": 8}])
    calls: dict[str, int] = {}
    for name, module in model.named_modules():
        if name.endswith("input_quantizer"):
            module.register_forward_hook(
                lambda m, i, o, n=name: calls.__setitem__(n, calls.get(n, 0) + 1))
    found = _first_forward_warnings(model, torch.rand(4, 1, 28, 28) * 3)
    assert len(found) == 1 and "features.4" in found[0]  # the check ran
    assert calls == {"features.4.input_quantizer": 2, "features.8.input_quantizer": 2}  # 2 forwards
