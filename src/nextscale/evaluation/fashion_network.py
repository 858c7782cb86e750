"""The Fashion-MNIST feature network: a small CNN trained on the 60,000 training images only, that reads what the
metrics see (uint8 (N, 3, 32, 32): the 28×28 garment padded with black, its grey in every channel) and gives the
hidden layer's features (N, 128) for the Fréchet distance, precision/recall and KID, and class logits (N, 10)
for the Inception Score and the verdicts.

Retrain the shipped weights (deterministic given the seed and the thread count; minutes on one CPU core):

    python -m nextscale.evaluation.fashion_network --out src/nextscale/assets/fashion-network
"""

from __future__ import annotations

import argparse
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from ..data.fashion import FASHION_CLASSES, FASHION_PAD, FASHION_PIXELS, FASHION_RESOLUTION, fashion_split
from ..errors import CheckpointError, NextscaleError
from ..pretrained import PretrainedMixin
from ..registry import BUILTIN_DIR

NETWORK_DIR = BUILTIN_DIR / "fashion-network"
PIXEL_MEAN, PIXEL_STD = 0.2860, 0.3530  # of the training images' pixels in [0, 1]


@dataclass
class FashionNetworkConfig:
    channels: tuple[int, ...] = (16, 32, 64)  # one 3×3 convolution per stage, each followed by a 2×2 max-pool
    hidden: int = 128  # the features
    num_classes: int = len(FASHION_CLASSES)
    resolution: int = FASHION_RESOLUTION  # what it reads; the centre 28×28 is the garment

    def __post_init__(self):
        self.channels = tuple(self.channels)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainSettings:
    seed: int = 0
    epochs: int = 12
    batch_size: int = 128
    lr: float = 3e-3  # AdamW's peak, then a cosine decay to 0
    weight_decay: float = 5e-4
    dropout: float = 0.2  # on the features, during training only
    shift: int = 2  # pixels: random translations up to this far, filled with the black background
    flip: bool = True  # random horizontal flips: garments are mirror-symmetric classes
    threads: int = 1  # the result depends on the thread count (the order of float sums)
    limit: int | None = None  # train on the first N training images only (for tests)


