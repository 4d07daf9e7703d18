"""Distributed data-parallel plumbing for runs launched with ``torchrun``."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def world_from_env() -> tuple[int, int]:
    """(rank, world_size) as set by torchrun, or (0, 1) for a plain process."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def init_process_group(device: torch.device) -> bool:
    """Join the process group torchrun describes; True if this call created it.

    gloo on CPU, nccl on CUDA. A no-op for a single process or an already initialised group.
    """
    rank, world = world_from_env()
    if world <= 1 or dist.is_initialized():
        return False
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return True


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum ``values`` over all processes (identity without a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()
