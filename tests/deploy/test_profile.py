"""The per-part time breakdown of a frozen model (deploy.profile): every part is there and
they add up, profiling changes no output, and it leaves nothing switched on behind it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgecompress import deploy
from edgecompress.deploy import profile
from edgecompress.deploy.profile import (IM2COL, OTHER, PACK, STEM, FLOAT_LAYERS, profile_model,
                                         recording)

SHAPE = (3, 32, 32)


@pytest.fixture(scope="module")
def frozen(frozen_resnet20) -> nn.Module:
    return frozen_resnet20


def _no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


@pytest.mark.parametrize("implicit", [True, False])
def test_profile_has_every_part_and_they_sum_to_the_total(frozen, implicit, monkeypatch):
    monkeypatch.setattr(deploy.PackedBinaryConv2d, "implicit_gemm", implicit)
    threads = torch.get_num_threads()
    profiles = profile_model(frozen, SHAPE, batches=(1, 2), threads=(1,), rounds=2)
    assert torch.get_num_threads() == threads
    assert [(p.batch, p.threads, p.rounds) for p in profiles] == [(1, 1, 2), (2, 1, 2)]
    for p in profiles:
        assert list(p.parts) == [STEM, "stages.0 GEMM", "stages.1 GEMM", "stages.2 GEMM", PACK,
                                 IM2COL, FLOAT_LAYERS, OTHER]
        assert all(ms >= 0 for ms in p.parts.values()) and p.unprofiled_ms > 0
        attributed = sum(ms for part, ms in p.parts.items() if part != OTHER)
        assert attributed <= p.total_ms
        assert sum(p.parts.values()) == pytest.approx(p.total_ms)
        for part in (STEM, "stages.0 GEMM", PACK, FLOAT_LAYERS):  # each ran: some time
            assert p.parts[part] > 0, part
        # im2col rows are gathered on the explicit-GEMM path only
        assert (p.parts[IM2COL] > 0) == (not implicit)
        assert set(p.to_dict()) == {"batch", "threads", "rounds", "total_ms", "unprofiled_ms",
                                    "parts"}


def test_profiling_changes_no_output_and_switches_itself_off(frozen):
    x = torch.randn(2, *SHAPE)
    with torch.no_grad():
        plain = frozen(x)
        with recording(frozen) as recorder:
            assert profile._recorder is recorder and not _no_hooks(frozen)
            profiled = frozen(x)
    assert torch.equal(profiled, plain)
    assert recorder.parts[STEM] > 0
    assert profile._recorder is None and _no_hooks(frozen)


def test_profiling_is_switched_off_after_an_exception(frozen):
    bad = torch.randn(1, 5, 32, 32)  # 5 channels: the stem's forward raises
    with pytest.raises(ValueError), torch.no_grad():
        with recording(frozen):
            frozen(bad)
    assert profile._recorder is None and _no_hooks(frozen)
    threads = torch.get_num_threads()
    with pytest.raises(ValueError):
        profile_model(frozen, (5, 32, 32), batches=(1,), threads=(1,), rounds=1)
    assert torch.get_num_threads() == threads
    with pytest.raises(RuntimeError, match="already being recorded"):
        with recording(frozen):
            with recording(frozen):
                pass
    assert profile._recorder is None and _no_hooks(frozen)


def test_profile_rejects_an_empty_setting(frozen):
    with pytest.raises(ValueError, match="rounds must be >= 1"):
        profile_model(frozen, SHAPE, rounds=0)
