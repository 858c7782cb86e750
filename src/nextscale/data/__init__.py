"""Datasets: scikit-learn's handwritten digits and Fashion-MNIST (built in), and image folders."""

from __future__ import annotations

from .common import BUILTIN_DATASETS, builtin_dataset, class_names, identity, open_dataset, stack_items
from .digits import DigitsDataset, digits8_to_images, digits_splits, images_to_digits8
from .fashion import (
    FASHION_CLASSES,
    FashionMNISTDataset,
    fashion_split,
    fashion_to_images,
    images_to_fashion,
    is_fashion_folder,
)
from .folders import IMAGE_EXTENSIONS, ImageFolderDataset, reference_transform, to_rgb

__all__ = [
    "BUILTIN_DATASETS",
    "DigitsDataset",
    "FASHION_CLASSES",
    "FashionMNISTDataset",
    "IMAGE_EXTENSIONS",
    "ImageFolderDataset",
    "builtin_dataset",
    "class_names",
    "digits8_to_images",
    "digits_splits",
    "fashion_split",
    "fashion_to_images",
    "identity",
    "images_to_digits8",
    "images_to_fashion",
    "is_fashion_folder",
    "open_dataset",
    "reference_transform",
    "stack_items",
    "to_rgb",
]
