"""What the metrics read: ADM `.npz` files (images, and `mu`/`sigma` where the file holds them), image folders
(flat, or a class-folder tree as training reads), `nextscale sample`'s output folders (their `samples.npz`), saved
feature statistics, and the built-in datasets. Images are streamed in batches, never loaded whole (50,000 images of
256×256 are 10 GB)."""

from __future__ import annotations

import json
import os
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..data import BUILTIN_DATASETS, IMAGE_EXTENSIONS, open_dataset, stack_items, to_rgb
from ..data.folders import list_images, resize_transform
from ..errors import NextscaleError
from ..files import OUTPUTS_MANIFEST, atomic_write, first_line
from ..sampling.per_class import NPZ, RECORD

# A built-in dataset's test split by its name, its train split as NAME-train: 32×32 images as the tokenizer sees them
BUILTIN = tuple(name + part for name in BUILTIN_DATASETS for part in ("", "-train"))
BUILTIN_RESOLUTION = 32  # the built-in datasets' own size
EXIF_ORIENTATION = 0x0112
ADM_FEATURES = "inception"  # ADM reference batches carry statistics of these features, without saying so


@dataclass
class Statistics:
    """A set's feature mean and covariance, in float64 (ADM stores float64; float32 costs FID digits)."""

    mu: np.ndarray
    sigma: np.ndarray
    features: str  # which network made them
    count: int | None = None

    @classmethod
    def of(cls, features: np.ndarray, network: str) -> Statistics:
        if len(features) < 2:
            raise NextscaleError(f"statistics need at least 2 images, got {len(features)}")
        f = np.asarray(features, dtype=np.float64)
        return cls(f.mean(axis=0), np.cov(f, rowvar=False), network, len(f))

    def save(self, path: str | os.PathLike) -> Path:
        def write(tmp):
            with open(tmp, "wb") as fh:
                np.savez(
                    fh,
                    mu=self.mu,
                    sigma=self.sigma,
                    features=np.str_(self.features),
                    count=np.int64(self.count if self.count is not None else -1),
                )

        return atomic_write(path, write)


@dataclass
class ImageSet:
    source: str
    count: int | None  # images; None for statistics only
    statistics: Statistics | None
    _batches: object = None  # (batch_size) → iterator of uint8 (B, 3, H, W) tensors
    size: tuple[int, int] | None = None  # (H, W) of every image it gives; None for statistics only
    notes: list[str] = field(default_factory=list)  # what was done to the input, for the user to read

    @property
    def has_images(self) -> bool:
        return self._batches is not None

    def batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        return self._batches(batch_size)


def open_set(source: str | os.PathLike, what: str = "SAMPLES", size: tuple[int, int] | None = None) -> ImageSet:
    """A `.npz` (ADM images `arr_0`, and/or `mu`/`sigma`), a folder of images, or a built-in set's name.

    `size` (H, W): what a folder's images of another size are brought to (the samples' size, for a reference);
    None: the size most of its images have."""
    text = str(source)
    if text in BUILTIN:
        return _builtin_set(text)
    path = Path(source)
    if path.is_dir():
        drawn = _drawn_samples(path, what)
        if drawn is None:
            return _folder_set(path, what, size)
        found = _npz_set(drawn, what)
        found.notes.append(f"{what} {path}: read {NPZ}, the samples nextscale sample wrote there (not its PNGs)")
        return found
    if not path.is_file():
        raise NextscaleError(
            f"{what} {path}: no such file or folder (an .npz, a folder of images, or one of {', '.join(BUILTIN)})"
        )
    if path.suffix != ".npz":
        raise NextscaleError(f"{what} {path}: expected an .npz file (ADM format or saved statistics) or a folder")
    return _npz_set(path, what)


def _npz_set(path: Path, what: str) -> ImageSet:
    try:
        return _read_npz_set(path, what)
    except (ValueError, TypeError, KeyError, zipfile.BadZipFile) as e:  # a damaged or foreign entry
        raise NextscaleError(f"{what} {path}: not an ADM or statistics .npz ({first_line(e)})") from None


def _read_npz_set(path: Path, what: str) -> ImageSet:
    try:
        with zipfile.ZipFile(path) as zf:
            names = {n.removesuffix(".npy") for n in zf.namelist()}
    except (OSError, zipfile.BadZipFile) as e:
        raise NextscaleError(f"{what} {path}: not a readable .npz ({first_line(e)})") from None
    stats = None
    if {"mu", "sigma"} <= names:
        with np.load(path, allow_pickle=False) as z:
            mu, sigma = z["mu"].astype(np.float64), z["sigma"].astype(np.float64)
            network = str(z["features"]) if "features" in names else ADM_FEATURES
            count = int(z["count"]) if "count" in names and int(z["count"]) > 0 else None
        if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)):
            raise NextscaleError(f"{what} {path}: mu {mu.shape} and sigma {sigma.shape} are not a mean and covariance")
        stats = Statistics(mu, sigma, network, count)
    if "arr_0" not in names:
        if stats is None:
            raise NextscaleError(f"{what} {path}: holds neither images (arr_0) nor statistics (mu, sigma)")
        return ImageSet(str(path), None, stats)
    count, shape = _npy_header(path, what)
    return ImageSet(str(path), count, stats, lambda bs: _npz_batches(path, count, shape, bs), shape[:2])


