"""Who am I among the data consumers: (rank, world_size) and DataLoader worker splitting.

Rank and world size come from `torch.distributed` when a process group is initialised (so one code
path serves torchrun, accelerate and single-process runs), else from the caller's arguments.
"""

from __future__ import annotations

import torch


def distributed_rank_world(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """(rank, world_size): torch.distributed's when initialised, else the arguments (default 0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        dist_rank, dist_world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        if (rank is not None and rank != dist_rank) or (world_size is not None and world_size != dist_world):
            raise ValueError(
                f"rank/world_size arguments ({rank}, {world_size}) disagree with torch.distributed ({dist_rank}, {dist_world})"
            )
        return dist_rank, dist_world
    rank = 0 if rank is None else int(rank)
    world_size = 1 if world_size is None else int(world_size)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    return rank, world_size


def worker_id_count() -> tuple[int, int]:
    """(worker id, number of workers) of the current DataLoader worker; (0, 1) in the main process."""
    info = torch.utils.data.get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)
