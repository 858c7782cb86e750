"""The digits judge: an independent scikit-learn classifier trained on the real 8×8 training digits only, and its
MLP as a torch network that travels as a `torch.export` file. Samples, edits and `--features digits` are all
measured through it."""

from __future__ import annotations

import functools

import numpy as np
import torch

from ..data import digits_splits
from ..data.digits import downscale_matrix


class DigitsJudge:
    """Trained on the real training digits only: an RBF support-vector classifier gives the verdicts (99.4% on
    the real test digits), and the hidden layer of a small MLP gives the features for Fréchet distances."""

    def __init__(self, seed: int = 0):
        from sklearn.neural_network import MLPClassifier
        from sklearn.svm import SVC

        self.train, self.test = digits_splits(seed)
        x, y = self._flat(self.train.images8), self.train.labels
        self.clf = SVC(C=10, gamma="scale").fit(x, y)
        self.mlp = MLPClassifier(hidden_layer_sizes=(128,), alpha=1e-3, max_iter=2000, random_state=seed).fit(x, y)

    @staticmethod
    def _flat(images8: np.ndarray) -> np.ndarray:
        return images8.reshape(len(images8), -1) / 16.0

    def predict(self, images8: np.ndarray) -> np.ndarray:
        return self.clf.predict(self._flat(images8))

    def features(self, images8: np.ndarray) -> np.ndarray:
        return np.maximum(self._flat(images8) @ self.mlp.coefs_[0] + self.mlp.intercepts_[0], 0)

    def test_accuracy(self) -> float:
        return float((self.predict(self.test.images8) == self.test.labels).mean())


@functools.lru_cache(maxsize=2)
def judge_for(seed: int = 0) -> DigitsJudge:
    """One judge per seed and process: training it takes seconds, and every digits measurement uses it."""
    return DigitsJudge(seed)


class DigitsNetwork(torch.nn.Module):
    """The judge's MLP as a torch module, so that it travels as a `torch.export` file: uint8 (N, 3, R, R) images →
    (hidden features (N, 128), logits (N, 10)). `--features digits` runs it; `export_digits_network` saves it for
    `--features FILE` and `--reject FILE`."""

    def __init__(self, judge: DigitsJudge, resolution: int = 32):
        super().__init__()
        self.register_buffer("shrink", downscale_matrix(resolution).float())
        self.hidden, self.out = torch.nn.Linear(64, 128), torch.nn.Linear(128, 10)
        with torch.no_grad():
            for layer, weight, bias in zip((self.hidden, self.out), judge.mlp.coefs_, judge.mlp.intercepts_):
                layer.weight.copy_(torch.from_numpy(weight.T))
                layer.bias.copy_(torch.from_numpy(bias))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        grey = images.float().div(255).mean(dim=1).flatten(1)
        ink = (1 - grey @ self.shrink).clamp(0, 1)  # the 8×8 grid's ink, as the judge was trained on (0..16 / 16)
        hidden = self.hidden(ink).relu()
        return hidden, self.out(hidden)


def export_digits_network(path, resolution: int = 32, seed: int = 0):
    """Saves `DigitsNetwork` with `torch.export.save` (a dynamic batch dimension)."""
    network = DigitsNetwork(judge_for(seed), resolution).eval()
    example = (torch.zeros(2, 3, resolution, resolution, dtype=torch.uint8),)
    batch = torch.export.Dim("batch", min=1)
    torch.export.save(torch.export.export(network, example, dynamic_shapes=({0: batch},)), str(path))
    return path
