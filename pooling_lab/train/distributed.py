"""One run on several processes (torchrun): who this process is, and what the processes agree on.

``torchrun --nproc_per_node=G -m pooling_lab run EXP.yaml`` starts G copies of ``pooling-lab
run``; ``join()`` reads the variables torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``) and joins the process group: NCCL where CUDA is present, gloo
on CPUs.  Every rank runs the same runs in the same order and trains each data-parallel;
rank 0 alone claims runs and writes results.  Decisions that must be the same on every rank
(which run is next, whether a signal asked to stop) are broadcast through a second, gloo group
on the host, so they never wait for the device.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, NoReturn

import torch
import torch.distributed as dist

from pooling_lab.errors import UserError

TIMEOUT = timedelta(minutes=30)  # how long a rank waits for the others at a collective


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    host_group: Any = None  # the gloo group for host-side decisions

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def share(self, choice: int) -> int:
        """Rank 0's ``choice`` on every rank (the others' arguments are ignored)."""
        if not self.distributed:
            return choice
        value = torch.tensor([choice], dtype=torch.long)
        dist.broadcast(value, src=0, group=self.host_group)
        return int(value.item())

    def any_signal(self, signum: int | None) -> int | None:
        """The largest signal number any rank received, or None when none did."""
        if not self.distributed:
            return signum
        value = torch.tensor([signum or 0], dtype=torch.long)
        dist.all_reduce(value, op=dist.ReduceOp.MAX, group=self.host_group)
        return int(value.item()) or None

    def sum_(self, tensors: list[torch.Tensor]) -> None:
        """Sum each tensor over the ranks, in place, on its device (no host wait under NCCL)."""
        if self.distributed:
            for tensor in tensors:
                dist.all_reduce(tensor)

    def mean_(self, tensor: torch.Tensor) -> torch.Tensor:
        """The tensor averaged over the ranks, in place."""
        if self.distributed:
            dist.all_reduce(tensor)
            tensor /= self.size
        return tensor

    def wait_for_all(self) -> None:
        if self.distributed:
            dist.barrier(group=self.host_group)

    def close(self) -> None:
        """Leave the process group (at the end of ``pooling-lab run``)."""
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


SINGLE = World()


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def join() -> World:
    """This process's place in the torchrun world (``SINGLE`` when not started by torchrun)."""
    if not launched_by_torchrun():
        return SINGLE
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if cuda else "gloo", timeout=TIMEOUT)
    host_group = dist.new_group(backend="gloo") if cuda else dist.group.WORLD
    return World(dist.get_rank(), dist.get_world_size(), local_rank, host_group)


def start_torchrun(gpus: int, arguments: list[str]) -> NoReturn:
    """Replace this process by ``torchrun --standalone --nproc_per_node=GPUS -m pooling_lab
    ARGUMENTS`` (torchrun then gets the signals: Ctrl-C and SIGTERM reach every rank)."""
    if launched_by_torchrun():
        raise UserError("--gpus cannot be used under torchrun, which already started the processes", field="--gpus")
    found = torch.cuda.device_count()
    if found < gpus:
        raise UserError(f"asks for {gpus} GPUs and this machine has {found} that CUDA can use; on CPUs start "
                        "processes with torchrun --nproc_per_node=N -m pooling_lab run ... (gloo)", field="--gpus")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}",
               "-m", "pooling_lab", *arguments]
    sys.stdout.flush()
    os.execv(sys.executable, command)


def check_batch_divides(batch_size: int, m_per_class: int | None, world: World, source: str) -> None:
    """Each rank trains on batch_size / world size images of every batch: whole classes of an
    M-per-class batch, so that a pair loss finds its positives on the rank."""
    if batch_size % world.size:
        raise UserError(f"{batch_size} images do not divide among {world.size} processes; "
                        f"choose a batch size that is a multiple of {world.size}", source=source, field="train.batch_size")
    if m_per_class is not None and (batch_size // m_per_class) % world.size:
        raise UserError(f"batches of {batch_size // m_per_class} classes do not divide among {world.size} processes; "
                        f"choose a batch size that holds a multiple of {world.size} classes",
                        source=source, field="train.batch_sampler.m_per_class")


def check_sync_batchnorm(sync: bool, device: torch.device, world: World, source: str) -> None:
    """SyncBatchNorm works on CUDA only (torch refuses CPU inputs in a process group)."""
    if sync and world.distributed and device.type != "cuda":
        raise UserError(f"SyncBatchNorm needs CUDA, and these {world.size} processes train on {device.type}; "
                        "set train.sync_batchnorm: false", source=source, field="train.sync_batchnorm")


def with_sync_batchnorm(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with every batch norm replaced, in place, by a SyncBatchNorm holding the same
    parameters and statistics (so an optimiser built before still updates them)."""
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)


def data_parallel(model: torch.nn.Module, device: torch.device, world: World, sync_batchnorm: bool) -> torch.nn.Module:
    """The module a training step calls: ``model`` itself on one process, else wrapped in
    DistributedDataParallel (its forward averages the gradients over the ranks), with the batch
    norms made SyncBatchNorm when asked.  The wrapper shares ``model``'s parameters."""
    if not world.distributed:
        return model
    if sync_batchnorm:
        model = with_sync_batchnorm(model)
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
