"""torchrun's process group, for any command that splits its work over processes (training, tokenizing,
sampling). Without torchrun (no WORLD_SIZE in the environment) everything here is a no-op: one process."""

from __future__ import annotations

import datetime
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import SettingError


def nextscale_command(args: list[str], nproc: int = 1, *, torchrun: bool | None = None) -> list[str]:
    """`python -m nextscale ARGS` in this interpreter, or under torchrun with `nproc` processes (by default when
    there is more than one; `--standalone`: a rendezvous on a free port the OS picks)."""
    if not (nproc > 1 if torchrun is None else torchrun):
        return [sys.executable, "-m", "nextscale", *args]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(nproc),
        "-m",
        "nextscale",
        *args,
    ]


@dataclass
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    cpu_group: object = None  # gloo group for host-side agreement (stop flags) without a device sync

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def local_batch(self, global_batch: int) -> slice:
        """This rank's share of a global batch; refuses a batch that does not divide equally."""
        if global_batch % self.world:
            raise SettingError(
                "batch_size",
                f"{global_batch} does not divide over {self.world} processes: use a multiple of {self.world}",
            )
        per = global_batch // self.world
        return slice(self.rank * per, (self.rank + 1) * per)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier(group=self.cpu_group)

    def any(self, flag: bool) -> bool:
        """Whether any rank raised `flag` (a host-side all-reduce: no device sync)."""
        if not self.enabled:
            return flag
        t = torch.tensor([int(flag)])
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.cpu_group)
        return bool(t.item())

    def broadcast_object(self, obj):
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0, group=self.cpu_group)
        return box[0]


def launched_by_torchrun() -> bool:
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def setup(device: torch.device) -> tuple[Distributed, torch.device]:
    """Joins torchrun's process group (NCCL on CUDA, gloo on CPUs) and returns this rank's device."""
    if not launched_by_torchrun():
        return Distributed(), device
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(
            backend, timeout=datetime.timedelta(minutes=30), device_id=device if device.type == "cuda" else None
        )
    cpu_group = dist.new_group(backend="gloo") if dist.get_backend() != "gloo" else dist.group.WORLD
    return Distributed(rank, world, local_rank, cpu_group), device


def teardown(*, after_error: bool = False) -> None:
    """Leaves the process group. After work every rank finished, the ranks first wait for each other: a rank that
    destroys its group while a peer is still in their last collective can abort that peer at exit (gloo's
    "terminate called without an active exception"). `after_error`: no wait, as a peer may never come."""
    if dist.is_available() and dist.is_initialized():
        if not after_error:
            dist.barrier()
        dist.destroy_process_group()
