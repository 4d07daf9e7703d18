"""Batch chunking of frozen CNNs (deploy.chunking): a large batch runs a few images at a time,
with the results of running those chunks one by one; the chunk size follows the model's largest
activation; off, fixed and bad settings; save / load, deepcopy, torch.compile and the profile."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

import edgecompress as ec
from edgecompress import deploy
from edgecompress.deploy import chunking
from edgecompress.deploy.profile import STEM, recording

SHAPE = (3, 32, 32)


@pytest.fixture(scope="module")
def frozen(frozen_resnet20) -> nn.Module:
    return frozen_resnet20


def _batches_seen(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """model(x) and the batch size of every call of its first layer."""
    seen: list[int] = []
    handle = model.stem[0].register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[0]))
    try:
        with torch.no_grad():
            return model(x), seen
    finally:
        handle.remove()


def _without_chunking(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    previous, model.batch_chunk = model.batch_chunk, None
    try:
        with torch.no_grad():
            return model(x)
    finally:
        model.batch_chunk = previous


def test_freeze_installs_auto_chunking_on_a_cnn(frozen):
    assert isinstance(frozen.graph._codegen, chunking.ChunkingCodeGen)
    assert frozen.batch_chunk == chunking.AUTO
    assert "_edgecompress_run_chunked" in frozen.code


@pytest.mark.parametrize("n, chunk, sizes", [(5, 2, [2, 2, 1]), (8, 5, [4, 4]), (7, 3, [3, 3, 1]),
                                             (4, 4, [4]), (6, 9, [6]), (1, 1, [1])])
def test_a_fixed_chunk_runs_equal_chunks_with_their_own_results(frozen, n, chunk, sizes):
    x = torch.randn(n, *SHAPE)
    frozen.batch_chunk = chunk
    try:
        y, seen = _batches_seen(frozen, x)
    finally:
        frozen.batch_chunk = chunking.AUTO
    assert seen == sizes
    parts = [_without_chunking(frozen, part) for part in x.split(sizes[0])]
    assert torch.equal(y, torch.cat(parts))
    torch.testing.assert_close(y, _without_chunking(frozen, x), rtol=1e-5, atol=1e-5)


def test_auto_chunk_follows_the_largest_activation(frozen, monkeypatch):
    x = torch.randn(6, *SHAPE)
    frozen.__dict__.pop("_batch_chunks", None)
    threads = torch.get_num_threads()
    largest = chunking._largest_activation(frozen, x[:1])
    with torch.no_grad():  # the largest is at least the stem's output
        stem = frozen.stem(x[:1])
    assert largest >= stem.numel() * stem.element_size() > 0
    # a budget of two images' largest activation per thread: chunks of 2 x threads images
    monkeypatch.setattr(chunking, "BUDGET_BYTES_PER_THREAD", 2 * largest)
    y, seen = _batches_seen(frozen, x)
    chunk = 2 * threads
    per = math.ceil(6 / math.ceil(6 / chunk))  # equal chunks
    expected = [len(p) for p in x.split(per)]
    assert seen == [1] + expected  # image 0 alone first: the measurement, once per shape
    assert frozen._batch_chunks[(SHAPE, torch.float32, threads)] == chunk
    assert _batches_seen(frozen, x)[1] == expected
    assert torch.equal(y, torch.cat([_without_chunking(frozen, p) for p in x.split(per)]))
    # a budget the whole batch fits: it runs at once (after its own measurement)
    frozen.__dict__.pop("_batch_chunks")
    monkeypatch.setattr(chunking, "BUDGET_BYTES_PER_THREAD", 100 * largest)
    assert _batches_seen(frozen, x)[1] == [1, 6]
    assert _batches_seen(frozen, x)[1] == [6]
    frozen.__dict__.pop("_batch_chunks")


def test_chunk_for_is_the_budget_over_the_largest_activation(monkeypatch):
    monkeypatch.setattr(chunking, "BUDGET_BYTES_PER_THREAD", 1000)
    assert chunking.chunk_for(300, 1) == 3
    assert chunking.chunk_for(300, 2) == 6
    assert chunking.chunk_for(5000, 2) == 1  # at least one image
    assert chunking.chunk_for(0, 1) == 1000


def test_off_and_bad_settings(frozen):
    x = torch.randn(4, *SHAPE)
    frozen.batch_chunk = None
    try:
        assert _batches_seen(frozen, x)[1] == [4]
        for bad in (0, -2, 1.5, True, "all"):
            frozen.batch_chunk = bad
            with pytest.raises(ValueError, match="batch_chunk must be 'auto', None or an int"):
                _batches_seen(frozen, x)
    finally:
        frozen.batch_chunk = chunking.AUTO


def test_only_graph_modules_of_one_input_and_one_output_take_it():
    class Two(nn.Module):
        def forward(self, x):
            return x + 1, x * 2

    assert not chunking.chunkable(nn.Conv2d(1, 1, 1))
    assert not chunking.chunkable(torch.fx.symbolic_trace(Two()))
    assert chunking.chunkable(torch.fx.symbolic_trace(nn.Sequential(nn.Conv2d(1, 1, 1))))
    with pytest.raises(ValueError, match="one input and one tensor output"):
        chunking.install(torch.fx.symbolic_trace(Two()))


def test_a_frozen_mlp_is_not_chunked():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.BatchNorm1d(8), nn.Hardtanh(),
                        nn.Linear(8, 4))
    frozen = deploy.freeze(ec.convert(mlp.eval(), "bnn", mode="w1a1"))
    assert not hasattr(frozen, "batch_chunk")


def test_chunking_survives_save_load_and_deepcopy(frozen, tmp_path):
    x = torch.randn(5, *SHAPE)
    path = tmp_path / "frozen.safetensors"
    deploy.save(frozen, path)
    for other in (deploy.load(path), copy.deepcopy(frozen)):
        assert isinstance(other.graph._codegen, chunking.ChunkingCodeGen)
        assert getattr(other, "batch_chunk", chunking.AUTO) == chunking.AUTO
        other.batch_chunk = 2
        y, seen = _batches_seen(other, x)
        assert seen == [2, 2, 1]
        assert torch.equal(y, torch.cat([_without_chunking(frozen, p) for p in x.split(2)]))


def test_compiled_model_sees_the_whole_batch(frozen):
    x = torch.randn(4, *SHAPE)
    frozen.batch_chunk = 1
    try:
        compiled = torch.compile(frozen, fullgraph=True)
        with torch.no_grad():
            y = compiled(x)
    finally:
        frozen.batch_chunk = chunking.AUTO
    torch.testing.assert_close(y, _without_chunking(frozen, x), rtol=1e-5, atol=1e-5)


def test_the_profile_counts_each_chunks_stem_as_stem(frozen):
    x = torch.randn(4, *SHAPE)
    frozen.batch_chunk = 2
    parts: list[str] = []
    try:
        with torch.no_grad(), recording(frozen) as recorder:
            handle = frozen.stem[0].register_forward_pre_hook(
                lambda m, a: parts.append(recorder._running[-1][0]))
            try:
                frozen(x)
            finally:
                handle.remove()
    finally:
        frozen.batch_chunk = chunking.AUTO
    assert parts == [STEM, STEM]


def test_only_image_batches_are_split():
    # a batch that is not a 4-D image batch (a sequence, a table) is not known to be split
    # safely along its first dimension: it runs at once
    model = torch.fx.symbolic_trace(nn.Sequential(nn.Linear(4, 3)))
    chunking.install(model, batch_chunk=1)
    seen: list[tuple[int, ...]] = []
    model.get_submodule("0").register_forward_pre_hook(lambda m, a: seen.append(a[0].shape))
    with torch.no_grad():
        model(torch.randn(5, 4))
        model(torch.randn(2, 5, 4))
        model(torch.randn(2, 2, 5, 4))
    assert seen == [(5, 4), (2, 5, 4), (1, 2, 5, 4), (1, 2, 5, 4)]
