"""Batches for each step: this rank's slice of the global batch, with each sample's random draws (crop, flip)
seeded by (seed, step, position in the global batch), so neither the world size nor the worker count changes
what a step sees."""

from __future__ import annotations

import functools
import signal
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..data import stack_items
from ..seeding import derive_seed, derived_generator
from .common import global_batch


def step_keys(step: int, n: int, batch_size: int, seed: int, local: slice) -> list[tuple[int, int, int]]:
    """(index, sample seed, flip bit) of each sample of this rank's slice of the global batch of `step`. The
    sample seeds are drawn for the whole global batch from (seed, step); the flip bit depends on (seed, epoch,
    index) only: one orientation per image per epoch."""
    epoch, indices = global_batch(step, n, batch_size, seed)
    sample_seeds = torch.randint(2**62, (batch_size,), generator=derived_generator(seed, 4, step))[local]
    flips = epoch_flips(seed, epoch, n)[indices[local]]
    return list(zip(indices[local].tolist(), sample_seeds.tolist(), flips.tolist()))


@functools.lru_cache(maxsize=2)
def epoch_flips(seed: int, epoch: int, n: int) -> torch.Tensor:
    return torch.randint(2, (n,), generator=derived_generator(seed, 5, epoch), dtype=torch.uint8)


class StepSampler(Sampler):
    """A batch sampler for `DataLoader`: the keys of steps `start` … `end − 1`."""

    def __init__(self, n: int, batch_size: int, seed: int, local: slice, start: int, end: int):
        self.n, self.batch_size, self.seed, self.local, self.start, self.end = n, batch_size, seed, local, start, end

    def __iter__(self):
        for step in range(self.start, self.end):
            yield step_keys(step, self.n, self.batch_size, self.seed, self.local)

    def __len__(self) -> int:
        return self.end - self.start


def _ignore_stop_signals(worker_id: int) -> None:
    """SIGTERM and Ctrl-C reach the whole process group (torchrun's, a terminal's): the main process saves and
    stops, its readers must not die first (the DataLoader would report them as crashed)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def step_batches(dataset: Dataset, cfg, local: slice, start: int, end: int, device: torch.device) -> Iterator:
    """(inputs, labels) on `device` for each step from `start` to `end`. In-memory datasets are indexed in
    the main process; others are read by `cfg.workers` DataLoader workers, in the same order."""
    n = len(dataset)
    if getattr(dataset, "in_memory", False) or cfg.workers == 0:
        for step in range(start, end):
            x, y = stack_items([dataset[key] for key in step_keys(step, n, cfg.batch_size, cfg.seed, local)])
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        return
    sampler = StepSampler(n, cfg.batch_size, cfg.seed, local, start, end)
    loader = DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=cfg.workers,
        pin_memory=device.type == "cuda",
        collate_fn=stack_items,
        worker_init_fn=_ignore_stop_signals,
    )
    for x, y in loader:
        yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def evaluation_batches(dataset: Dataset, count: int, batch_size: int, seed: int, dist) -> Iterator:
    """(inputs, labels) of this rank's share of the first `count` items (rounded down to a multiple of the world
    size, so every rank runs the same number of forwards: FSDP's are collective). Crops are seeded by the item:
    the same evaluation whatever the world size."""
    per_rank = evaluation_size(dataset, count, dist) // dist.world
    mine = range(dist.rank * per_rank, (dist.rank + 1) * per_rank)
    for start in range(0, per_rank, batch_size):
        keys = [(i, derive_seed(seed, 8, i), 0) for i in mine[start : start + batch_size]]
        yield stack_items([dataset[key] for key in keys])


def evaluation_size(dataset: Dataset, count: int, dist) -> int:
    """How many items `evaluation_batches` covers over all ranks."""
    return max(1, min(len(dataset), count) // dist.world) * dist.world


def sum_over_ranks(values: torch.Tensor, dist, device: torch.device) -> torch.Tensor:
    """Sums a CPU tensor over ranks (on the device: NCCL reduces device tensors only)."""
    if not dist.enabled:
        return values
    reduced = values.to(device)
    torch.distributed.all_reduce(reduced)
    return reduced.cpu()
