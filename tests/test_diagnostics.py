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
