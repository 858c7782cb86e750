"""Sampling many images in batches and writing them as they come (the library call behind `nextscale sample`)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..errors import NextscaleError
from ..files import claim_output_dir
from ..runtime import freed_memory_reused, is_int
from ..seeding import batch_generator, check_seed
from ..tokenizer import VQVAE
from ..transformer import VAR
from .outputs import NpzWriter, save_grid, save_png, to_uint8
from .sampler import check_sampling, sample
from .settings import SamplerConfig, sampler_config, with_settings_signature

GRID_IMAGES = 64


class RepeatedClasses(Sequence):
    """`n` labels for each class in `classes`, in order, without building the list."""

    def __init__(self, classes: Sequence[int], n: int):
        self.classes, self.n = list(classes), n

    def __len__(self) -> int:
        return len(self.classes) * self.n

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return self.classes[i // self.n]


@dataclass
class SampleRun:
    labels: np.ndarray  # (N,)
    images: np.ndarray | None  # (N, H, W, 3) uint8, when kept
    out_dir: Path | None
    note: str | None = None  # what was cleared from out_dir first


def check_disk(out: Path, images: int, side: int, copies: int = 1) -> None:
    """Refuses a run whose `images`, written `copies` times (npz entries, shards, PNGs at worst), would not fit."""
    need = images * copies * side * side * 3
    free = shutil.disk_usage(out).free
    if need > free:
        raise NextscaleError(
            f"{images:,} images of {side}×{side} need about {need / 1e9:,.1f} GB in {out}, "
            f"which has {free / 1e9:,.1f} GB free"
        )


@with_settings_signature
def sample_many(
    vae: VQVAE,
    var: VAR,
    labels: Sequence[int] | None,
    *,
    count: int | None = None,
    batch_size: int = 16,
    seed: int = 0,
    out_dir: str | os.PathLike | None = None,
    pngs: bool = True,
    keep_images: bool | None = None,
    progress: bool = True,
    config: SamplerConfig | None = None,
    fine_var: VAR | None = None,
    handoff: int | None = None,
    reuse_memory: bool = True,
    **settings,
) -> SampleRun:
    """Samples one image per entry of `labels` (or `count` images of random classes when `labels` is None).

    Batch b draws from `seeding.batch_generator(seed, b)`: the first batch with the seed itself, as the
    reference's `g_seed`, later ones with seeds derived from (seed, b). With `out_dir`, writes `NNNNNN.png`,
    `grid.png` and `samples.npz` as the batches come (after clearing what an earlier run wrote there);
    `keep_images` (default: without `out_dir`) also returns them. The sampler settings are those of `sample`
    (a `config` and/or keywords), checked once for every batch.
    """
    check_seed(seed)
    if labels is not None and not isinstance(labels, Sequence):
        raise NextscaleError(f"labels must be a sequence of class ids, or None with count, not {type(labels).__name__}")
    total = len(labels) if labels is not None else count
    if not is_int(total) or total < 1:
        raise NextscaleError(f"nothing to sample: give a non-empty list of labels or a count ≥ 1, got {total!r}")
    if not is_int(batch_size) or batch_size < 1:
        raise NextscaleError(f"batch_size must be an integer ≥ 1, got {batch_size!r}")
    config = sampler_config(config, **settings)
    device = check_sampling(vae, var, config, fine_var, handoff)  # before anything in out_dir changes
    side = vae.config.resolution
    out = Path(out_dir) if out_dir is not None else None
    note, writer = None, None
    if out is not None:
        note = claim_output_dir(out, "sample", ["grid.png", "samples.npz"], numbered=total if pngs else 0)
        check_disk(out, total, side, copies=2 if pngs else 1)
        writer = NpzWriter(out / "samples.npz", total, side, side)
    keep = out is None if keep_images is None else keep_images
    kept, grid, drawn_labels = [], [], []
    # One scope for all batches: the memory each batch frees serves the next (on a CPU).
    reuse = device.type == "cpu" and reuse_memory
    memory = freed_memory_reused() if reuse else nullcontext()
    try:
        with memory:
            starts = range(0, total, batch_size)
            for b, start in enumerate(tqdm(starts, desc="sampling", unit="batch", disable=not progress)):
                size = min(batch_size, total - start)
                chunk = labels[start : start + size] if labels is not None else None
                generator = batch_generator(seed, b, device)
                result = sample(
                    vae,
                    var,
                    chunk,
                    batch_size=size,
                    generator=generator,
                    config=config,
                    fine_var=fine_var,
                    handoff=handoff,
                    reuse_memory=reuse_memory,
                )
                batch = to_uint8(result.images)
                drawn_labels.append(result.labels.cpu().numpy())
                if writer is not None:
                    writer.write(batch)
                    for j, image in enumerate(batch if pngs else ()):
                        save_png(image, out / f"{start + j:06d}.png")
                if keep:
                    kept.append(batch)
                if sum(len(g) for g in grid) < GRID_IMAGES:
                    grid.append(batch[: GRID_IMAGES - sum(len(g) for g in grid)])
        all_labels = np.concatenate(drawn_labels).astype(np.int64)
        if writer is not None:
            save_grid(np.concatenate(grid), out / "grid.png", nrow=min(8, total))
            writer.close(all_labels)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    return SampleRun(all_labels, np.concatenate(kept) if keep else None, out, note)
