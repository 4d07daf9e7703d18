"""Trainer: schedules, weight decay, distillation, callbacks, checkpoints and exact resume."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from edgecompress.errors import CheckpointError, UnknownNameError
from edgecompress.train import (Callback, TrainConfig, Trainer, distillation_loss, load_checkpoint,
                                load_model_state, save_checkpoint)
from edgecompress.train.log import read_metrics
from edgecompress.train.optim import build_optimizer, lr_factor


class NoisyBlobs(Dataset):
    """Separable 2-class data whose items get random noise from torch's global RNG (stands in
    for augmentation, so RNG handling across resume is exercised)."""

    def __init__(self, n: int = 96):
        g = torch.Generator().manual_seed(0)
        self.y = torch.arange(n) % 3
        self.x = torch.randn(n, 8, generator=g) + self.y[:, None].float()

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i] + 0.1 * torch.randn(8), int(self.y[i])


def tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3))


def config(tmp_path: Path | None = None, **kw) -> TrainConfig:
    base = dict(epochs=3, batch_size=16, lr=0.05, weight_decay=1e-3, progress=False,
                out_dir=str(tmp_path) if tmp_path else None)
    base.update(kw)
    return TrainConfig(**base)


class Counter(Callback):
    """A stateful callback: counts steps; its state must survive resume."""

    def __init__(self):
        self.steps = 0

    def on_step_end(self, trainer, step, loss):
        self.steps += 1

    def on_epoch_end(self, trainer, epoch, metrics):
        metrics["counted_steps"] = self.steps

    def state_dict(self):
        return {"steps": self.steps}

    def load_state_dict(self, state):
        self.steps = state["steps"]


class Crash(Callback):
    """Simulates a kill: raises after ``after`` steps of epoch ``epoch``."""

    def __init__(self, epoch: int, after: int):
        self.epoch, self.after, self.seen = epoch, after, 0

    def on_step_end(self, trainer, step, loss):
        if trainer.epoch == self.epoch:
            self.seen += 1
            if self.seen == self.after:
                raise KeyboardInterrupt("simulated kill")


def without_seconds(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def test_fit_learns_and_writes_log_and_plot(tmp_path):
    data = NoisyBlobs()
    metrics = Trainer(tiny_model(), data, data, config(tmp_path, epochs=4)).fit()
    assert metrics["epoch"] == 4 and metrics["test_top1"] > 60
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert {"train_loss", "train_top1", "test_loss", "test_top1", "lr", "step"} <= set(rows[0])
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_after_a_kill_mid_epoch_is_exact(tmp_path):
    data = NoisyBlobs()
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    ref_model, counter = tiny_model(), Counter()
    ref = Trainer(ref_model, data, data, config(ref_dir), callbacks=[counter]).fit()

    model = tiny_model()
    with pytest.raises(KeyboardInterrupt):
        Trainer(model, data, data, config(run_dir), callbacks=[Counter(), Crash(1, 3)]).fit()
    assert load_checkpoint(run_dir / "checkpoint.pt")["epoch"] == 1
    resumed_counter = Counter()
    resumed = Trainer(tiny_model(seed=99), data, data, config(run_dir, resume=True),
                      callbacks=[resumed_counter, Crash(-1, 0)])
    final = resumed.fit()
    for a, b in zip(ref_model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    assert without_seconds([final]) == without_seconds([ref])
    assert resumed_counter.steps == counter.steps == 3 * 6
    assert without_seconds(read_metrics(run_dir / "metrics.jsonl")) == without_seconds(
        read_metrics(ref_dir / "metrics.jsonl"))


SCRIPT = textwrap.dedent("""
    import os, signal, sys, torch
    sys.path.insert(0, {tests!r})
    from test_train import NoisyBlobs, tiny_model, config, Callback
    from edgecompress.train import Trainer

    class Kill(Callback):
        def __init__(self, active):
            self.active = active

        def on_step_end(self, trainer, step, loss):
            if self.active and trainer.epoch == 2 and step == 2 * 6 + 2:
                os.kill(os.getpid(), signal.SIGKILL)

    resume = sys.argv[2] == "resume"
    data = NoisyBlobs()
    Trainer(tiny_model(), data, data, config(sys.argv[1], epochs=4, resume=resume),
            callbacks=[Kill(active=not resume)]).fit()
