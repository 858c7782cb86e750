"""PyTorch's own distributed stack, as torchrun sets it up: one process per device, DDP or FSDP2.

Without torchrun (no WORLD_SIZE in the environment) everything here is a no-op and training runs in one
process. Rank r takes the contiguous slice r of every global batch, so the data, and every per-sample random
draw, are those of one process that holds the whole batch.
"""

from __future__ import annotations

import warnings

import torch
import torch.distributed as dist

from ..distributed import Distributed, launched_by_torchrun, setup, teardown
from ..errors import SettingError

__all__ = ["FSDP_NEEDS_TORCHRUN", "Distributed", "launched_by_torchrun", "setup", "teardown", "unwrap", "wrap"]


FSDP_NEEDS_TORCHRUN = "needs torchrun (e.g. torchrun --nproc_per_node 2 -m nextscale train …)"  # fsdp's


def wrap(model: torch.nn.Module, dist_info: Distributed, device: torch.device, fsdp: bool):
    """DDP (the default under torchrun) or FSDP2: `fully_shard` per unit the model names
    (`fsdp_units()`: the transformer's blocks), then the root. One process: the model as it is."""
    if fsdp:
        from torch.distributed.fsdp import fully_shard

        if not dist.is_initialized():
            raise SettingError("fsdp", FSDP_NEEDS_TORCHRUN)
        # The transformer returns fresh logits that nothing modifies in place; FSDP2 warns about any view.
        warnings.filterwarnings("ignore", message=".*returned a view tensor")
        from torch.distributed.device_mesh import init_device_mesh

        # The mesh names the training device: without one FSDP picks the accelerator, even for a CPU run.
        mesh = init_device_mesh(device.type, (dist.get_world_size(),))
        units = model.fsdp_units() if hasattr(model, "fsdp_units") else []
        for unit in units:
            fully_shard(unit, mesh=mesh)
        fully_shard(model, mesh=mesh)
        return model
    if not dist_info.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(model, device_ids=[device.index] if device.type == "cuda" else None)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)
