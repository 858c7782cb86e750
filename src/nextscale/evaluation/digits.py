"""Honest quality numbers for the digits model, measured by the independent judge (judge.py).

Samples are shrunk back to 8×8 and scored: the share classified as the requested class, and the Fréchet distance
between the judge's hidden features of the samples and of the real test digits, beside the same distance between
real train and test.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from ..data import images_to_digits8
from ..sampling import sample_many
from ..sampling.settings import SamplerConfig, sampler_config, with_settings_signature
from ..tokenizer import VQVAE
from ..transformer import VAR
from .features import DigitsFeatures, extract
from .imagesets import Statistics, open_set
from .judge import judge_for
from .metrics import frechet_distance


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


@with_settings_signature
def evaluate_digits(
    vae: VQVAE,
    var: VAR,
    *,
    n_per_class: int = 100,
    seed: int = 0,
    batch_size: int = 250,
    progress: bool = True,
    config: SamplerConfig | None = None,
    **settings,
) -> DigitsReport:
    """The digits quality numbers of samples drawn with the sampler `config` (and/or keywords), beside the same
    samples drawn without guidance."""
    config = sampler_config(config, **settings)
    guided_acc, guided = _judged_samples(vae, var, n_per_class, seed, batch_size, progress, config=config)
    unguided = replace(config, cfg=0.0, cfg_schedule="constant", guidance_scales=None)  # none anywhere
    unguided_acc, _ = _judged_samples(vae, var, n_per_class, seed, batch_size, progress, config=unguided)
    sample_fd, train_test_fd = _frechet_distances(guided, seed)
    return DigitsReport(
        n_per_class=n_per_class,
        cfg=config.cfg,
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
