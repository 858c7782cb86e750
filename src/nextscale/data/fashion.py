"""Fashion-MNIST (Xiao, Rasul & Vollgraf 2017; MIT licence, © Zalando): 70,000 grey 28×28 photographs of
garments in 10 classes, the standard 60,000/10,000 split, read with numpy from the four IDX files.

Where the files are looked for, in order: the folder given (`--data DIR`, `FashionMNISTDataset(root=…)`),
`$NEXTSCALE_DATA/fashion-mnist`, then `/usr/share/datasets/fashion-mnist` (Debian's `dataset-fashion-mnist`;
`$NEXTSCALE_FASHION_SYSTEM_DIR` replaces that system folder, for packagers who install it elsewhere and for tests).

How an image becomes the tokenizer's input, and back: the 28×28 grey image is padded by 2 black pixels on every
side to 32×32 (Fashion-MNIST's background is black, so the padding is more background and nothing is resampled),
its grey copied to the three channels, and scaled to [−1, 1]. Outputs go back by averaging the channels and
cropping the same 2 pixels: a real image makes the round trip exactly.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..errors import NextscaleError

FASHION_CLASSES = (
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle-boot",
)
FASHION_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
FASHION_FILE_NAMES = tuple(name for pair in FASHION_FILES.values() for name in pair)
FASHION_SIZES = {"train": 60_000, "test": 10_000}
FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
SYSTEM_DIR_VARIABLE = "NEXTSCALE_FASHION_SYSTEM_DIR"  # another system folder (a packager's; tests: none)
FASHION_PIXELS = 28
FASHION_RESOLUTION = 32
FASHION_PAD = (FASHION_RESOLUTION - FASHION_PIXELS) // 2
IDX_MAGIC = {1: 0x00000801, 3: 0x00000803}  # unsigned bytes, then the number of dimensions
INSTALL_HINT = (
    "install it with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or put its four files "
    f"({', '.join(FASHION_FILE_NAMES)}) in $NEXTSCALE_DATA/fashion-mnist or in a folder given as --data DIR"
)


def fashion_dir(root: str | os.PathLike | None = None) -> Path:
    """The folder holding the four IDX files: `root` if given, else the first of the standard places that holds
    them. Missing files are one error that says what to install or where to put what."""
    if root is not None:
        root = Path(root)
        missing = [f for f in FASHION_FILE_NAMES if not _idx_file(root, f)]
        if not root.is_dir():
            raise NextscaleError(f"Fashion-MNIST folder {root} does not exist; {INSTALL_HINT}")
        if missing:
            raise NextscaleError(
                f"Fashion-MNIST folder {root} lacks {', '.join(missing)} (of its four IDX files, each gzipped as "
                "distributed or unpacked)"
            )
        return root
    places = fashion_places()
    for place in places:
        if all(_idx_file(place, f) for f in FASHION_FILE_NAMES):
            return place
    looked = " or ".join(str(p) for p in places)
    raise NextscaleError(f"Fashion-MNIST is not installed (looked in {looked}); {INSTALL_HINT}")


def fashion_places() -> list[Path]:
    """The standard places, in the order they are searched: `$NEXTSCALE_DATA/fashion-mnist`, then the system
    folder (`$NEXTSCALE_FASHION_SYSTEM_DIR`, else Debian's)."""
    places = [Path(os.environ["NEXTSCALE_DATA"]) / "fashion-mnist"] if os.environ.get("NEXTSCALE_DATA") else []
    return [*places, Path(os.environ.get(SYSTEM_DIR_VARIABLE) or FASHION_SYSTEM_DIR)]


def is_fashion_folder(path: str | os.PathLike) -> bool:
    """Whether `path` is a folder of Fashion-MNIST's IDX files, which `--data DIR` reads as Fashion-MNIST. One of
    the four files is enough: opening it then names the ones missing, where an image folder's error would not."""
    path = Path(path)
    return path.is_dir() and any(_idx_file(path, f) for f in FASHION_FILE_NAMES)


def _idx_file(root: Path, name: str) -> Path | None:
    """The file, gzipped as distributed or already unpacked (without `.gz`)."""
    for path in (root / name, root / name.removesuffix(".gz")):
        if path.is_file():
            return path
    return None


def read_idx(path: str | os.PathLike, ndim: int) -> np.ndarray:
    """An IDX file of unsigned bytes with `ndim` dimensions (gzipped or not), checked: magic number, and a body of
    exactly the size its header gives. Any problem is one error naming the file."""
    path = Path(path)
    try:
        with gzip.open(path) if path.suffix == ".gz" else open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, gzip.BadGzipFile) as e:  # a cut-short or corrupt gzip stream
        raise NextscaleError(f"{path} is corrupt or cut short: {e}") from None
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise NextscaleError(f"{path} is cut short: {len(raw)} bytes, not even an IDX header")
    magic = int.from_bytes(raw[:4], "big")
    if magic != IDX_MAGIC[ndim]:
        raise NextscaleError(
            f"{path} is not an IDX file of {ndim}-dimensional bytes (magic number {magic:#010x}, "
            f"expected {IDX_MAGIC[ndim]:#010x})"
        )
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise NextscaleError(
            f"{path} holds {len(raw) - header} bytes of data where its header promises {expected} "
            f"(shape {'×'.join(map(str, shape))}): the file is cut short or corrupt"
        )
    return np.frombuffer(bytearray(raw), dtype=np.uint8, offset=header).reshape(shape)  # writable, as numpy's


