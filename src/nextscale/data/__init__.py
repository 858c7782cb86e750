"""Datasets: scikit-learn's handwritten digits (built in) and image folders."""

from __future__ import annotations

from .common import class_names, identity, open_dataset, stack_items
from .digits import DigitsDataset, digits8_to_images, digits_splits, images_to_digits8
from .folders import IMAGE_EXTENSIONS, ImageFolderDataset, reference_transform, to_rgb

__all__ = [
    "DigitsDataset",
    "IMAGE_EXTENSIONS",
    "ImageFolderDataset",
    "class_names",
    "digits8_to_images",
    "digits_splits",
    "identity",
    "images_to_digits8",
    "open_dataset",
    "reference_transform",
    "stack_items",
    "to_rgb",
]
