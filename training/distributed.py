"""Data-parallel training under ``torchrun``: who this process is, and the check that every rank ended the same."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from models.device import resolve_device


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_request: str) -> DistInfo:
    """Join the ``torchrun`` process group if launched by it (gloo on CPU, NCCL on CUDA)."""
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) == 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
    backend = "nccl" if resolve_device(device_request, info.local_rank).type == "cuda" else "gloo"
    dist.init_process_group(backend)
    return info


def gather_digests(state: dict[str, torch.Tensor], info: DistInfo) -> list[str]:
    """sha256 of each rank's final weights: data-parallel ranks must end bit-identical."""
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    if info.world_size == 1:
        return [digest.hexdigest()]
    gathered: list[str | None] = [None] * info.world_size
    dist.all_gather_object(gathered, digest.hexdigest())
    return [str(d) for d in gathered]
