"""Honest quality numbers for the digits model, measured by the independent judge (judge.py): the digits preset of
`evaluate_samples` (samples.py), and one option's quality in two numbers for the benchmark sweep.

Samples are shrunk back to 8×8 and scored: the share classified as the requested class, and the metrics between
the judge's hidden features of the samples and of the real test digits, beside the same between real train and
test.
"""

from __future__ import annotations

import torch

from ..sampling.settings import SamplerConfig, with_settings_signature
from ..tokenizer import VQVAE
from ..transformer import VAR
from .features import DigitsFeatures, extract
from .imagesets import Statistics, open_set
from .metrics import frechet_distance
from .samples import SampleReport, evaluate_samples, judged_samples
from .verdicts import DigitsVerdicts

DigitsReport = SampleReport  # the digits preset's report (its Fréchet distances: `sample_fd`, `train_test_fd`)


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
) -> SampleReport:
    """The digits quality numbers of samples drawn with the sampler `config` (and/or keywords), beside the same
    samples drawn without guidance."""
    return evaluate_samples(
        vae,
        var,
        "digits",
        n_per_class=n_per_class,
        seed=seed,
        batch_size=batch_size,
        progress=progress,
        config=config,
        **settings,
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
    verdicts = DigitsVerdicts(seed)
    accuracy, images = judged_samples(vae, var, verdicts, n_per_class, seed, batch_size, progress, **sample_kwargs)
    sample_fd, train_test_fd = _frechet_distances(images, seed)
    return accuracy, sample_fd / train_test_fd


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
