"""Which part of the work is this process's: the few collective operations the objectives need
(through torch.distributed, no custom layer), and the `--shard i/n` split of offline jobs
(`lyrics refine`, `lyrics eval`).

Everything degrades to the identity in a single process, so the same code runs on one CPU and on
many GPUs (launched by torchrun or accelerate).
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


@torch.no_grad()
def all_gather_no_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate `tensor` from every rank along dim 0 (no gradient, as BLIP-2's `concat_all_gather`):
    contrastive negatives from other ranks, while gradients flow through the local rows."""
    if not is_distributed():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


@torch.no_grad()
def all_gather_padded(tensor: torch.Tensor, dim: int = 1, value: float | int = 0) -> torch.Tensor:
    """`all_gather_no_grad` for tensors whose size along `dim` differs between ranks (padded token
    ids, a varying number of objects): each rank pads to the longest with `value` first."""
    if not is_distributed():
        return tensor
    boolean = tensor.dtype == torch.bool
    if boolean:  # gloo has no bool all-gather
        tensor = tensor.to(torch.uint8)
    sizes = all_gather_no_grad(torch.tensor([tensor.shape[dim]], device=tensor.device))
    longest = int(sizes.max())
    if tensor.shape[dim] < longest:
        shape = list(tensor.shape)
        shape[dim] = longest - tensor.shape[dim]
        tensor = torch.cat([tensor, tensor.new_full(shape, value)], dim=dim)
    gathered = all_gather_no_grad(tensor)
    return gathered.bool() if boolean else gathered


def parse_shard(spec: str) -> tuple[int, int]:
    """`"i/n"` (a `--shard` option: this job does part i of n) -> `(i, n)` with 0 <= i < n."""
    try:
        rank_text, world_text = spec.split("/")
        part, parts = int(rank_text), int(world_text)
    except ValueError:
        raise ValueError(f"--shard must look like i/n (e.g. 0/4), got {spec!r}") from None
    if parts < 1 or not 0 <= part < parts:
        raise ValueError(f"--shard {spec}: need 0 <= i < n")
    return part, parts
