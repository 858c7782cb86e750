"""The evaluation's names, loaded without torch so that the command line can build its choices from them: the
registered feature networks, and the presets of `nextscale eval --preset`, one per built-in model: what it is
sampled with and what it is measured against."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import NextscaleError

REGISTERED = ("inception", "digits", "fashion")  # the feature networks known by name (features.load_network)


@dataclass(frozen=True)
class Preset:
    name: str
    model: str  # the built-in model sampled unless --model/--vae/--var say otherwise
    network: str  # a registered feature network: the metrics' features; its classifier gives the verdicts
    test: str  # the real test images (a built-in image set) the samples and the floor are compared with
    train: str  # the real floor: these real training images against the same test images
    train_limit: int | None  # the floor reads the first N of `train` (None: all of them)
    n_per_class: int  # samples per class by default
    unguided: bool  # also draw the samples without guidance, for their class accuracy
    edit_limit: int | None  # real test images repainted by the edit measurement by default (None: all)
    classes: int = 10  # what the model must draw (checked before sampling)
    resolution: int = 32
    what: str = ""  # the images, in the report's words


PRESETS = {
    "digits": Preset(
        "digits",
        model="digits",
        network="digits",
        test="digits",
        train="digits-train",
        train_limit=None,
        n_per_class=100,
        unguided=True,
        edit_limit=None,
        what="digits",
    ),
    "fashion": Preset(
        "fashion",
        model="fashion",
        network="fashion",
        test="fashion-mnist",
        train="fashion-mnist-train",
        train_limit=10_000,  # as many as the test images: the floor is then a distance between equal-sized sets
        n_per_class=1000,
        unguided=False,
        edit_limit=1000,
        what="garments",
    ),
}


def preset_named(name: str | Preset) -> Preset:
    if isinstance(name, Preset):
        return name
    if name not in PRESETS:
        raise NextscaleError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return PRESETS[name]


def check_model_for(preset: Preset, vae, var) -> None:
    """The model must draw what the preset's classifier and network read."""
    if var.num_classes != preset.classes or vae.config.resolution != preset.resolution:
        raise NextscaleError(
            f"the {preset.name} evaluation needs a {preset.classes}-class model of {preset.resolution}×"
            f"{preset.resolution} images (like --model {preset.model}); this one draws {var.num_classes} classes "
            f"at {vae.config.resolution}×{vae.config.resolution}"
        )
