"""Data-parallel training with torch.distributed, launched by torchrun (trainer.strategy=ddp).

Every rank holds the whole encoded data set and draws the same seeded permutation; each global
batch of trainer.batch_size samples is split into world_size near-equal shards, one per rank.
Each rank's loss is its shard's summed cross-entropy scaled by world_size / global batch, so
DDP's gradient average equals the single-process gradient of the global batch. Only rank 0
prints, writes metrics and checkpoints; evaluation counts are summed across ranks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import DWNError


@dataclass
class Context:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1 or dist.is_initialized()

    def shard(self, index: torch.Tensor) -> torch.Tensor:
        """This rank's part of a global batch of indices."""
        return index.tensor_split(self.world)[self.rank] if self.world > 1 else index

    def sum(self, *values: float) -> list[float]:
        """Sum plain numbers over all ranks."""
        if not self.active:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def wrap(self, model):
        if not self.active:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)


def launching_rank() -> int:
    """This process's rank as torchrun announced it (0 without torchrun), before setup()."""
    return int(os.environ.get("RANK", "0"))


def setup(strategy: str, device: torch.device) -> Context:
    """Join the process group that torchrun set up (strategy=ddp), or run alone (strategy=single;
    the value was checked by dwn_train/validate.py)."""
    if strategy == "single":
        return Context(device=device)
    if "WORLD_SIZE" not in os.environ:
        raise DWNError("trainer.strategy=ddp must be launched by torchrun, e.g. "
                       "torchrun --nproc_per_node=2 -m dwn_train.cli trainer.strategy=ddp hydra.run.dir=DIR")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    return Context(rank, world, device)


def teardown(context: Context) -> None:
    if context.active and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
