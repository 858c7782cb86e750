"""A preset's classifier, trained on real training images only: the class it reads in images, its own accuracy on
the real test images, and those test images with their labels (what the edit measurement repaints).

- digits: the judge's RBF support-vector classifier on the 8×8 grid (judge.py), 99.4% on the test digits.
- fashion: the Fashion-MNIST feature network's logits (fashion_network.py), its accuracy in its config.json.
"""

from __future__ import annotations

import numpy as np
import torch

from ..data import digits8_to_images, fashion_split, fashion_to_images, images_to_digits8
from ..errors import NextscaleError
from .fashion_network import accuracy, fashion_uint8, load_fashion_network
from .judge import judge_for


class Verdicts:
    name: str

    def predict(self, images: torch.Tensor) -> np.ndarray:
        """Float (N, 3, 32, 32) images in [0, 1] → the class read in each."""
        raise NotImplementedError

    def test_accuracy(self) -> float:
        raise NotImplementedError

    def test_images(self, limit: int | None = None) -> tuple[torch.Tensor, np.ndarray]:
        """The first `limit` real test images (float (N, 3, 32, 32) in [0, 1]) and their labels."""
        raise NotImplementedError


class DigitsVerdicts(Verdicts):
    name = "digits"

    def __init__(self, seed: int = 0):
        self.judge = judge_for(seed)

    def predict(self, images):
        return self.judge.predict(images_to_digits8(images))

    def test_accuracy(self):
        return self.judge.test_accuracy()

    def test_images(self, limit=None):
        test = self.judge.test
        return digits8_to_images(test.images8[:limit]).add(1).div(2), test.labels[:limit]


class FashionVerdicts(Verdicts):
    name = "fashion"

    def __init__(self):
        self.network = load_fashion_network()
        self._test_accuracy = None

    @torch.no_grad()
    def predict(self, images):
        uint8 = images.float().mul(255).add(0.5).clamp(0, 255).to(torch.uint8).cpu()  # as samples are saved
        return torch.cat([self.network(batch)[1].argmax(1) for batch in uint8.split(1000)]).numpy()

    def test_accuracy(self):
        if self._test_accuracy is None:
            grey, labels = fashion_split("test")
            self._test_accuracy = accuracy(self.network, fashion_uint8(grey), labels)
        return self._test_accuracy

    def test_images(self, limit=None):
        grey, labels = fashion_split("test")
        return fashion_to_images(grey[:limit]).add(1).div(2), labels[:limit]


def verdicts_for(network: str, seed: int = 0) -> Verdicts:
    """The classifier of a preset's network (`Preset.network`)."""
    if network == "digits":
        return DigitsVerdicts(seed)
    if network == "fashion":
        return FashionVerdicts()
    raise NextscaleError(f"no classifier for the {network!r} network (digits, fashion)")
