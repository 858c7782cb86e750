"""Turning sampler output into files: PNGs, grids and the ADM evaluator's `.npz`, written as the images come."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..data.folders import BACKGROUND, to_rgb
from ..errors import NextscaleError
from ..files import atomic_write, first_line


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [0, 1] → (B, H, W, 3) uint8, rounding to nearest (the DiT/ADM convention)."""
    return images.detach().float().mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def save_png(image_HW3: np.ndarray, path: str | os.PathLike) -> None:
    Image.fromarray(image_HW3).save(path, format="PNG")


def grid_image(images_NHW3: np.ndarray, nrow: int = 8, padding: int = 2) -> Image.Image:
    """Images side by side, `nrow` per row, on white."""
    n, h, w, _ = images_NHW3.shape
    cols, rows = min(nrow, n), -(-n // nrow)
    canvas = np.full((rows * (h + padding) + padding, cols * (w + padding) + padding, 3), 255, np.uint8)
    for i, image in enumerate(images_NHW3):
        y, x = padding + (i // cols) * (h + padding), padding + (i % cols) * (w + padding)
        canvas[y : y + h, x : x + w] = image
    return Image.fromarray(canvas)


def save_grid(images_NHW3: np.ndarray, path: str | os.PathLike, nrow: int = 8) -> Path:
    picture = grid_image(images_NHW3, nrow)
    return atomic_write(path, lambda tmp: picture.save(tmp, format="PNG"))


class NpzWriter:
    """The ADM evaluator's format, `arr_0` uint8 (N, H, W, 3) and `arr_1` the labels, streamed: images go to
    disk batch by batch in order (memory stays at one batch), and the file appears only when complete."""

    def __init__(self, path: str | os.PathLike, count: int, height: int, width: int):
        self.path, self.count, self.written = Path(path), count, 0
        self.tmp = self.path.with_name(f".{self.path.name}.partial")
        self.zip = zipfile.ZipFile(self.tmp, "w", zipfile.ZIP_STORED, allowZip64=True)
        self.entry = self.zip.open("arr_0.npy", "w", force_zip64=True)
        header = {"descr": "|u1", "fortran_order": False, "shape": (count, height, width, 3)}
        np.lib.format.write_array_header_2_0(self.entry, header)

    def write(self, images_NHW3: np.ndarray) -> None:
        if self.written + len(images_NHW3) > self.count:
            raise ValueError("more images than announced")
        self.entry.write(np.ascontiguousarray(images_NHW3, dtype=np.uint8).tobytes())
        self.written += len(images_NHW3)

    def close(self, labels: np.ndarray) -> Path:
        if self.written != self.count:
            raise ValueError(f"{self.written} images written of {self.count}")
        self.entry.close()
        with self.zip.open("arr_1.npy", "w", force_zip64=True) as fh:
            np.lib.format.write_array(fh, np.asarray(labels, dtype=np.int64))
        self.zip.close()
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Drops the partial file (a run stopped or failed)."""
        try:
            self.entry.close()
            self.zip.close()
        except (OSError, ValueError):  # closing a half-written archive may fail: it is deleted anyway
            pass
        finally:
            self.tmp.unlink(missing_ok=True)


def load_image(path: str | os.PathLike, background: tuple[int, int, int] = BACKGROUND) -> Image.Image:
    """An image file as RGB by `nextscale.data.to_rgb` (transparency on `background`); decompression bombs and
    unreadable files are refused with the file's name."""
    try:
        with Image.open(path) as im:
            return to_rgb(im, background)
    except NextscaleError as e:
        raise NextscaleError(f"{path}: {e}") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise NextscaleError(f"{path}: not a readable image ({first_line(e)})") from None
