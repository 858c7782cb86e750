"""Turning sampler output into files: PNGs, grids and the ADM evaluator's `.npz`."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.utils import make_grid

from .errors import NextscaleError
from .pretrained import atomic_write


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [0, 1] → (B, H, W, 3) uint8, rounding to nearest (the DiT/ADM convention)."""
    return images.detach().float().mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def save_png(image_HW3: np.ndarray, path: str | os.PathLike) -> None:
    Image.fromarray(image_HW3).save(path)


def save_grid(images: torch.Tensor, path: str | os.PathLike, nrow: int = 8, padding: int = 2) -> Path:
    grid = make_grid(images.detach().float().cpu().clamp(0, 1), nrow=nrow, padding=padding, pad_value=1.0)
    path = Path(path)
    atomic_write(path, lambda tmp: Image.fromarray(to_uint8(grid[None])[0]).save(tmp, format="PNG"))
    return path


def write_npz(path: str | os.PathLike, images_NHW3: np.ndarray, labels: np.ndarray) -> Path:
    """The ADM evaluator's format: `arr_0` uint8 (N, H, W, 3), plus `arr_1` the class labels."""
    path = Path(path)

    def write(tmp):
        with open(tmp, "wb") as fh:
            np.savez(fh, images_NHW3, labels)

    atomic_write(path, write)
    return path


def load_image(path: str | os.PathLike) -> Image.Image:
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, ValueError) as e:
        raise NextscaleError(f"{path}: not a readable image ({e})") from None