def fashion_split(split: str, root: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 28, 28) uint8, labels (N,) int64) of the `train` or `test` split, checked against each other."""
    if split not in FASHION_FILES:
        raise NextscaleError(f"Fashion-MNIST split must be 'train' or 'test', got {split!r}")
    folder = fashion_dir(root)
    image_file, label_file = (_idx_file(folder, name) for name in FASHION_FILES[split])
    images, labels = read_idx(image_file, 3), read_idx(label_file, 1)
    if images.shape[0] != labels.shape[0]:
        raise NextscaleError(f"{image_file} holds {images.shape[0]} images but {label_file} {labels.shape[0]} labels")
    if images.shape[1:] != (FASHION_PIXELS, FASHION_PIXELS):
        raise NextscaleError(f"{image_file} holds {'×'.join(map(str, images.shape[1:]))} images, not 28×28")
    if labels.size and labels.max() >= len(FASHION_CLASSES):
        raise NextscaleError(f"{label_file} holds label {labels.max()}: Fashion-MNIST has classes 0…9")
    return images, labels.astype(np.int64)


def fashion_to_images(grey: np.ndarray | torch.Tensor, resolution: int = FASHION_RESOLUTION) -> torch.Tensor:
    """(N, 28, 28) uint8 → (N, 3, R, R) in [−1, 1]: padded with black to 32×32, grey in every channel (resized
    bilinearly after padding where R is not 32)."""
    return _one_channel(grey, resolution).expand(-1, 3, -1, -1).contiguous()


def _one_channel(grey: np.ndarray | torch.Tensor, resolution: int) -> torch.Tensor:
    """`fashion_to_images`' grey channel, (N, 1, R, R): a third of its memory (the train split's RGB is 740 MB)."""
    x = torch.as_tensor(np.asarray(grey), dtype=torch.float32).div(255).mul(2).sub(1)
    x = F.pad(x[:, None], (FASHION_PAD,) * 4, value=-1.0)
    if resolution != FASHION_RESOLUTION:
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)
    return x


def images_to_fashion(images: torch.Tensor) -> np.ndarray:
    """(N, 3, R, R) in [0, 1] → (N, 28, 28) uint8: the channels' mean, back to 32×32 if needed, padding cropped."""
    grey = images.float().mean(dim=1, keepdim=True).cpu()
    if grey.shape[-1] != FASHION_RESOLUTION:
        grey = F.interpolate(grey, size=(FASHION_RESOLUTION,) * 2, mode="bilinear", align_corners=False)
    inner = grey[:, 0, FASHION_PAD : FASHION_PAD + FASHION_PIXELS, FASHION_PAD : FASHION_PAD + FASHION_PIXELS]
    return inner.mul(255).round().clamp(0, 255).to(torch.uint8).numpy()


class FashionMNISTDataset(Dataset):
    """Fashion-MNIST as 32×32 RGB images in [−1, 1]. Deterministic (no augmentation), so tokens can be cached."""

    num_classes = len(FASHION_CLASSES)
    classes = list(FASHION_CLASSES)
    deterministic = True
    in_memory = True
    rendering = "padding with black"

    def __init__(self, split: str = "train", root=None, resolution: int = FASHION_RESOLUTION):
        grey, labels = fashion_split(split, root)
        self.split, self.grey = split, grey
        self.images = _one_channel(grey, resolution)  # items are RGB views of the one grey channel
        self.labels = torch.as_tensor(labels, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key) -> tuple[torch.Tensor, int]:
        """`key`: an index, or a trainer's (index, sample seed, flip) (never flipped or cropped)."""
        i = key[0] if isinstance(key, tuple) else key
        return self.images[i].expand(3, -1, -1), int(self.labels[i])
