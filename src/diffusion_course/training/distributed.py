"""Training one model on several processes with ``torch.distributed``, as ``torchrun`` launches
them (DistributedDataParallel: one process per GPU, or several on a CPU with the gloo backend).

    torchrun --nproc-per-node 2 -m diffusion_course train --images DIR ...

Every rank draws the same global batch of ``world x B`` examples (and its steps t and noise)
from the same seeded generator and takes its own slice of ``B``; DDP averages the gradients,
so N ranks with batch B take the very step one process takes with batch N x B. Only rank 0
writes checkpoints and the cache; the others wait for it at a barrier. One process (no
``torchrun``) is world size 1, and every function here is then a no-op.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def start() -> torch.device:
    """Join the process group ``torchrun`` describes (``$WORLD_SIZE``, ``$RANK``,
    ``$LOCAL_RANK``, ``$MASTER_ADDR``/``$MASTER_PORT``), if there is one and it is not joined
    yet: NCCL on GPUs (one per local rank), gloo on a CPU. Returns this rank's device (with
    one process: ``training.device.pick_device``'s)."""
    from .device import pick_device

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return pick_device()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    if cuda:
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def rank_and_world() -> tuple[int, int]:
    """(this process's rank, the number of processes): (0, 1) without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """True on rank 0: the process that writes files."""
    return rank_and_world()[0] == 0


def barrier() -> None:
    if rank_and_world()[1] > 1:
        dist.barrier()


def from_main(value):
    """Rank 0's ``value`` on every rank (a decision all ranks must share, e.g. whether a cache
    file exists: a rank must not see a file that rank 0 is writing at that moment)."""
    if rank_and_world()[1] == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def mean(value: torch.Tensor) -> torch.Tensor:
    """The average of ``value`` over the ranks (e.g. the loss, for the history)."""
    if rank_and_world()[1] == 1:
        return value
    out = value.detach().clone()
    dist.all_reduce(out)
    return out / rank_and_world()[1]


def shard(*tensors: torch.Tensor | None) -> list[torch.Tensor | None]:
    """This rank's slice of each tensor of a global batch (equal slices; None stays None)."""
    rank, world = rank_and_world()
    return [None if t is None else t.chunk(world)[rank] for t in tensors]


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``model`` in DistributedDataParallel when there are several ranks, else itself."""
    if rank_and_world()[1] == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    if device.type != "cuda":
        return DistributedDataParallel(model)
    return DistributedDataParallel(model, device_ids=[torch.cuda.current_device() if device.index is None
                                                      else device.index])