class FashionNetwork(PretrainedMixin, nn.Module):
    """uint8 (N, 3, 32, 32) → (features (N, hidden), logits (N, 10)); the padding is cropped before anything."""

    model_type = "fashion-network"
    config_class = FashionNetworkConfig

    def __init__(self, config: FashionNetworkConfig | None = None, *, device: str | torch.device | None = None):
        super().__init__()
        self.config = config = config or FashionNetworkConfig()
        with torch.device(device or "cpu"):  # "meta": shapes only, for loading
            stages, c_in = [], 1
            for c in config.channels:
                stages += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2)]
                c_in = c
            self.body = nn.Sequential(*stages)
            side = FASHION_PIXELS // 2 ** len(config.channels)
            self.hidden = nn.Linear(c_in * side * side, config.hidden)
            self.head = nn.Linear(config.hidden, config.num_classes)
        self.dropout = nn.Dropout(0.0)

    def grey(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, 32, 32) → the normalised garment (N, 1, 28, 28), exactly as the training images."""
        crop = slice(FASHION_PAD, FASHION_PAD + FASHION_PIXELS)
        grey = images[:, :, crop, crop].float().mean(dim=1, keepdim=True)  # the mean of 3 equal integers is exact
        return (grey / 255 - PIXEL_MEAN) / PIXEL_STD

    def classify(self, grey: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.hidden(self.body(grey).flatten(1)).relu()
        return features, self.head(self.dropout(features))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.classify(self.grey(images))


def load_fashion_network(directory: str | os.PathLike = NETWORK_DIR) -> FashionNetwork:
    """The shipped network (its file is memory-mapped: loading costs milliseconds)."""
    try:
        return FashionNetwork.from_pretrained(directory)
    except CheckpointError as e:
        raise NextscaleError(
            f"the Fashion-MNIST feature network is missing or damaged ({e}); retrain it with "
            f"`python -m nextscale.evaluation.fashion_network --out {directory}`"
        ) from None


def fashion_uint8(grey: np.ndarray) -> torch.Tensor:
    """(N, 28, 28) uint8 → (N, 3, 32, 32) uint8 as the tokenizer renders Fashion-MNIST (data/fashion.py)."""
    padded = np.pad(grey, ((0, 0), (FASHION_PAD,) * 2, (FASHION_PAD,) * 2))
    return torch.from_numpy(padded)[:, None].expand(-1, 3, -1, -1).contiguous()


def _augment(grey: torch.Tensor, settings: TrainSettings, generator: torch.Generator) -> torch.Tensor:
    """Per image: a shift of up to `shift` pixels with black (normalised) fill, and a horizontal flip."""
    n, side, s = len(grey), FASHION_PIXELS, settings.shift
    if s:
        black = -PIXEL_MEAN / PIXEL_STD
        padded = F.pad(grey, (s, s, s, s), value=black)
        dy, dx = (torch.randint(0, 2 * s + 1, (n,), generator=generator) for _ in range(2))
        rows = (dy[:, None] + torch.arange(side))[:, :, None]
        cols = (dx[:, None] + torch.arange(side))[:, None, :]
        grey = padded[torch.arange(n)[:, None, None], 0, rows, cols][:, None]
    if settings.flip:
        flip = torch.rand(n, generator=generator) < 0.5
        grey = torch.where(flip[:, None, None, None], grey.flip(-1), grey)
    return grey


@torch.no_grad()
def accuracy(network: FashionNetwork, images: torch.Tensor, labels: np.ndarray, batch_size: int = 1000) -> float:
    """The share of uint8 (N, 3, 32, 32) images classified as their label."""
    network.eval()
    predicted = torch.cat([network(batch)[1].argmax(1) for batch in images.split(batch_size)])
    return float((predicted.numpy() == labels).mean())


def train_fashion_network(
    settings: TrainSettings | None = None, root=None, progress: bool = True
) -> tuple[FashionNetwork, float]:
    """(the network trained on the training split, its accuracy on the 10,000 test images)."""
    settings = settings or TrainSettings()
    threads = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    try:
        with torch.random.fork_rng(devices=[]):  # the weights and dropout from the seed; the caller's RNG untouched
            torch.manual_seed(settings.seed)
            return _train(settings, root, progress)
    finally:
        torch.set_num_threads(threads)


def _train(settings: TrainSettings, root, progress: bool) -> tuple[FashionNetwork, float]:
    train_grey, train_labels = fashion_split("train", root)
    train_grey, train_labels = train_grey[: settings.limit], train_labels[: settings.limit]
    network = FashionNetwork()
    generator = torch.Generator().manual_seed(settings.seed)  # the order and the augmentation
    network.dropout.p = settings.dropout
    x = network.grey(fashion_uint8(train_grey))
    y = torch.from_numpy(train_labels)
    steps_per_epoch = math.ceil(len(y) / settings.batch_size)
    total = settings.epochs * steps_per_epoch
    optimizer = torch.optim.AdamW(network.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / total)))
    network.train()
    with tqdm(total=total, desc="training the fashion network", unit="step", disable=not progress) as bar:
        for epoch in range(settings.epochs):
            order = torch.randperm(len(y), generator=generator)
            for batch in order.split(settings.batch_size):
                _, logits = network.classify(_augment(x[batch], settings, generator))
                loss = F.cross_entropy(logits, y[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                bar.update()
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}", refresh=False)
    network.dropout.p = 0.0
    network.eval()
    test_grey, test_labels = fashion_split("test", root)
    return network, accuracy(network, fashion_uint8(test_grey), test_labels)


def main(argv: list[str] | None = None) -> None:
    defaults = TrainSettings()
    p = argparse.ArgumentParser(
        prog="python -m nextscale.evaluation.fashion_network",
        description="Trains the Fashion-MNIST feature network on the training split and saves it with its test "
        "accuracy (config.json's provenance).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", required=True, help="the directory to write config.json and model.safetensors to")
    p.add_argument("--data", help="the folder of the four Fashion-MNIST IDX files (default: the standard places)")
    p.add_argument("--seed", type=int, default=defaults.seed, help="initial weights, order and augmentation")
    p.add_argument("--epochs", type=int, default=defaults.epochs, help="passes over the 60,000 training images")
    p.add_argument("--threads", type=int, default=defaults.threads, help="torch threads (the result depends on it)")
    args = p.parse_args(argv)
    settings = TrainSettings(seed=args.seed, epochs=args.epochs, threads=args.threads)
    start = time.perf_counter()
    try:
        network, test_accuracy = train_fashion_network(settings, args.data)
    except NextscaleError as e:
        p.exit(2, f"{p.prog}: error: {e}\n")
    seconds = time.perf_counter() - start
    from ..runtime import versions

    network.provenance = {
        "trained_on": "fashion-mnist train split (60,000 images)",
        "test_accuracy": test_accuracy,
        "test_images": 10_000,
        "training": {k: v for k, v in asdict(settings).items() if k != "limit"},
        "command": f"python -m nextscale.evaluation.fashion_network --out DIR --seed {args.seed} "
        f"--epochs {args.epochs} --threads {args.threads}",
        "seconds": round(seconds),
        "versions": versions(),
    }
    network.save_pretrained(Path(args.out))
    print(f"test accuracy {test_accuracy:.2%} after {seconds:.0f} s; saved to {args.out}")


if __name__ == "__main__":
    main()
