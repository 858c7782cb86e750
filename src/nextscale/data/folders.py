"""Image folders (`root/<class>/<image>`) with the reference's transforms, and `to_rgb`, the one conversion of a
user's image to RGB.

Classes are the root's sub-folders in sorted name order (Python's `sorted`, as torchvision's ImageFolder: "10"
comes before "2"); hidden folders and files (`.ipynb_checkpoints/`, macOS's `._x.png`) belong to no class, and a
class folder without a readable image is an error that names it. Listing opens each file's header, never its
pixels: a file that is not an image to read is skipped and named (`dataset.skipped`), so every index is the image
it names, never a stand-in. A file whose header reads but whose pixels do not decode (cut short) is named in an
error when it is read.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset

from ..errors import NextscaleError
from ..files import first_line

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
# Transparent pixels become white: the page a document, a logo or a product photo is shown on.
BACKGROUND = (255, 255, 255)
# A mask's transparent pixels are unpainted (white marks the region), so they become black: kept.
MASK_BACKGROUND = (0, 0, 0)
SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # grey with values 0…65535 (mode I: read as such)
ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
UNSUPPORTED_MODES = {"F": "32-bit float pixels (mode F) have no one scale to 8 bits: save it as 8- or 16-bit"}
HEADER_THREADS = 16  # listing waits on the disk, not the CPU: enough reads in flight to hide a network disk


def to_rgb(image: Image.Image, background: tuple[int, int, int] = BACKGROUND) -> Image.Image:
    """Any image PIL opens → 8-bit RGB, upright: EXIF orientation applied, transparency (RGBA, LA, a palette's
    or a colour's) composited on `background`, 16-bit grey scaled to 8 bits (PIL's own conversion clips at 255,
    which turns it almost all white), palette, CMYK and 1-bit images converted by PIL."""
    if image.mode in UNSUPPORTED_MODES:
        raise NextscaleError(UNSUPPORTED_MODES[image.mode])
    image = ImageOps.exif_transpose(image)
    if image.mode in SIXTEEN_BIT:
        grey = np.rint(np.asarray(image, dtype=np.float64) / 257).clip(0, 255)  # 65535 / 257 = 255
        image = Image.fromarray(grey.astype(np.uint8), "L")
    if image.mode in ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        out = Image.new("RGB", rgba.size, background)
        out.paste(rgba, mask=rgba.getchannel("A"))
        return out
    return image.convert("RGB")


def header_problem(path: str | os.PathLike) -> str | None:
    """Why the file is not an image `to_rgb` converts, read from its header only (no pixel decoded); None if it
    is one."""
    try:
        with Image.open(path) as im:
            return UNSUPPORTED_MODES.get(im.mode)
    except Image.UnidentifiedImageError:
        return "not an image file"
    except Exception as e:  # PIL raises many types for broken headers
        return first_line(e)


def name_files(names: list[str], limit: int = 5) -> str:
    """'a.png, b.png, … (+3 more)'."""
    more = f", … (+{len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def reference_transform(resolution: int, train: bool):
    """The reference's: shorter side to 1.125× with Lanczos, random (train) or centre crop, values in [−1, 1]."""
    from torchvision import transforms as T

    crop = T.RandomCrop(resolution) if train else T.CenterCrop(resolution)
    return T.Compose([resize_transform(resolution), crop, T.ToTensor(), T.Normalize([0.5] * 3, [0.5] * 3)])


def resize_transform(resolution: int):
    from torchvision import transforms as T

    return T.Resize(round(resolution * 1.125), interpolation=T.InterpolationMode.LANCZOS)


def visible_entries(folder: str | os.PathLike) -> list[os.DirEntry]:
    """A folder's entries in name order, hidden ones (`.*`: `.ipynb_checkpoints/`, macOS's `._x.png`) left out."""
    return sorted((e for e in os.scandir(folder) if not e.name.startswith(".")), key=lambda e: e.name)


def list_images(folder: Path) -> list[Path]:
    """A folder's image files (by extension), sub-folders too, hidden ones left out: what training and `eval` read."""
    found = []
    for entry in visible_entries(folder):
        if entry.is_dir():
            found += list_images(Path(entry.path))
        elif os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS:
            found.append(Path(entry.path))
    return found


class UnreadableImage(NextscaleError):
    """A listed image whose pixels do not decode. DataLoader re-raises a worker's exception as its type built
    from the whole traceback's text; the message is taken back from the traceback's last line, so the command
    still reports it in one line."""

    def __init__(self, message: str):
        if message.startswith("Caught "):
            message = message.rstrip().splitlines()[-1].split(f"{type(self).__name__}: ", 1)[-1]
        super().__init__(message)


class ImageFolderDataset(Dataset):
    """`root/<class name>/<image>`; classes in sorted name order. `train`: a random crop (seeded per sample by
    the trainer's key), else the centre crop. `hflip`: flip when the key's flip bit says so. `skipped`: the
    (relative path, why) of each listed file that is not an image to read."""

    deterministic = False

    def __init__(self, root: str | os.PathLike, resolution: int, train: bool = True, hflip: bool = False):
        root = Path(root)
        if not root.is_dir():
            raise NextscaleError(f"{root}: not a directory of class sub-folders")
        self.root, self.resolution, self.train, self.hflip = root, resolution, train, hflip
        self.classes = [e.name for e in visible_entries(root) if e.is_dir()]
        if not self.classes:
            raise NextscaleError(f"{root} has no class sub-folders (expected root/<class>/<image>)")
        self.num_classes = len(self.classes)
        listed = [(path, label) for label, name in enumerate(self.classes) for path in list_images(root / name)]
        self._check_every_class(listed, "holds no image files")
        with ThreadPoolExecutor(HEADER_THREADS) as pool:
            problems = list(pool.map(header_problem, [path for path, _ in listed]))
        self.samples = [sample for sample, problem in zip(listed, problems) if problem is None]
        self.skipped = [(self.name(path), why) for (path, _), why in zip(listed, problems) if why is not None]
        self._check_every_class(self.samples, "holds no readable image")
        if self.skipped:
            shown = name_files([f"{name} ({why})" for name, why in self.skipped])
            warnings.warn(f"{root}: skipped {len(self.skipped)} file(s) that are not images: {shown}", stacklevel=2)
        self.resize = resize_transform(resolution)

    def _check_every_class(self, samples: list[tuple[Path, int]], problem: str) -> None:
        # A class without images would still take a label: the model would learn a class it never saw.
        found = {label for _, label in samples}
        empty = [name for label, name in enumerate(self.classes) if label not in found]
        if empty:
            raise NextscaleError(
                f"{self.root / empty[0]} {problem} ({len(empty)} such class folder(s)): each sub-folder of "
                f"{self.root} is a class; remove it or fill it"
            )

    def name(self, path: Path) -> str:
        """A listed file's name relative to the root (`two/x.png`)."""
        return path.relative_to(self.root).as_posix()

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key) -> tuple[torch.Tensor, int]:
        """`key`: an index (a random crop from the global RNG when training), or the trainer's (index, sample
        seed, flip bit), which fixes the crop and the flip whatever process or worker reads it."""
        i, seed, flip = key if isinstance(key, tuple) else (key, None, 0)
        path, label = self.samples[i]
        try:
            with Image.open(path) as im:
                image = to_rgb(im)
        except Exception as e:  # PIL raises many types for broken pixel data
            raise UnreadableImage(f"{path}: its pixels do not decode ({first_line(e)}): fix or remove it") from None
        return self._transform(image, seed, flip), label

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
