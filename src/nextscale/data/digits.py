"""scikit-learn's handwritten digits (they ship with scikit-learn: no download) as 32×32 RGB images."""

from __future__ import annotations

import functools
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..errors import NextscaleError

DIGITS_RESOLUTION = 32
DIGITS_TEST_FRACTION = 0.2


@dataclass
class DigitsSplit:
    images8: np.ndarray  # (N, 8, 8) float, ink intensity 0..16 as scikit-learn gives it
    labels: np.ndarray  # (N,)


SHIPPED_SPLIT = Path(__file__).resolve().parents[1] / "assets" / "digits_split_seed0.json"


def _digits_csv() -> Path:
    """scikit-learn's own copy of the digits, found without importing scikit-learn (1.5 s)."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        raise NextscaleError("the built-in digits come with scikit-learn: pip install scikit-learn")
    return Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"


def digits_splits(seed: int = 0) -> tuple[DigitsSplit, DigitsSplit]:
    """The fixed, stratified train/test split of the 1,797 digits (80/20, seeded): scikit-learn's
    `train_test_split(..., stratify=target, random_state=seed)`. Seed 0's split ships as indices (a test checks
    them against scikit-learn), so the usual case reads the data file and imports nothing."""
    if seed == 0 and SHIPPED_SPLIT.is_file():
        raw = np.loadtxt(_digits_csv(), delimiter=",")
        images, target = raw[:, :-1].reshape(-1, 8, 8), raw[:, -1].astype(int)
        split = json.loads(SHIPPED_SPLIT.read_text())
        train, test = np.asarray(split["train"]), np.asarray(split["test"])
        return DigitsSplit(images[train], target[train]), DigitsSplit(images[test], target[test])
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x_tr, x_te, y_tr, y_te = train_test_split(
        digits.images, digits.target, test_size=DIGITS_TEST_FRACTION, random_state=seed, stratify=digits.target
    )
    return DigitsSplit(x_tr, y_tr), DigitsSplit(x_te, y_te)


def digits8_to_images(images8: np.ndarray, resolution: int = DIGITS_RESOLUTION) -> torch.Tensor:
    """(N, 8, 8) ink 0..16 → (N, 3, R, R) in [−1, 1]: dark ink on white, upscaled bilinearly
    (align_corners=False), which keeps strokes smooth without bicubic's overshoot."""
    paper = 1.0 - torch.as_tensor(images8, dtype=torch.float32) / 16.0
    up = F.interpolate(paper[:, None], size=(resolution, resolution), mode="bilinear", align_corners=False)
    return up.mul(2).sub(1).expand(-1, 3, -1, -1).contiguous()


@functools.lru_cache(maxsize=4)
def downscale_matrix(resolution: int) -> torch.Tensor:
    """(R², 64): a flattened R×R grey image times this is its 8×8 grid (the least-squares inverse of the upscaling)."""
    basis = torch.eye(64).view(64, 1, 8, 8)
    upscale = F.interpolate(basis, size=(resolution, resolution), mode="bilinear", align_corners=False)
    return torch.linalg.pinv(upscale.view(64, -1).double())  # (R², 64)


def images_to_digits8(images: torch.Tensor) -> np.ndarray:
    """(N, 3, R, R) in [0, 1] → (N, 8, 8) ink 0..16, the scikit-learn digits' own grid and scale.

    The least-squares inverse of `digits8_to_images`' upscaling: a real digit comes back exactly, and a
    generated image gives the 8×8 grid whose upscaling is nearest to it.
    """
    R = images.shape[-1]
    grey = images.double().mean(dim=1).reshape(images.shape[0], R * R).cpu()
    paper = (grey @ downscale_matrix(R)).view(-1, 8, 8)
    return ((1.0 - paper) * 16.0).clamp(0, 16).float().numpy()


class DigitsDataset(Dataset):
    """Digits as 32×32 RGB images in [−1, 1]. Deterministic: no augmentation, so tokens can be cached."""

    num_classes = 10
    deterministic = True
    in_memory = True

    def __init__(self, split: str = "train", seed: int = 0, resolution: int = DIGITS_RESOLUTION):
        if split not in ("train", "test"):
            raise NextscaleError(f"digits split must be 'train' or 'test', got {split!r}")
        train, test = digits_splits(seed)
        part = train if split == "train" else test
        self.images = digits8_to_images(part.images8, resolution)
        self.labels = torch.as_tensor(part.labels, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key) -> tuple[torch.Tensor, int]:
        """`key`: an index, or a trainer's (index, sample seed, flip) (digits are never flipped or cropped)."""
        i = key[0] if isinstance(key, tuple) else key
        return self.images[i], int(self.labels[i])
