"""Data-parallel training (DDP) set up from torchrun's environment; one process without it.

torchrun starts one process per device and sets RANK, WORLD_SIZE and LOCAL_RANK (plus
MASTER_ADDR/MASTER_PORT). Each process trains a replica on its own shard of the batches;
DDP averages gradients with an all-reduce in backward, so replicas stay identical.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job; the defaults describe a single process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints, logs and calls callbacks."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def rank_info() -> DistInfo:
    """RANK/WORLD_SIZE/LOCAL_RANK from torchrun, or a single process when they are absent."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    rank = int(os.environ.get("RANK", "0"))
    return DistInfo(rank=rank, world_size=world_size, local_rank=int(os.environ.get("LOCAL_RANK", rank)))


def init_distributed(use_cuda: bool) -> tuple[DistInfo, bool]:
    """Join the process group when launched by torchrun; returns (info, whether we created it).

    nccl moves CUDA tensors between GPUs; gloo does the same for CPU tensors. A group that a
    caller already created is reused (and is theirs to destroy).
    """
    info = rank_info()
    if not info.enabled:
        return info, False
    if dist.is_initialized():
        return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(),
                        local_rank=info.local_rank), False
    if use_cuda:
        torch.cuda.set_device(info.local_rank)
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return info, True


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_reduce_mean(value: torch.Tensor | float, info: DistInfo, device: torch.device | None = None) -> float:
    """The mean of a scalar over all processes (the value itself in a single process)."""
    if not info.enabled:
        return float(value)
    t = torch.as_tensor(value, dtype=torch.float64, device=device).detach().clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item()) / info.world_size


def all_reduce_sum_(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum a tensor over all processes in place (no-op in a single process)."""
    if info.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def any_process(flag: bool, info: DistInfo, device: torch.device | None = None) -> bool:
    """True on every process if `flag` is true on any (keeps stop decisions in lockstep)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def cleanup(created: bool) -> None:
    """Destroy the process group if this module created it."""
    if created and dist.is_initialized():
        dist.destroy_process_group()
