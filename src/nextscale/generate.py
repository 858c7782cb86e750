"""Sampling many images in batches and writing them out (the library call behind `nextscale sample`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .images import save_grid, save_png, to_uint8, write_npz
from .sampling import sample
from .seeding import derived_generator
from .tokenizer import VQVAE
from .transformer import VAR


@dataclass
class SampleRun:
    images: np.ndarray  # (N, H, W, 3) uint8
    labels: np.ndarray  # (N,)
    out_dir: Path | None


def sample_many(
    vae: VQVAE,
    var: VAR,
    labels: list[int],
    *,
    batch_size: int = 16,
    seed: int = 0,
    out_dir: str | os.PathLike | None = None,
    progress: bool = True,
    **sample_kwargs,
) -> SampleRun:
    """Samples one image per entry of `labels`; with `out_dir`, writes `NNNNNN.png`, `grid.png`, `samples.npz`."""
    device = var.head.weight.device
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    chunks = [labels[i : i + batch_size] for i in range(0, len(labels), batch_size)]
    images, first = [], []
    for b, chunk in enumerate(tqdm(chunks, desc="sampling", unit="batch", disable=not progress)):
        result = sample(var, vae, chunk, generator=derived_generator(seed, b, device=device), **sample_kwargs)
        batch = to_uint8(result.images)
        if out is not None:
            for j, img in enumerate(batch):
                save_png(img, out / f"{b * batch_size + j:06d}.png")
        images.append(batch)
        if sum(len(x) for x in first) < 64:
            first.append(result.images.cpu())
    all_images, all_labels = np.concatenate(images), np.asarray(labels, dtype=np.int64)
    if out is not None:
        save_grid(torch.cat(first)[:64], out / "grid.png", nrow=min(8, len(labels)))
        write_npz(out / "samples.npz", all_images, all_labels)
    return SampleRun(all_images, all_labels, out)
