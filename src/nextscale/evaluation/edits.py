"""Zero-shot editing judged on real test images: the centre of each repainted as another class, the share the
preset's classifier then reads as the requested class, and how much the pixels outside the box moved (the model
keeps the tokens there, but the tokenizer's round trip and the decoder's reach still change them)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from ..editing import box_region, edit
from ..sampling.settings import SamplerConfig, sampler_config, with_settings_signature
from ..seeding import batch_generator
from ..tokenizer import VQVAE
from ..transformer import VAR
from .presets import check_model_for, preset_named
from .verdicts import verdicts_for

EDIT_BOX = (0.125, 0.125, 0.875, 0.875)  # the centre 6×6 of the 8×8 token grid; the 1-token border is kept


EDIT_SETTINGS = SamplerConfig(cfg=3.0)  # stronger guidance: the requested class must win over the input's


@dataclass
class EditReport:
    box: tuple[float, float, float, float]
    cfg: float
    n: int
    accuracy: float  # share of edited test images classified as the requested class
    kept_original_class: float  # share still classified as their original class
    outside_change: float  # mean absolute change of the pixels outside the box, on 0..255 (every channel)
    outside_psnr: float  # dB, from the mean squared change outside the box (inf: none)
    preset: str = "digits"
    what: str = "digits"

    def as_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        return (
            f"centre edits (box {self.box}, cfg {self.cfg:g}) of {self.n} test {self.what}: {self.accuracy:.1%} "
            f"classified as the requested class, {self.kept_original_class:.1%} as their original class; "
            f"outside the box the pixels moved {self.outside_change:.2f} of 255 on average "
            f"(PSNR {self.outside_psnr:.1f} dB)"
        )


@with_settings_signature(defaults=EDIT_SETTINGS)
def evaluate_edits(
    vae: VQVAE,
    var: VAR,
    preset: str = "digits",
    *,
    box=EDIT_BOX,
    seed: int = 0,
    batch_size: int = 120,
    limit: int | None = None,
    progress: bool = False,
    config: SamplerConfig | None = None,
    **settings,
) -> EditReport:
    """Repaints the centre of the first `limit` real test images of the preset (None: every one) as another class
    (label + 1 + i mod (classes − 1)) and asks the preset's classifier. The sampler settings default to
    `EDIT_SETTINGS` (stronger guidance: a new class must win over the input)."""
    preset = preset_named(preset)
    check_model_for(preset, vae, var)
    config = sampler_config(config or EDIT_SETTINGS, **settings)
    verdicts = verdicts_for(preset.network, seed)
    originals, labels = verdicts.test_images(limit)
    classes = preset.classes
    requested = (labels + 1 + np.arange(len(labels)) % (classes - 1)) % classes
    device = var.head.weight.device
    edited = []
    with tqdm(total=len(labels), desc=f"editing test {preset.what}", unit="img", disable=not progress) as bar:
        for b, start in enumerate(range(0, len(labels), batch_size)):
            pixels = originals[start : start + batch_size]
            out = edit(
                vae,
                var,
                pixels.to(device),
                tuple(box),
                labels=torch.as_tensor(requested[start : start + batch_size]),
                generator=batch_generator(seed, b, device),
                config=config,
            )
            edited.append(out.images.float().cpu())
            bar.update(len(pixels))
    edited = torch.cat(edited)
    predicted = verdicts.predict(edited)
    change, psnr = outside_change(originals, edited, box)
    return EditReport(
        tuple(box),
        config.cfg,
        len(labels),
        float((predicted == requested).mean()),
        float((predicted == labels).mean()),
        change,
        psnr,
        preset.name,
        preset.what,
    )


def outside_change(originals: torch.Tensor, edited: torch.Tensor, box) -> tuple[float, float]:
    """(mean absolute change on 0..255, PSNR in dB) over the pixels outside `box` of images in [0, 1], each
    rounded to 0..255 as it would be saved."""
    outside = box_region(tuple(box), originals.shape[-1]).eq(0).expand_as(originals[0])
    as_saved = lambda x: x.mul(255).add(0.5).clamp(0, 255).floor()  # noqa: E731 (to_uint8's rounding)
    diff = (as_saved(edited) - as_saved(originals))[:, outside].double()
    mse = float(diff.square().mean())
    return float(diff.abs().mean()), math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def evaluate_digit_edits(vae: VQVAE, var: VAR, **kwargs) -> EditReport:
    """`evaluate_edits` on the 360 real test digits (the digits preset)."""
    return evaluate_edits(vae, var, "digits", **kwargs)


evaluate_digit_edits.__signature__ = evaluate_edits.__signature__.replace(
    parameters=[p for name, p in evaluate_edits.__signature__.parameters.items() if name != "preset"]
)