""")


@pytest.mark.slow
def test_resume_after_sigkill_in_a_real_process(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT.format(tests=str(Path(__file__).parent)))
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed = subprocess.run([sys.executable, str(script), str(out), "fresh"], env=env)
    assert killed.returncode == -signal.SIGKILL
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 2
    subprocess.run([sys.executable, str(script), str(out), "resume"], env=env, check=True)
    data = NoisyBlobs()
    ref = Trainer(tiny_model(), data, data, config(tmp_path / "ref", epochs=4)).fit()
    assert without_seconds(read_metrics(out / "metrics.jsonl"))[-1] == without_seconds([ref])[0]
    a = load_checkpoint(out / "checkpoint.pt")["model"]
    b = load_checkpoint(tmp_path / "ref" / "checkpoint.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_with_changed_config_is_refused(tmp_path):
    data = NoisyBlobs()
    Trainer(tiny_model(), data, None, config(tmp_path, epochs=1)).fit()
    with pytest.raises(CheckpointError, match=r"lr: checkpoint 0.05 vs now 0.1"):
        Trainer(tiny_model(), data, None, config(tmp_path, epochs=1, lr=0.1, resume=True)).fit()


def test_lr_schedules_follow_their_formulas():
    steps = 10
    cos = config(epochs=4, schedule="cosine")
    assert [lr_factor(s, steps, cos) for s in (0, 20)] == [1.0, 0.5 * (1 + math.cos(math.pi / 2))]
    warm = config(epochs=4, schedule="cosine", warmup_epochs=1)
    assert lr_factor(4, steps, warm) == 5 / 10
    assert lr_factor(10, steps, warm) == 1.0
    assert lr_factor(25, steps, warm) == pytest.approx(0.5 * (1 + math.cos(math.pi * 15 / 30)))
    multi = config(epochs=4, schedule="multistep", milestones=[1, 3], gamma=0.5)
    assert [lr_factor(s, steps, multi) for s in (9, 10, 29, 30)] == [1.0, 0.5, 0.5, 0.25]
    assert lr_factor(39, steps, config(epochs=4, schedule="constant")) == 1.0


def test_scheduler_drives_the_optimizer_lr(tmp_path):
    data = NoisyBlobs()
    trainer = Trainer(tiny_model(), data, None, config(epochs=2, schedule="multistep",
                                                       milestones=[1], gamma=0.1))
    trainer.fit()
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.05 * 0.1)
    assert [round(h["lr"], 6) for h in trainer.history] == [0.05, 0.005]


def test_weight_decay_skips_1d_params_and_patterns():
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    groups = build_optimizer(model, config(weight_decay=0.1, no_decay=["2.*"])).param_groups
    decayed = {id(p) for g in groups if g["weight_decay"] == 0.1 for p in g["params"]}
    assert decayed == {id(model[0].weight)}
    groups = build_optimizer(model, config(weight_decay=0.1, decay_1d=True)).param_groups
    assert sum(len(g["params"]) for g in groups if g["weight_decay"] == 0.1) == 6


def test_config_validation():
    with pytest.raises(UnknownNameError, match="available: sgd, adam, adamw"):
        TrainConfig(optimizer="rmsprop")
    with pytest.raises(UnknownNameError, match="available: constant, cosine, multistep"):
        TrainConfig(schedule="linear")
    with pytest.raises(ValueError, match="TrainConfig.epochs must be >= 1"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="kd_alpha"):
        TrainConfig(kd_alpha=1.5)


def test_batch_size_must_divide_by_world_size(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(ValueError, match="batch_size 16 is not divisible by the number of "
                                         "processes 3"):
        Trainer(tiny_model(), NoisyBlobs(), None, config())


def test_distillation_loss_matches_formula():
    torch.manual_seed(0)
    s, t, T = torch.randn(4, 5), torch.randn(4, 5), 3.0
    p_t, p_s = F.softmax(t / T, dim=1), F.softmax(s / T, dim=1)
    expected = (p_t * (p_t.log() - p_s.log())).sum(dim=1).mean() * T * T
    torch.testing.assert_close(distillation_loss(s, t, T), expected)


class Recorder(Callback):
    def __init__(self, term: float = 0.0):
        self.term = term

    def extra_loss(self, trainer):
        return torch.tensor(self.term)


def test_extra_loss_and_distillation_enter_the_training_loss():
    data = NoisyBlobs(16)
    x, y = next(iter(torch.utils.data.DataLoader(data, batch_size=16)))
    trainer = Trainer(tiny_model(), data, None, config(kd_alpha=0.25, kd_temperature=2.0),
                      callbacks=[Recorder(0.5)], teacher=tiny_model(seed=5))
    trainer.model.eval()
    logits = trainer.model(x)
    with torch.no_grad():
        teacher = trainer.teacher(x)
    expected = (0.75 * F.cross_entropy(logits, y) + 0.25 * distillation_loss(logits, teacher, 2.0)
                + 0.5)
    torch.testing.assert_close(trainer._loss(logits, x, y), expected)
    with pytest.raises(ValueError, match="needs a teacher"):
        Trainer(tiny_model(), data, None, config(kd_alpha=0.5))


# --- checkpoint files -------------------------------------------------------------------------

def test_checkpoint_round_trip(tmp_path):
    state = {"epoch": 2, "model": {"w": torch.arange(3.0)}, "history": [{"a": 1.5}]}
    save_checkpoint(tmp_path / "c.pt", state)
    loaded = load_checkpoint(tmp_path / "c.pt")
    assert loaded["epoch"] == 2 and torch.equal(loaded["model"]["w"], torch.arange(3.0))
    assert loaded["history"] == [{"a": 1.5}]


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


@pytest.mark.parametrize("kind", ["missing", "random", "truncated", "evil", "foreign", "newer"])
def test_bad_checkpoints_are_rejected_naming_the_file(tmp_path, monkeypatch, kind):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / f"{kind}.pt"
    if kind == "random":
        path.write_bytes(bytes(range(256)) * 4)
    elif kind == "truncated":
        save_checkpoint(path, {"epoch": 1, "model": {"w": torch.zeros(1000)}})
        path.write_bytes(path.read_bytes()[:2000])
    elif kind == "evil":
        torch.save({"format": "edgecompress-checkpoint", "version": 1, "epoch": 1,
                    "model": Evil()}, path)
    elif kind == "foreign":
        torch.save({"state_dict": {}}, path)
    elif kind == "newer":
        torch.save({"format": "edgecompress-checkpoint", "version": 99, "epoch": 1, "model": {}},
                   path)
    with pytest.raises(CheckpointError, match=f"{kind}.pt"):
        load_checkpoint(path)
    assert not (tmp_path / "pwned.txt").exists()


def test_many_random_files_are_all_rejected_as_checkpoint_errors(tmp_path):
    """Random bytes reach torch's legacy unpickler, which fails in many ways (IndexError,
    KeyError, ...); every one must come out as a CheckpointError naming the file."""
    import random
    path = tmp_path / "noise.pt"
    for seed in range(300):
        size = random.Random(seed).randint(1, 3000)
        path.write_bytes(random.Random(seed).randbytes(size))
        with pytest.raises(CheckpointError, match="noise.pt"):
            load_checkpoint(path)


def test_model_state_mismatch_lists_the_keys(tmp_path):
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    state = nn.Sequential(nn.Linear(4, 5), nn.Linear(5, 2)).state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["1.bias"]
    with pytest.raises(CheckpointError) as info:
        load_model_state(model, state, tmp_path / "m.pt")
    message = str(info.value)
    assert "m.pt" in message and "missing keys: 1.bias" in message
    assert "unexpected keys: extra.weight" in message
    assert "0.weight: model (3, 4) vs file (5, 4)" in message


def test_failed_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    save_checkpoint(path, {"epoch": 1, "model": {}})

    def broken_save(obj, f):
        Path(f).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"epoch": 2, "model": {}})
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]
