"""Data-parallel training across processes: the process group, the shard each rank draws, and the collectives.

fsdiff trains with ``torch.distributed`` and :class:`~torch.nn.parallel.DistributedDataParallel`
when launched by ``torchrun`` (``WORLD_SIZE > 1``): gloo on CPU, nccl on CUDA.

**Random streams are per shard, not per rank.** The global batch ``B`` of a step is drawn as
``training.data_shards = S`` equal shards; shard ``j`` has its own data and noise generators, seeded
from the run seed and ``j`` (:func:`shard_generators`), and the level choice of multilevel schedules
comes from one generator that every rank advances identically. With world size ``W`` (``S % W == 0``)
rank ``r`` draws shards ``r S/W, ..., (r+1) S/W - 1``. So:

* a run with ``S`` shards draws the same data, times and noise on 1, 2, ..., S processes: a
  2-process run equals a 1-process run with the same ``data_shards`` to float tolerance (only the
  order of the gradient sum differs);
* resuming on the *same* world size is bit-identical; on a *different* one (any divisor of ``S``)
  it continues the same random streams, equal to float tolerance;
* ``S = 1`` (the default) is the single-process run of earlier versions, bit for bit.

Rank 0 alone writes checkpoints, metrics, figures and the progress bar; the checkpoint holds every
shard's generator states (gathered to rank 0).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .. import _seeds

__all__ = ["World", "current_world", "init_distributed", "shard_generators", "local_shards", "MAX_SHARDS"]

MAX_SHARDS = _seeds.MAX_SHARDS


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (``size = 1``: no process group)."""

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def mean(self, value: float) -> float:
        """The mean of ``value`` over all ranks (a float64 all-reduce; ``value`` itself when alone)."""
        if not self.distributed:
            return float(value)
        t = torch.tensor([float(value)], dtype=torch.float64, device=_collective_device())
        dist.all_reduce(t)
        return float(t.item()) / self.size

    def any(self, flag: bool) -> bool:
        """True on every rank if ``flag`` is true on any rank."""
        if not self.distributed:
            return bool(flag)
        t = torch.tensor([1.0 if flag else 0.0], device=_collective_device())
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def gather(self, obj) -> list | None:
        """``[obj of rank 0, obj of rank 1, ...]`` on rank 0, ``None`` elsewhere (picklable plain data)."""
        if not self.distributed:
            return [obj]
        out = [None] * self.size if self.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def current_world() -> World:
    """The world of an initialised process group, else ``World()`` (one process)."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return World()


def init_distributed(device: torch.device) -> World:
    """Join the process group that ``torchrun`` describes (``WORLD_SIZE``, ``RANK``, ``MASTER_ADDR``...).

    Does nothing for one process. Backend: nccl for a CUDA ``device`` (each rank takes GPU
    ``LOCAL_RANK``), gloo otherwise. Returns the :class:`World`.
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
    return current_world()


def shard_generators(seed: int, shard: int) -> dict[str, torch.Generator]:
    """The data and noise generators of shard ``shard`` of a run with seed ``seed`` (CPU generators).

    Shard 0 has the streams of a single-process run (``seed * TRAINING_STRIDE + 1, + 2``).
    """
    if not 0 <= shard < MAX_SHARDS:
        raise ValueError(f"shard must lie in [0, {MAX_SHARDS}); got {shard}")
    base = int(seed) * _seeds.TRAINING_STRIDE + len(_seeds.TRAINING_STREAMS) * shard
    return {name: torch.Generator().manual_seed(base + i) for i, name in enumerate(_seeds.TRAINING_STREAMS) if name != "level"}


def local_shards(n_shards: int, world: World) -> range:
    """The shards rank ``world.rank`` draws; ``ValueError`` unless ``world.size`` divides ``n_shards``."""
    if n_shards % world.size:
        raise ValueError(f"training.data_shards ({n_shards}) must be a multiple of the number of processes "
                         f"({world.size}); set --set training.data_shards={world.size} (or a multiple) for this launch")
    per = n_shards // world.size
    return range(world.rank * per, (world.rank + 1) * per)
