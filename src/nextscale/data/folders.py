"""Image folders (`root/<class>/<image>`) with the reference's transforms.

Listing reads directory entries only (ImageNet's 1.28 M files are never opened up front): a broken file is
found when it is read, named in a warning, and replaced by the next readable one.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from ..errors import NextscaleError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def reference_transform(resolution: int, train: bool):
    """The reference's: shorter side to 1.125× with Lanczos, random (train) or centre crop, values in [−1, 1]."""
    from torchvision import transforms as T

    crop = T.RandomCrop(resolution) if train else T.CenterCrop(resolution)
    return T.Compose([resize_transform(resolution), crop, T.ToTensor(), T.Normalize([0.5] * 3, [0.5] * 3)])


def resize_transform(resolution: int):
    from torchvision import transforms as T

    return T.Resize(round(resolution * 1.125), interpolation=T.InterpolationMode.LANCZOS)


def _list_images(folder: Path) -> list[Path]:
    found = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.is_dir():
            found += _list_images(Path(entry.path))
        elif os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS:
            found.append(Path(entry.path))
    return found


class ImageFolderDataset(Dataset):
    """`root/<class name>/<image>`; classes sorted by name. `train`: a random crop (seeded per sample by the
    trainer's key), else the centre crop. `hflip`: flip when the key's flip bit says so."""

    deterministic = False

    def __init__(self, root: str | os.PathLike, resolution: int, train: bool = True, hflip: bool = False):
        root = Path(root)
        if not root.is_dir():
            raise NextscaleError(f"{root}: not a directory of class sub-folders")
        self.root, self.resolution, self.train, self.hflip = root, resolution, train, hflip
        self.classes = sorted(d.name for d in root.iterdir() if d.is_dir())
        if not self.classes:
            raise NextscaleError(f"{root} has no class sub-folders (expected root/<class>/<image>)")
        self.num_classes = len(self.classes)
        self.samples = [(path, label) for label, name in enumerate(self.classes) for path in _list_images(root / name)]
        if not self.samples:
            raise NextscaleError(f"{root} holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
        self.resize = resize_transform(resolution)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key) -> tuple[torch.Tensor, int]:
        """`key`: an index (a random crop from the global RNG when training), or the trainer's (index, sample
        seed, flip bit), which fixes the crop and the flip whatever process or worker reads it."""
        i, seed, flip = key if isinstance(key, tuple) else (key, None, 0)
        # A broken file (or one that broke after listing) is named and replaced by the next readable one.
        for attempt in range(len(self.samples)):
            path, label = self.samples[(i + attempt) % len(self.samples)]
            try:
                with Image.open(path) as im:
                    return self._transform(im.convert("RGB"), seed, flip), label
            except Exception as e:  # PIL raises many types for broken files
                warnings.warn(f"skipping unreadable image {path}: {e}", stacklevel=2)
        raise NextscaleError(f"no image in {self.root} could be read")

    def _transform(self, image: Image.Image, seed: int | None, flip: int) -> torch.Tensor:
        from torchvision.transforms import functional as TF

        image = self.resize(image)
        w, h = image.size
        r = self.resolution
        if self.train:
            generator = torch.Generator().manual_seed(seed) if seed is not None else None
            top = int(torch.randint(h - r + 1, (), generator=generator))
            left = int(torch.randint(w - r + 1, (), generator=generator))
        else:
            top, left = round((h - r) / 2), round((w - r) / 2)  # torchvision's CenterCrop
        x = TF.to_tensor(image.crop((left, top, left + r, top + r))).mul(2).sub(1)
        return x.flip(-1) if self.hflip and flip else x
