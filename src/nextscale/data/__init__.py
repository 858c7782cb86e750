"""Datasets: scikit-learn's handwritten digits (built in) and image folders."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from .digits import DigitsDataset, digits8_to_images, digits_splits, images_to_digits8
from .folders import IMAGE_EXTENSIONS, ImageFolderDataset, reference_transform

__all__ = [
    "DigitsDataset",
    "IMAGE_EXTENSIONS",
    "ImageFolderDataset",
    "digits8_to_images",
    "digits_splits",
    "images_to_digits8",
    "open_dataset",
    "reference_transform",
    "stack_items",
]


def open_dataset(spec: str, resolution: int, split: str = "train", seed: int = 0) -> Dataset:
    """`digits` or a path to an image folder."""
    if spec == "digits":
        return DigitsDataset(split, seed=seed, resolution=resolution)
    return ImageFolderDataset(spec, resolution, train=split == "train")


def stack_items(items) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch from a dataset's (input, label) items."""
    return torch.stack([x for x, _ in items]), torch.tensor([int(y) for _, y in items], dtype=torch.long)
