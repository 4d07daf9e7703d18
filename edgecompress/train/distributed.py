"""Distributed data-parallel plumbing for runs launched with ``torchrun``, and device choice.

On a CUDA machine each ``torchrun`` process drives the GPU of its ``LOCAL_RANK``
(``cuda:LOCAL_RANK``, made current with ``torch.cuda.set_device``) and the processes talk over
nccl; on CPU they talk over gloo.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..errors import EdgecompressError


class DeviceError(EdgecompressError, ValueError):
    """A device that does not exist here (no CUDA, or a GPU index beyond the visible ones)."""


def world_from_env() -> tuple[int, int]:
    """(rank, world_size) as set by torchrun, or (0, 1) for a plain process."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def local_rank() -> int | None:
    """This process's index on its machine (torchrun's ``LOCAL_RANK``), None outside torchrun."""
    value = os.environ.get("LOCAL_RANK")
    return int(value) if value not in (None, "") else None


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The device to train or evaluate on.

    ``None`` or ``"auto"``: CUDA if available, else CPU. ``"cuda"`` without an index is the GPU
    of this process: ``cuda:LOCAL_RANK`` under torchrun, ``cuda:0`` otherwise. ``"cuda:N"`` is
    taken as given. Asking for CUDA where there is none, or for a GPU index that is not visible,
    is a :class:`DeviceError`.
    """
    if device is None or (isinstance(device, str) and device.strip().lower() == "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device.strip().lower() if isinstance(device, str) else device)
    except (RuntimeError, TypeError, ValueError):
        raise DeviceError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
    if dev.type != "cuda":
        return dev
    if not torch.cuda.is_available():
        raise DeviceError(f"device {str(device)!r} asked for, but CUDA is not available here "
                          f"(torch {torch.__version__}); use --device cpu")
    count = torch.cuda.device_count()
    index = dev.index
    if index is None:
        rank = local_rank()
        index = rank if rank is not None else 0
        if index >= count:
            raise DeviceError(f"LOCAL_RANK {index} needs cuda:{index}, but only {count} CUDA "
                              f"device(s) are visible; start at most {count} processes per node")
    elif index >= count:
        raise DeviceError(f"device cuda:{index} asked for, but only {count} CUDA device(s) are "
                          f"visible (cuda:0 to cuda:{count - 1})")
    return torch.device("cuda", index)


def backend_for(device: torch.device) -> str:
    """The process-group backend for ``device``: nccl for CUDA, gloo otherwise."""
    return "nccl" if device.type == "cuda" else "gloo"


def init_process_group(device: torch.device) -> bool:
    """Join the process group torchrun describes; True if this call created it.

    gloo on CPU, nccl on CUDA (after making ``device`` this process's current GPU). A no-op for
    a single process or an already initialised group.
    """
    rank, world = world_from_env()
    if world <= 1 or dist.is_initialized():
        return False
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend_for(device), rank=rank, world_size=world)
    return True


def wrap_ddp(model: nn.Module, device: torch.device) -> DistributedDataParallel:
    """torch's DistributedDataParallel around ``model``: pinned to its GPU on CUDA."""
    if device.type == "cuda":
        return DistributedDataParallel(model, device_ids=[device.index],
                                       output_device=device.index)
    return DistributedDataParallel(model)


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum ``values`` over all processes (identity without a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()
