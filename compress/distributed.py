"""Data-parallel training under ``torchrun``: one process per GPU (NCCL) or per CPU share
(gloo), each training on its own shard of the images, gradients averaged by
DistributedDataParallel.

``torchrun`` sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; :func:`init_from_env` joins
the process group when they say there is more than one process, and does nothing
otherwise, so the same command works with plain ``python`` too.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """The process that writes files and prints: rank 0."""
        return self.rank == 0


def world() -> World:
    """This process's place in the process group (rank 0 of 1 when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return World()


def init_from_env(device: torch.device) -> tuple[World, torch.device]:
    """Join the process group ``torchrun`` describes in the environment; returns the world
    and the device this rank trains on (``cuda:LOCAL_RANK`` on GPUs)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1 or not dist.is_available():
        return World(), device
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    w = world()
    if device.type == "cuda":
        device = torch.device("cuda", w.local_rank)
        torch.cuda.set_device(device)
    return w, device


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: Sequence[float], device: torch.device) -> list[float]:
    """Sum numbers over all ranks (identity when not distributed)."""
    if world().size == 1:
        return list(values)
    t = torch.tensor(list(values), dtype=torch.float64,
                     device=device if device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return t.tolist()


def broadcast_value(value, device: torch.device):
    """Rank 0's ``value`` on every rank (a float or None)."""
    if world().size == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0, device=device if device.type == "cuda" else None)
    return box[0]


def barrier() -> None:
    if world().size > 1:
        dist.barrier()
