"""WeightFlipMonitor: flip rates and latent histograms against hand counts; resume state."""

from __future__ import annotations

import torch
from torch import nn

from edgecompress.analysis import WeightFlipMonitor, plot_flip_rates, plot_latent_histograms
from edgecompress.analysis.diagnostics import histogram
from edgecompress.layers import BinaryLinear
from edgecompress.quantizers import method_pair


class FakeTrainer:
    def __init__(self, model):
        self.model = model


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), BinaryLinear(4, 5, weight_quantizer=method_pair("bnn")),
                         nn.Linear(5, 2))


def test_flip_rate_counts_exactly_the_weights_that_changed_sign():
    model = make_model()
    monitor = WeightFlipMonitor()
    trainer = FakeTrainer(model)
    monitor.on_fit_start(trainer)
    layer = model[1]
    with torch.no_grad():
        flat = layer.weight.view(-1)
        flat[:3] = -flat[:3]                        # 3 of 20 weights change sign
        flat[3] = flat[3] * 2                       # magnitude only: no flip
    metrics: dict = {}
    monitor.on_epoch_end(trainer, 0, metrics)
    assert metrics["flip_rate"] == metrics["sign_flip_rate"] == 3 / 20
    monitor.on_epoch_end(trainer, 1, metrics)       # nothing changed since the last epoch
    assert metrics["flip_rate"] == 0.0
    assert sum(metrics["latent_hist"]) == 20


def test_monitor_state_survives_a_checkpoint_round_trip(tmp_path):
    model = make_model()
    monitor = WeightFlipMonitor()
    monitor.on_fit_start(FakeTrainer(model))
    torch.save(monitor.state_dict(), tmp_path / "s.pt")
    restored = WeightFlipMonitor()
    restored.load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True))
    restored.on_fit_start(FakeTrainer(model))
    with torch.no_grad():
        model[1].weight.view(-1)[0] *= -1
    metrics: dict = {}
    restored.on_epoch_end(FakeTrainer(model), 0, metrics)
    assert metrics["flip_rate"] == 1 / 20


def test_histogram_bins_and_clipping():
    edges = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64)
    values = torch.tensor([-5.0, -0.5, 0.0, 0.5, 0.99, 7.0], dtype=torch.float64)
    assert histogram(values, edges) == [2, 4]


def test_float_models_report_nothing():
    monitor = WeightFlipMonitor()
    trainer = FakeTrainer(nn.Linear(2, 2))
    monitor.on_fit_start(trainer)
    metrics: dict = {}
    monitor.on_epoch_end(trainer, 0, metrics)
    assert metrics == {}


def test_plots_are_written(tmp_path):
    plot_flip_rates(tmp_path / "f.png", {"bnn": [0.1, 0.01, 0.0], "bnn++": [0.2, 0.05, 0.01]})
    plot_latent_histograms(tmp_path / "h.png", {"bnn": [1] * 40})
    for name in ("f.png", "h.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


def _set_s3_values(layer, values) -> None:
    """Hand-set a 3-bit S3 layer's latents so that its discrete weights are ``values``
    (each in {0, +-1, +-2, +-4}): sign latent +-1, sparse latent on unless 0, the shift latents
    a thermometer code (shift = the number of leading shift latents > 0)."""
    v = torch.tensor(values, dtype=torch.float32).view(layer.out_features, layer.in_features)
    shift = torch.log2(v.abs().clamp_min(1)).round()
    p = layer.weight_param
    with torch.no_grad():
        p.w_sign.copy_(torch.where(v < 0, -1.0, 1.0))
        p.w_sparse.copy_(torch.where(v != 0, 1.0, -1.0))
        p.w_shift1.copy_(torch.where(shift >= 1, 1.0, -1.0))
        p.w_shift2.copy_(torch.where(shift >= 2, 1.0, -1.0))
    assert layer.discrete_weight().flatten().tolist() == [float(x) for x in values]


def test_monitor_on_hand_set_shift_weights_separates_value_and_sign_changes():
    """Eight S3 weights through four epochs, every count by hand:

    start   [1, 2, -4,  0, 4, -1, 2, 1]
    epoch 1 [1, 4, -4,  0, 4,  1, 2, 1]  2 -> 4 (value only), -1 -> 1 (sign)
    epoch 2 [2, 4, -4, -1, 4,  1, 2, 1]  1 -> 2 (value only), 0 -> -1 (sign: 0 is a sign)
    epoch 3 [1, 4, -4, -1, 4,  1, 4, 1]  2 -> 1 back to its epoch-1 value, 2 -> 4 (values only)
    epoch 4 unchanged

    unchanged since the end of epoch 1 (logged from epoch 2): weights 0 and 3 changed in
    epoch 2, weights 0 and 6 in epoch 3 (weight 0 counts as changed although it is back to its
    epoch-1 value): 6/8 then 5/8, 5/8. Since the start (since_epoch=0): weights 1, 5 changed in
    epoch 1, then 0, 3, then 6: 6/8, 4/8, 3/8, 3/8."""
    from edgecompress.layers import ShiftLinear

    layer = ShiftLinear(4, 2, bias=False, method="s3", bits=3)
    model = nn.Sequential(nn.Linear(3, 4), layer)
    trainer = FakeTrainer(model)
    since_1, since_0 = WeightFlipMonitor(since_epoch=1), WeightFlipMonitor(since_epoch=0)
    _set_s3_values(layer, [1, 2, -4, 0, 4, -1, 2, 1])
    since_1.on_fit_start(trainer)
    since_0.on_fit_start(trainer)
    epochs = [[1, 4, -4, 0, 4, 1, 2, 1], [2, 4, -4, -1, 4, 1, 2, 1],
              [1, 4, -4, -1, 4, 1, 4, 1], [1, 4, -4, -1, 4, 1, 4, 1]]
    flips, sign_flips, unchanged_1, unchanged_0 = [], [], [], []
    for epoch, values in enumerate(epochs):
        _set_s3_values(layer, values)
        m1: dict = {}
        m0: dict = {}
        since_1.on_epoch_end(trainer, epoch, m1)
        since_0.on_epoch_end(trainer, epoch, m0)
        assert m1["flip_rate"] == m0["flip_rate"]
        flips.append(m1["flip_rate"])
        sign_flips.append(m1["sign_flip_rate"])
        unchanged_1.append(m1.get("unchanged_since_epoch_1"))
        unchanged_0.append(m0["unchanged_since_epoch_0"])
        assert sum(m1["latent_hist"]) == 8  # the sign latents of the one shift layer
    assert flips == [2 / 8, 2 / 8, 2 / 8, 0.0]
    assert sign_flips == [1 / 8, 1 / 8, 0.0, 0.0]  # the value-only changes are not sign flips
    assert unchanged_1 == [None, 6 / 8, 5 / 8, 5 / 8]
    assert unchanged_0 == [6 / 8, 4 / 8, 3 / 8, 3 / 8]
