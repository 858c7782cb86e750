"""What every dataset shares: opening one by name, batching its items, its identity and its class names."""

from __future__ import annotations

import hashlib

import torch
from torch.utils.data import Dataset

from .digits import DigitsDataset
from .fashion import FashionMNISTDataset, is_fashion_folder
from .folders import ImageFolderDataset

BUILTIN_DATASETS = ("digits", "fashion-mnist")  # what `--data NAME` means besides a folder


def builtin_dataset(spec) -> str | None:
    """Which built-in dataset `spec` opens as: its name, or `fashion-mnist` for a folder of Fashion-MNIST's IDX
    files; None for an image folder. A built-in dataset has its own train and test splits."""
    text = str(spec)
    if text in BUILTIN_DATASETS:
        return text
    return "fashion-mnist" if is_fashion_folder(text) else None


def open_dataset(spec, resolution: int, split: str = "train", seed: int = 0, root=None) -> Dataset:
    """`digits`, `fashion-mnist` (from `root`, else its standard places), a folder of Fashion-MNIST's IDX files,
    or a path to an image folder (`split` "train": random crops, else centre crops)."""
    kind = builtin_dataset(spec)
    if kind == "digits":
        return DigitsDataset(split, seed=seed, resolution=resolution)
    if kind == "fashion-mnist":
        return FashionMNISTDataset(split, root=root if str(spec) == "fashion-mnist" else spec, resolution=resolution)
    return ImageFolderDataset(spec, resolution, train=split == "train")


def stack_items(items) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch from a dataset's (input, label) items."""
    return torch.stack([x for x, _ in items]), torch.tensor([int(y) for _, y in items], dtype=torch.long)


def identity(dataset: Dataset | None) -> str | None:
    """What a dataset holds, as a short string that another dataset gives only with the same contents, wherever it
    lies: a run records it and refuses to resume on other data. The digits: their split's size and labels (a
    split is drawn by its seed); token shards: their index, which names the tokenizer and the images; an image
    folder: every image's path under it and size (read from the directory, not the images); Fashion-MNIST: its
    split's size and labels, wherever its files lie."""
    if dataset is None:
        return None
    if hasattr(dataset, "index_sha256"):  # token shards (by what they hold, not by class: tokens.py imports this)
        return f"tokens:{len(dataset)}:{dataset.index_sha256[:12]}"
    digest = hashlib.sha256()
    if isinstance(dataset, DigitsDataset):
        digest.update(dataset.labels.numpy().astype("<i8").tobytes())
        return f"digits:{len(dataset)}:{digest.hexdigest()[:12]}"
    if isinstance(dataset, FashionMNISTDataset):  # the standard split, wherever its files lie
        digest.update(dataset.labels.numpy().astype("<i8").tobytes())
        return f"fashion-mnist:{len(dataset)}:{digest.hexdigest()[:12]}"
    if isinstance(dataset, ImageFolderDataset):
        for path, _ in dataset.samples:
            digest.update(f"{path.relative_to(dataset.root).as_posix()}\0{path.stat().st_size}\0".encode())
        return f"images:{len(dataset)}:{digest.hexdigest()[:12]}"
    return f"{type(dataset).__name__}:{len(dataset)}"  # a dataset of the user's own: its kind and size only


def class_names(dataset: Dataset) -> list[str] | None:
    """A dataset's class names by label: a folder's sub-folder names, else the labels as text (the digits' are
    "0" … "9"); None for a dataset that does not say how many classes it has."""
    names = getattr(dataset, "classes", None)
    if names:
        return [str(name) for name in names]
    count = getattr(dataset, "num_classes", None)
    return None if count is None else [str(c) for c in range(count)]
