"""Zero-shot editing of the digits, judged: the centre of every real test digit repainted as another class, and
the share the judge then reads as the requested class."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..data import digits8_to_images, images_to_digits8
from ..editing import edit
from ..sampling.settings import SamplerConfig, sampler_config, with_settings_signature
from ..seeding import batch_generator
from ..tokenizer import VQVAE
from ..transformer import VAR
from .judge import judge_for

EDIT_BOX = (0.125, 0.125, 0.875, 0.875)  # the centre 6×6 of the 8×8 token grid; the 1-token border is kept


EDIT_SETTINGS = SamplerConfig(cfg=3.0)  # stronger guidance: the requested class must win over the input's


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


@with_settings_signature(defaults=EDIT_SETTINGS)
def evaluate_digit_edits(
    vae: VQVAE,
    var: VAR,
    *,
    box=EDIT_BOX,
    seed: int = 0,
    batch_size: int = 120,
    limit: int | None = None,
    config: SamplerConfig | None = None,
    **settings,
) -> EditReport:
    """Repaints the centre of every real test digit as another class (label + 1 + i mod 9) and asks the judge.
    The sampler settings default to `EDIT_SETTINGS` (stronger guidance: a new class must win over the input)."""
    config = sampler_config(config or EDIT_SETTINGS, **settings)
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
            config=config,
        )
        edited.append(images_to_digits8(out.images))
    predicted = judge.predict(np.concatenate(edited))
    return EditReport(
        tuple(box), config.cfg, len(labels), float((predicted == requested).mean()), float((predicted == labels).mean())
    )
