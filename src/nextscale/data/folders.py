"""Image folders (`root/<class>/<image>`) with the reference's transforms."""

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
    return T.Compose(
        [
            T.Resize(round(resolution * 1.125), interpolation=T.InterpolationMode.LANCZOS),
            crop,
            T.ToTensor(),
            T.Normalize([0.5, 0.5, 0.5], [0.5, 0.5, 0.5]),
        ]
    )


def _readable(path: Path) -> bool:
    try:
        with Image.open(path) as im:
            im.verify()
        return True
    except Exception:  # PIL raises many types for broken files
        return False


class ImageFolderDataset(Dataset):
    """`root/<class name>/<image>`; classes sorted by name. Broken or non-image files are skipped with a warning."""

    deterministic = False

    def __init__(self, root: str | os.PathLike, resolution: int, train: bool = True):
        root = Path(root)
        if not root.is_dir():
            raise NextscaleError(f"{root}: not a directory of class sub-folders")
        self.classes = sorted(d.name for d in root.iterdir() if d.is_dir())
        if not self.classes:
            raise NextscaleError(f"{root} has no class sub-folders (expected root/<class>/<image>)")
        self.num_classes = len(self.classes)
        self.transform = reference_transform(resolution, train)
        self.samples: list[tuple[Path, int]] = []
        skipped = []
        for label, name in enumerate(self.classes):
            for path in sorted((root / name).rglob("*")):
                if not path.is_file():
                    continue
                if path.suffix.lower() in IMAGE_EXTENSIONS and _readable(path):
                    self.samples.append((path, label))
                else:
                    skipped.append(path)
        if skipped:
            shown = ", ".join(str(p) for p in skipped[:5]) + (f" … (+{len(skipped) - 5})" if len(skipped) > 5 else "")
            warnings.warn(f"skipping {len(skipped)} unreadable or non-image file(s): {shown}", stacklevel=2)
        if not self.samples:
            raise NextscaleError(f"{root} holds no readable images")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        # A file can break after the scan (a network drive, a concurrent write): warn and use the next one.
        for attempt in range(len(self.samples)):
            path, label = self.samples[(i + attempt) % len(self.samples)]
            try:
                with Image.open(path) as im:
                    return self.transform(im.convert("RGB")), label
            except Exception as e:  # PIL raises many types for broken files
                warnings.warn(f"skipping unreadable image {path}: {e}", stacklevel=2)
        raise NextscaleError("no image in the dataset could be read")
