"""Device choice and the GPU path of the trainer (nccl, cuda:LOCAL_RANK), with CUDA mocked:
this machine has no GPU, so no CUDA code runs here; what is checked is the decision logic."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgecompress.errors import EdgecompressError
from edgecompress.train import Trainer, TrainConfig, distributed
from edgecompress.train.distributed import DeviceError, resolve_device


@pytest.fixture
def no_torchrun(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)


def fake_cuda(monkeypatch, count: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def torchrun(monkeypatch, rank: int, world: int, local_rank: int) -> None:
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("WORLD_SIZE", str(world))
    monkeypatch.setenv("LOCAL_RANK", str(local_rank))


def test_default_is_cuda_when_available_else_cpu(monkeypatch, no_torchrun):
    fake_cuda(monkeypatch, 0)
    assert resolve_device() == resolve_device("auto") == torch.device("cpu")
    fake_cuda(monkeypatch, 2)
    assert resolve_device() == torch.device("cuda", 0)
    assert resolve_device("cpu") == torch.device("cpu")  # an explicit cpu stays cpu


def test_cuda_under_torchrun_is_the_local_rank_gpu(monkeypatch):
    fake_cuda(monkeypatch, 4)
    torchrun(monkeypatch, rank=6, world=8, local_rank=2)  # second node, third process
    assert resolve_device() == resolve_device("cuda") == torch.device("cuda", 2)
    assert resolve_device("cuda:3") == torch.device("cuda", 3)  # an explicit index is kept
    assert resolve_device(torch.device("cuda")) == torch.device("cuda", 2)


@pytest.mark.parametrize("cuda_count, env_local_rank, asked, message", [
    (0, None, "cuda", r"device 'cuda' asked for, but CUDA is not available here .*--device cpu"),
    (0, None, "cuda:1", r"CUDA is not available"),
    (2, None, "cuda:2", r"cuda:2 asked for, but only 2 CUDA device\(s\) are visible "
                        r"\(cuda:0 to cuda:1\)"),
    (2, "3", "cuda", r"LOCAL_RANK 3 needs cuda:3, but only 2 CUDA device\(s\) are visible"),
    (2, None, "gpu", r"unknown device 'gpu'; use cpu, cuda or cuda:N"),
])
def test_impossible_devices_are_clear_errors(monkeypatch, no_torchrun, cuda_count,
                                             env_local_rank, asked, message):
    fake_cuda(monkeypatch, cuda_count)
    if env_local_rank is not None:
        monkeypatch.setenv("LOCAL_RANK", env_local_rank)
    with pytest.raises(DeviceError, match=message) as info:
        resolve_device(asked)
    assert isinstance(info.value, EdgecompressError)


class Recorder:
    def __init__(self):
        self.calls = []

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        return "wrapped"


@pytest.mark.parametrize("device, backend, current_gpu", [
    (torch.device("cuda", 1), "nccl", [torch.device("cuda", 1)]),
    (torch.device("cpu"), "gloo", []),
])
def test_process_group_backend_and_current_gpu(monkeypatch, device, backend, current_gpu):
    torchrun(monkeypatch, rank=1, world=2, local_rank=1)
    init, set_device = Recorder(), Recorder()
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group", init)
    monkeypatch.setattr(torch.cuda, "set_device", set_device)
    assert distributed.init_process_group(device) is True
    assert init.calls == [((), {"backend": backend, "rank": 1, "world_size": 2})]
    assert [args[0] for args, _ in set_device.calls] == current_gpu


def test_single_process_joins_no_group(monkeypatch, no_torchrun):
    init = Recorder()
    monkeypatch.setattr(distributed.dist, "init_process_group", init)
    assert distributed.init_process_group(torch.device("cuda", 0)) is False and not init.calls


@pytest.mark.parametrize("device, expected", [
    (torch.device("cuda", 3), {"device_ids": [3], "output_device": 3}),
    (torch.device("cpu"), {}),
])
def test_ddp_is_pinned_to_the_process_gpu(monkeypatch, device, expected):
    ddp = Recorder()
    monkeypatch.setattr(distributed, "DistributedDataParallel", ddp)
    model = nn.Linear(2, 2)
    assert distributed.wrap_ddp(model, device) == "wrapped"
    assert ddp.calls == [((model,), expected)]


def tiny_data(n=8):
    return torch.utils.data.TensorDataset(torch.randn(n, 4), torch.randint(0, 2, (n,)))


def test_trainer_resolves_its_device(monkeypatch, no_torchrun):
    fake_cuda(monkeypatch, 0)
    assert Trainer(nn.Linear(4, 2), tiny_data()).device == torch.device("cpu")
    with pytest.raises(DeviceError, match="CUDA is not available"):
        Trainer(nn.Linear(4, 2), tiny_data(), device="cuda")


def test_trainer_under_torchrun_uses_the_helpers_with_its_device(monkeypatch):
    """The trainer's fit joins the group and wraps the model through the helpers above, with
    its own device (CPU here: the group and DDP are mocked, one process runs)."""
    torchrun(monkeypatch, rank=0, world=2, local_rank=0)
    seen = {}
    monkeypatch.setattr("edgecompress.train.trainer.init_process_group",
                        lambda device: seen.setdefault("group", device) and False)

    def fake_ddp(model, device):
        seen["ddp"] = device
        return model

    monkeypatch.setattr("edgecompress.train.trainer.wrap_ddp", fake_ddp)
    Trainer(nn.Linear(4, 2), tiny_data(), config=TrainConfig(epochs=1, batch_size=4,
                                                             progress=False)).fit()
    assert seen == {"group": torch.device("cpu"), "ddp": torch.device("cpu")}


# --- experiment.run and the CLI take a device ---------------------------------------------------

RECIPE = ("model: {name: mlp, hidden: [8]}\ndata: {name: mnist-bundled, limit: 40}\n"
          "optimizer: {name: adam, lr: 0.01}\nepochs: 1\nbatch_size: 20\n")


def test_cli_train_passes_the_device_to_run(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from edgecompress import experiment
    from edgecompress.cli import cli

    seen = []

    def fake_run(recipe, **kwargs):
        seen.append(kwargs["device"])
        raise SystemExit(0)

    monkeypatch.setattr(experiment, "run", fake_run)
    (tmp_path / "r.yaml").write_text(RECIPE)
    for args, device in ((["--device", "cuda:1"], "cuda:1"), ([], None)):
        CliRunner().invoke(cli, ["train", str(tmp_path / "r.yaml"), *args])
    assert seen == ["cuda:1", None]


def test_train_and_eval_on_cpu_and_a_clear_error_for_missing_cuda(tmp_path, monkeypatch, capsys,
                                                                   no_torchrun):
    from edgecompress.cli import main

    fake_cuda(monkeypatch, 0)
    (tmp_path / "r.yaml").write_text(RECIPE)
    out = tmp_path / "run"
    main(["train", str(tmp_path / "r.yaml"), "--out", str(out), "--device", "cpu",
          "--no-progress"])
    main(["eval", str(out / "checkpoint.pt"), "--device", "cpu"])
    assert "top-1" in capsys.readouterr().out
    for command in (["eval", str(out / "checkpoint.pt")],
                    ["train", str(tmp_path / "r.yaml"), "--out", str(tmp_path / "other")]):
        with pytest.raises(SystemExit) as exit_info:
            main([*command, "--device", "cuda"])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("error: device 'cuda' asked for, but CUDA is not available")
    assert not (tmp_path / "other").exists()  # refused before anything was written


def test_run_uses_the_device_for_training_and_the_hard_evaluation(monkeypatch, no_torchrun):
    from edgecompress import experiment
    from edgecompress.recipe import Recipe

    devices = []
    real_evaluate = experiment.evaluate

    def spy(model, dataset, batch_size=256, device=None, task=None):
        devices.append(device)  # None if run() forgot to pass its device
        return real_evaluate(model, dataset, batch_size, device or "cpu", task)

    monkeypatch.setattr(experiment, "evaluate", spy)
    recipe = Recipe.from_dict({"model": {"name": "mlp", "hidden": [8, 8]},  # middle one binary
                               "data": {"name": "mnist-bundled", "limit": 40},
                               "method": {"name": "bnn"}, "epochs": 1, "batch_size": 20})
    result = experiment.run(recipe, progress=False, device="cpu")
    assert devices == [torch.device("cpu")] and "hard_test_top1" in result.metrics
    assert next(result.model.parameters()).device == torch.device("cpu")
