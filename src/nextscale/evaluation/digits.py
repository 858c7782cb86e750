"""Honest quality numbers for the digits model, measured by an independent scikit-learn classifier.

The classifier is trained on the real 8×8 training digits only. Samples are shrunk back to 8×8 and scored:
the share classified as the requested class, and the Fréchet distance between the classifier's hidden
features of the samples and of the real test digits, beside the same distance between real train and test.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import numpy as np
import torch

from ..data import digits8_to_images, digits_splits, images_to_digits8
from ..data.digits import downscale_matrix
from ..editing import edit
from ..registry import SAMPLER
from ..sampling import sample_many
from ..seeding import batch_generator
from ..tokenizer import VQVAE
from ..transformer import VAR
from .features import DigitsFeatures, extract
from .imagesets import Statistics, open_set
from .metrics import frechet_distance


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


@functools.lru_cache(maxsize=2)
def judge_for(seed: int = 0) -> DigitsJudge:
    """One judge per seed and process: training it takes seconds, and every digits measurement uses it."""
    return DigitsJudge(seed)


@dataclass
class DigitsReport:
    n_per_class: int
    cfg: float
    guided_accuracy: float  # share of guided samples classified as the requested class
    unguided_accuracy: float  # the same with cfg = 0
    sample_fd: float  # Fréchet distance, guided samples vs real test digits
    train_test_fd: float  # Fréchet distance, real train vs real test digits
    classifier_test_accuracy: float  # the judge on real test digits, for scale

    def as_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        return (
            f"guided (cfg {self.cfg:g}) accuracy {self.guided_accuracy:.1%}, unguided {self.unguided_accuracy:.1%}; "
            f"Fréchet distance samples↔test {self.sample_fd:.2f} vs train↔test {self.train_test_fd:.2f} "
            f"(ratio {self.sample_fd / self.train_test_fd:.2f}); judge on real test digits "
            f"{self.classifier_test_accuracy:.1%}; {self.n_per_class} samples per class"
        )


def evaluate_digits(
    vae: VQVAE,
    var: VAR,
    *,
    n_per_class: int = 100,
    cfg: float = SAMPLER.cfg,
    seed: int = 0,
    batch_size: int = 250,
    progress: bool = True,
    **sample_kwargs,
) -> DigitsReport:
    guided_acc, guided = _judged_samples(vae, var, n_per_class, seed, batch_size, progress, cfg=cfg, **sample_kwargs)
    unguided = {**sample_kwargs, "cfg": 0.0, "cfg_schedule": "constant", "guidance_scales": None}  # none anywhere
    unguided_acc, _ = _judged_samples(vae, var, n_per_class, seed, batch_size, progress, **unguided)
    sample_fd, train_test_fd = _frechet_distances(guided, seed)
    return DigitsReport(
        n_per_class=n_per_class,
        cfg=cfg,
        guided_accuracy=guided_acc,
        unguided_accuracy=unguided_acc,
        sample_fd=sample_fd,
        train_test_fd=train_test_fd,
        classifier_test_accuracy=judge_for(seed).test_accuracy(),
    )


def judge_digit_samples(
    vae: VQVAE,
    var: VAR,
    *,
    n_per_class: int = 100,
    seed: int = 0,
    batch_size: int = 250,
    progress: bool = True,
    **sample_kwargs,
) -> tuple[float, float]:
    """(share classified as the requested class, Fréchet distance to the real test digits ÷ real train ↔ test)
    of `n_per_class` samples per class drawn with `sample_kwargs`: one option's quality, in two numbers."""
    accuracy, images = _judged_samples(vae, var, n_per_class, seed, batch_size, progress, **sample_kwargs)
    sample_fd, train_test_fd = _frechet_distances(images, seed)
    return accuracy, sample_fd / train_test_fd


def _judged_samples(vae, var, n_per_class, seed, batch_size, progress, **sample_kwargs):
    """(accuracy, uint8 images (N, 3, H, W)) of samples drawn in class order with the same seeds every time."""
    judge = judge_for(seed)
    labels = [c for c in range(var.num_classes) for _ in range(n_per_class)]
    run = sample_many(
        vae, var, labels, batch_size=batch_size, seed=seed, progress=progress, keep_images=True, **sample_kwargs
    )
    images = torch.from_numpy(run.images).permute(0, 3, 1, 2)
    predicted = judge.predict(images_to_digits8(images.float() / 255))
    return float((predicted == np.asarray(labels)).mean()), images


def _frechet_distances(images: torch.Tensor, seed: int) -> tuple[float, float]:
    """(samples ↔ real test digits, real train ↔ test): the way `nextscale eval … --features digits` measures,
    from uint8 images through the judge's features."""
    network = DigitsFeatures(seed)
    test = _statistics(network, open_set("digits"))
    samples = Statistics.of(network(images)[0].numpy(), network.name)
    return frechet_distance(samples, test), frechet_distance(_statistics(network, open_set("digits-train")), test)


def _statistics(network, image_set) -> Statistics:
    features, _ = extract(network, image_set.batches(1000))
    return Statistics.of(features, network.name)


EDIT_BOX = (0.125, 0.125, 0.875, 0.875)  # the centre 6×6 of the 8×8 token grid; the 1-token border is kept


@dataclass
class EditReport:
    box: tuple[float, float, float, float]
    cfg: float
    n: int
    accuracy: float  # share of edited test digits classified as the requested class
    kept_original_class: float  # share still classified as their original class

    def summary(self) -> str:
        return (
            f"centre edits (box {self.box}, cfg {self.cfg:g}) of {self.n} test digits: {self.accuracy:.1%} "
            f"classified as the requested class, {self.kept_original_class:.1%} as their original class"
        )


def evaluate_digit_edits(
    vae: VQVAE,
    var: VAR,
    *,
    box=EDIT_BOX,
    cfg: float = 3.0,
    seed: int = 0,
    batch_size: int = 120,
    limit: int | None = None,
    **sample_kwargs,
) -> EditReport:
    """Repaints the centre of every real test digit as another class (label + 1 + i mod 9) and asks the judge."""
    judge = judge_for(seed)
    images8, labels = judge.test.images8[:limit], judge.test.labels[:limit]
    requested = (labels + 1 + np.arange(len(labels)) % 9) % 10
    device = var.head.weight.device
    edited = []
    for b, start in enumerate(range(0, len(labels), batch_size)):
        pixels = digits8_to_images(images8[start : start + batch_size]).add(1).div(2).to(device)
        out = edit(
            vae,
            var,
            pixels,
            tuple(box),
            labels=torch.as_tensor(requested[start : start + batch_size]),
            generator=batch_generator(seed, b, device),
            cfg=cfg,
            **sample_kwargs,
        )
        edited.append(images_to_digits8(out.images))
    predicted = judge.predict(np.concatenate(edited))
    return EditReport(
        tuple(box), cfg, len(labels), float((predicted == requested).mean()), float((predicted == labels).mean())
    )
