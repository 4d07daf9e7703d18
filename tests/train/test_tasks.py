"""Tasks: the registry, classification exactly as the trainer always did it, and the import graph
(callbacks and schedules never load the training loop)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgecompress.errors import UnknownNameError
from edgecompress.train import Callback, TrainerState, Trainer, evaluate, tasks

from .test_train import NoisyBlobs, config, tiny_model, without_seconds


def test_registry_and_creation():
    assert tasks.available() == ["classification", "language-modelling"]
    assert isinstance(tasks.create(), tasks.Classification)
    lm = tasks.create({"name": "language_modelling", "bptt": 12})
    assert isinstance(lm, tasks.LanguageModelling) and lm.to_dict() == {
        "name": "language-modelling", "bptt": 12}
    assert tasks.create(lm) is lm
    assert tasks.task_options("language-modelling") == ["bptt"]
    with pytest.raises(UnknownNameError, match="unknown task 'regression'; available: "
                                               "classification, language-modelling"):
        tasks.create("regression")
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['bbtt'\]; valid: bptt"):
        tasks.create("language-modelling", bbtt=3)
    with pytest.raises(ValueError, match="bptt must be a positive integer, got 0"):
        tasks.create("language-modelling", bptt=0)


def test_classification_task_by_name_is_the_default(tmp_path):
    data = NoisyBlobs()
    default = Trainer(tiny_model(), data, data, config(tmp_path / "a")).fit()
    named = Trainer(tiny_model(), data, data, config(tmp_path / "b"),
                    task="classification").fit()
    assert without_seconds([default]) == without_seconds([named])
    assert {"train_loss", "train_top1", "test_loss", "test_top1"} <= set(default)


def test_classification_metrics_follow_their_formulas():
    data = NoisyBlobs(40)
    model = tiny_model().eval()
    x, y = data.x, data.y  # the noise-free inputs: evaluate them through a fixed dataset
    fixed = torch.utils.data.TensorDataset(x, y)
    metrics = evaluate(model, fixed, batch_size=16, task="classification")
    with torch.no_grad():
        logits = model(x)
    assert metrics["loss"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)
    assert metrics["top1"] == pytest.approx(100.0 * (logits.argmax(1) == y).float().mean().item())


def test_a_custom_task_plugs_into_the_trainer():
    """A stateful task object: its state reaches every forward pass, starts fresh each epoch,
    and is detached before the next batch."""

    class Counting(tasks.Classification):
        def __init__(self):
            self.seen: list[tuple[int, bool]] = []

        def initial_state(self):
            return torch.zeros((), requires_grad=False)

        def forward(self, model, inputs, state):
            self.seen.append((int(state), state.requires_grad))
            output = model(inputs)
            return output, state + 1 + 0 * output.sum()  # part of the graph

    task = Counting()
    Trainer(tiny_model(), NoisyBlobs(48), None, config(epochs=2), task=task).fit()
    per_epoch = 48 // 16
    assert task.seen == [(i, False) for i in range(per_epoch)] * 2


def test_trainer_satisfies_the_state_protocol_callbacks_see():
    seen = []

    class Look(Callback):
        def on_fit_start(self, trainer):
            seen.append(isinstance(trainer, TrainerState))

    Trainer(tiny_model(), NoisyBlobs(16), None, config(epochs=1), callbacks=[Look()]).fit()
    assert seen == [True]


MODULES = ["callbacks", "schedules", "state", "tasks", "config", "checkpoint", "log", "optim",
           "distributed"]
IMPORT_CHECK = """
import importlib, json, sys
loaded = {}
for name in sys.argv[1:]:
    for key in [k for k in sys.modules if k.split(".")[0] == "edgecompress"]:
        del sys.modules[key]
    importlib.import_module("edgecompress.train." + name)
    loaded[name] = "edgecompress.train.trainer" in sys.modules
from edgecompress.train import Trainer
loaded["package attribute"] = Trainer.__module__
print(json.dumps(loaded))
"""


def test_train_submodules_do_not_import_the_trainer():
    """Each submodule imported with no edgecompress module loaded before it (one interpreter,
    edgecompress dropped from sys.modules between imports); the package still gives Trainer."""
    done = subprocess.run([sys.executable, "-c", IMPORT_CHECK, *MODULES], capture_output=True,
                          text=True, check=True)
    assert json.loads(done.stdout) == {**{m: False for m in MODULES},
                                       "package attribute": "edgecompress.train.trainer"}


def test_classification_metrics_are_unchanged_by_tasks_for_a_batchnorm_model(tmp_path):
    """BatchNorm + dropout + label smoothing: the reported train loss is the mean training loss
    weighted by batch size, as before the tasks existed."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))
    losses = []

    class Record(Callback):
        def on_step_end(self, trainer, step, loss):
            losses.append(loss)

    data = NoisyBlobs(40)  # batches of 16, 16 and 8
    metrics = Trainer(model, data, None, config(epochs=1, label_smoothing=0.1),
                      callbacks=[Record()]).fit()
    expected = (losses[0] * 16 + losses[1] * 16 + losses[2] * 8) / 40
    assert metrics["train_loss"] == pytest.approx(expected, rel=1e-12)


def test_distillation_only_is_the_soft_target_cross_entropy_up_to_a_constant():
    """kd_alpha 1, temperature 1 (BinaryViT's loss): the labels play no part, and the loss is
    the soft-target cross-entropy minus the teacher's entropy (the same gradient)."""
    from edgecompress.train import TrainConfig

    torch.manual_seed(0)
    student = torch.randn(6, 4, requires_grad=True)
    teacher_logits = torch.randn(6, 4)
    teacher = nn.Identity()
    cfg = TrainConfig(kd_alpha=1.0, kd_temperature=1.0)
    task = tasks.create("classification")
    loss = task.loss(student, torch.zeros(6, dtype=torch.long), teacher_logits, cfg, teacher)
    other_labels = task.loss(student, torch.full((6,), 3), teacher_logits, cfg, teacher)
    p = teacher_logits.softmax(-1)
    soft_ce = -(p * student.log_softmax(-1)).sum(-1).mean()
    entropy = -(p * p.log()).sum(-1).mean()
    torch.testing.assert_close(loss, soft_ce - entropy)
    torch.testing.assert_close(other_labels, loss)
    (grad,) = torch.autograd.grad(loss, student)
    (expected,) = torch.autograd.grad(soft_ce, student)
    torch.testing.assert_close(grad, expected)
