"""The SPR regularizer in training: through the trainer's callback, resumed runs, recipes."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from edgecompress.errors import RecipeError
from edgecompress.experiment import run
from edgecompress.pruning import SPR, SPRRegularizer, create_regularizer, find_groups
from edgecompress.recipe import Recipe
from edgecompress.train import Callback, TrainConfig, Trainer


def images(n: int = 64) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 2
    x = torch.randn(n, 2, 6, 6, generator=g) + y[:, None, None, None].float()
    return TensorDataset(x, y)


def tiny_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(2, 6, 3, bias=False), nn.BatchNorm2d(6), nn.ReLU(),
                         nn.Conv2d(6, 6, 3, bias=False), nn.BatchNorm2d(6), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 2))


def config(**kw) -> TrainConfig:
    base = dict(epochs=2, batch_size=16, lr=0.05, momentum=0.9, progress=False)
    base.update(kw)
    return TrainConfig(**base)


def test_training_with_spr_shrinks_the_groups_and_logs_the_term():
    data = images()
    reference = tiny_cnn()
    measure = SPR(reference, lam=1.0, alpha=0.5)  # one fixed yardstick (M from the start)
    plain = Trainer(tiny_cnn(), data, None, config())
    plain.fit()
    callback = SPRRegularizer(lam=5.0, alpha=0.5, reference=reference)
    regularized = Trainer(tiny_cnn(), data, None, config(), callbacks=[callback])
    regularized.fit()
    assert callback.spr.M == measure.M
    with torch.no_grad():
        assert float(measure(regularized.model)) < 0.8 * float(measure(plain.model))
    norms = lambda m: torch.cat([g.matrix(m).norm(dim=1) for g in find_groups(m)])  # noqa: E731
    assert norms(regularized.model).sum() < norms(plain.model).sum()
    for row in regularized.history:
        assert row["spr"] > 0
        assert row["spr_case1"] + row["spr_case2"] + row["spr_case3"] == pytest.approx(1.0)
    assert regularized.history[-1]["spr"] < regularized.history[0]["spr"]
    assert "spr" not in plain.history[-1]


class Kill(Callback):
    """Simulates a kill when epoch ``at`` starts (after the previous epoch's checkpoint)."""

    def __init__(self, at: int):
        self.at = at

    def on_epoch_start(self, trainer, epoch):
        if epoch == self.at:
            raise KeyboardInterrupt


def test_resumed_run_keeps_the_m_of_the_first_start(tmp_path):
    data = images(32)
    # M from the model's weights at the start (filters only: not BN's initial gamma = 1)
    first = SPRRegularizer(lam=1.0, alpha=0.3, groups="conv")
    with pytest.raises(KeyboardInterrupt):
        Trainer(tiny_cnn(), data, None, config(out_dir=str(tmp_path)),
                callbacks=[first, Kill(1)]).fit()
    resumed = SPRRegularizer(lam=1.0, alpha=0.3, groups="conv")
    trainer = Trainer(tiny_cnn(seed=5), data, None, config(out_dir=str(tmp_path), resume=True),
                      callbacks=[resumed, Kill(-1)])
    trainer.fit()
    assert len(trainer.history) == 2
    assert resumed.spr.M == first.spr.M
    # M from the weights the resumed run started from would differ
    assert SPR(tiny_cnn(), 1.0, 0.3, groups="conv").M == first.spr.M
    assert SPR(tiny_cnn(seed=5), 1.0, 0.3, groups="conv").M != first.spr.M


def test_regularizers_by_name():
    callback = create_regularizer({"name": "spr", "lam": 0.5, "alpha": 0.2, "groups": "conv"})
    assert isinstance(callback, SPRRegularizer) and callback.options["groups"] == "conv"


RECIPE = {"model": {"name": "convnet"}, "data": {"name": "mnist-bundled", "limit": 64},
          "epochs": 1, "batch_size": 32, "optimizer": {"name": "sgd", "lr": 0.05}}


def test_recipe_regularizer_section_trains_with_spr_from_a_reference_checkpoint(tmp_path):
    run(Recipe.from_dict(RECIPE), out_dir=tmp_path / "ref", progress=False)
    recipe = Recipe.from_dict({**RECIPE, "regularizer": {
        "name": "spr", "lam": 1.0, "alpha": 0.1, "reference": str(tmp_path / "ref" /
                                                                  "checkpoint.pt")}})
    result = run(recipe, out_dir=tmp_path / "spr", progress=False)
    assert result.metrics["spr"] > 0


def test_recipe_regularizer_errors_name_the_value():
    with pytest.raises(RecipeError, match="alpha.*1.5"):
        Recipe.from_dict({**RECIPE, "regularizer": {"name": "spr", "lam": 1.0, "alpha": 1.5}})
    with pytest.raises(RecipeError, match="'regularizer.mu'"):
        Recipe.from_dict({**RECIPE, "regularizer": {"name": "spr", "lam": 1, "alpha": .1,
                                                    "mu": 2}})
    with pytest.raises(RecipeError, match="M.*-1"):
        Recipe.from_dict({**RECIPE, "regularizer": {"name": "spr", "lam": 1, "alpha": .1,
                                                    "M": -1}})