def _npy_header(path: Path, what: str) -> tuple[int, tuple[int, ...]]:
    with zipfile.ZipFile(path) as zf, zf.open("arr_0.npy") as fh:
        shape, fortran, dtype = _read_header(fh, path, what)
    if dtype != np.uint8 or fortran or len(shape) != 4 or shape[3] != 3:
        raise NextscaleError(f"{what} {path}: arr_0 is {dtype} {shape}; the ADM format is uint8 (N, H, W, 3)")
    return shape[0], shape[1:]


def _read_header(fh, path: Path, what: str):
    version = np.lib.format.read_magic(fh)
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    if version not in readers:
        raise NextscaleError(f"{what} {path}: arr_0 is in .npy format {version}, not 1.0 or 2.0")
    return readers[version](fh)


def _npz_batches(path: Path, count: int, shape: tuple[int, ...], batch_size: int) -> Iterator[torch.Tensor]:
    """Reads arr_0 sequentially from the archive, one batch of bytes at a time."""
    per_image = int(np.prod(shape))
    with zipfile.ZipFile(path) as zf, zf.open("arr_0.npy") as fh:
        _read_header(fh, path, "")
        for start in range(0, count, batch_size):
            n = min(batch_size, count - start)
            raw = fh.read(n * per_image)
            if len(raw) != n * per_image:
                raise NextscaleError(f"{path}: arr_0 ends after {start + len(raw) // per_image} of {count} images")
            yield torch.from_numpy(np.frombuffer(raw, np.uint8).reshape(n, *shape).copy()).permute(0, 3, 1, 2)


def _drawn_samples(folder: Path, what: str) -> Path | None:
    """The `samples.npz` of a folder `nextscale sample` wrote: it holds every sample once, while the folder's PNGs
    include `grid.png` (many samples in one picture). None for any other folder."""
    per_class = (folder / RECORD).is_file()
    if not per_class and NPZ not in _listed_outputs(folder):
        return None
    if not (folder / NPZ).is_file():  # the file appears only when complete
        raise NextscaleError(
            f"{what} {folder}: nextscale sample's folder holds no {NPZ} yet: the run has not finished "
            f"(rerun it{' to complete it' if per_class else ''})"
        )
    return folder / NPZ


def _listed_outputs(folder: Path) -> list[str]:
    """The files the outputs list of `claim_output_dir` names; none where there is no such list."""
    try:
        listed = json.loads((folder / OUTPUTS_MANIFEST).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [str(name) for name in listed] if isinstance(listed, list) else []


def _folder_set(path: Path, what: str, size: tuple[int, int] | None) -> ImageSet:
    from PIL import Image

    files = list_images(path)  # as training lists a class folder: sub-folders too, hidden ones skipped
    if not files:
        raise NextscaleError(f"{what} {path}: no images ({', '.join(IMAGE_EXTENSIONS)}) in it or its sub-folders")
    sizes = []
    for file in files:  # headers only: a wrong file is named before any feature is computed
        try:
            with Image.open(file) as im:
                upright = im.getexif().get(EXIF_ORIENTATION, 1) < 5  # 5-8: to_rgb turns it a quarter
                sizes.append((im.height, im.width) if upright else (im.width, im.height))
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            raise NextscaleError(f"{what} {file}: not a readable image ({first_line(e)})") from None
    size = size or Counter(sizes).most_common(1)[0][0]
    others = sum(s != size for s in sizes)
    notes = []
    if others:
        notes.append(
            f"{what} {path}: {others} of {len(files)} images are not {size[1]}×{size[0]}: resized and "
            "centre-cropped to it as training reads images"
        )
    return ImageSet(str(path), len(files), None, lambda bs: _folder_batches(files, bs, what, size), size, notes)


def _fit_image(image, size: tuple[int, int]):
    """A PIL image brought to `size` (H, W) as training reads images (the shorter side to 1.125× the size with
    Lanczos, then the centre crop); one of that size as it is."""
    if image.size == (size[1], size[0]):
        return image
    from torchvision.transforms import CenterCrop

    return CenterCrop(size)(resize_transform(max(size))(image))


def _folder_batches(files: list[Path], batch_size: int, what: str, size: tuple[int, int]) -> Iterator[torch.Tensor]:
    from PIL import Image

    for start in range(0, len(files), batch_size):
        batch = []
        for file in files[start : start + batch_size]:
            try:
                with Image.open(file) as im:
                    batch.append(np.asarray(_fit_image(to_rgb(im), size)))
            except (OSError, ValueError, Image.DecompressionBombError) as e:
                raise NextscaleError(f"{what} {file}: not a readable image ({first_line(e)})") from None
        yield torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2)


def _builtin_set(name: str) -> ImageSet:
    """A built-in dataset's split as uint8 images: the dataset's own [−1, 1] items, rounded to nearest, converted
    a batch at a time."""
    train = name.endswith("-train")
    data = open_dataset(name.removesuffix("-train"), BUILTIN_RESOLUTION, "train" if train else "test")

    def batches(batch_size: int) -> Iterator[torch.Tensor]:
        for start in range(0, len(data), batch_size):
            images, _ = stack_items(data[i] for i in range(start, min(start + batch_size, len(data))))
            yield images.add(1).mul(127.5).add(0.5).clamp(0, 255).to(torch.uint8)

    return ImageSet(name, len(data), None, batches, (BUILTIN_RESOLUTION, BUILTIN_RESOLUTION))
