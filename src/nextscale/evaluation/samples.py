"""A built-in model judged on real data (`nextscale eval --preset NAME`, the table in presets.py): N samples per
class, the share the preset's classifier reads as the requested class, and FID, IS, precision/recall and KID
against the real test images through the preset's feature network (`evaluate`, as `nextscale eval` computes them),
beside the real floor: real training images against the same test images through the same network."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from ..errors import NextscaleError
from ..sampling import sample_many
from ..sampling.settings import SamplerConfig, sampler_config, with_settings_signature
from ..tokenizer import VQVAE
from ..transformer import VAR
from .features import load_network
from .imagesets import BUILTIN, ImageSet, open_set
from .presets import Preset, check_model_for, preset_named
from .report import evaluate
from .verdicts import Verdicts, verdicts_for

SHOWN = (
    ("fid", "FID (Fréchet distance)"),
    ("is", "IS"),
    ("precision", "precision"),
    ("recall", "recall"),
    ("kid", "KID"),
)


@dataclass
class SampleReport:
    preset: str
    n_per_class: int
    cfg: float
    guided_accuracy: float  # share of the samples the classifier reads as their requested class
    unguided_accuracy: float | None  # the same with cfg = 0 (None: not measured)
    samples: dict  # the metrics of the samples against the real test images
    floor: dict  # the same metrics of the real training images against the same test images
    classifier_test_accuracy: float  # the classifier on the real test images, for scale
    compared: dict  # what was compared with what, and how

    @property
    def sample_fd(self) -> float:
        return self.samples["fid"]

    @property
    def train_test_fd(self) -> float:
        return self.floor["fid"]

    def as_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        s = self.compared
        head = (
            f"{s['samples']} against {s['test']} ({s['test_count']:,}), {s['features']} features; real floor: "
            f"{s['floor']} ({s['floor_count']:,}) against the same"
        )
        width = max(len(label) for _, label in SHOWN)
        rows = [f"  {'':<{width}}  {'samples':>9}  {'real floor':>10}"]
        for key, label in SHOWN:
            rows.append(f"  {label:<{width}}  {self.samples[key]:>9.4f}  {self.floor[key]:>10.4f}")
        accuracy = f"guided (cfg {self.cfg:g}) {self.guided_accuracy:.1%}"
        if self.unguided_accuracy is not None:
            accuracy += f", unguided {self.unguided_accuracy:.1%}"
        rows.append(
            f"  class accuracy: {accuracy} read as the requested class; the classifier on the real test images "
            f"{self.classifier_test_accuracy:.1%}"
        )
        return "\n".join([head, *rows])


@with_settings_signature
def evaluate_samples(
    vae: VQVAE,
    var: VAR,
    preset: str | Preset = "digits",
    *,
    n_per_class: int | None = None,
    seed: int = 0,
    batch_size: int = 250,
    progress: bool = True,
    config: SamplerConfig | None = None,
    **settings,
) -> SampleReport:
    """The preset's numbers of `n_per_class` samples per class (None: the preset's) drawn with the sampler `config`
    (and/or keywords); where the preset says so, also their class accuracy without guidance."""
    preset = preset_named(preset)
    check_model_for(preset, vae, var)
    n_per_class = n_per_class or preset.n_per_class
    config = sampler_config(config, **settings)
    verdicts = verdicts_for(preset.network, seed)
    guided_acc, guided = judged_samples(vae, var, verdicts, n_per_class, seed, batch_size, progress, config=config)
    unguided_acc = None
    if preset.unguided:
        unguided = replace(config, cfg=0.0, cfg_schedule="constant", guidance_scales=None)  # none anywhere
        unguided_acc, _ = judged_samples(vae, var, verdicts, n_per_class, seed, batch_size, progress, config=unguided)
    network = load_network(preset.network, judge_seed=seed)
    test = real_set(preset.test)
    floor = real_set(preset.train, preset.train_limit)
    # drawn in class order; IS reads consecutive blocks of the file, so they are shuffled first (as `sample` does)
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(guided)))
    shuffled = guided[order]
    name = f"{len(guided):,} samples ({n_per_class} per class, shuffled)"
    drawn = ImageSet(name, len(shuffled), None, lambda bs: iter(shuffled.split(bs)), tuple(shuffled.shape[-2:]))
    of_samples = evaluate(drawn, test, network, progress=progress)
    of_floor = evaluate(floor, test, network, progress=progress)
    return SampleReport(
        preset=preset.name,
        n_per_class=n_per_class,
        cfg=config.cfg,
        guided_accuracy=guided_acc,
        unguided_accuracy=unguided_acc,
        samples=of_samples["metrics"],
        floor=of_floor["metrics"],
        classifier_test_accuracy=verdicts.test_accuracy(),
        compared={
            "samples": name,
            "test": test.source,
            "test_count": test.count,
            "floor": floor.source,
            "floor_count": floor.count,
            "features": network.name,
            "metrics": {k: v for k, v in of_samples["settings"].items() if k not in ("samples", "ref")},
        },
    )


def judged_samples(
    vae: VQVAE, var: VAR, verdicts: Verdicts, n_per_class: int, seed: int, batch_size: int, progress: bool, **kwargs
) -> tuple[float, torch.Tensor]:
    """(accuracy, uint8 images (N, 3, H, W)) of samples drawn in class order with the same seeds every time."""
    labels = [c for c in range(var.num_classes) for _ in range(n_per_class)]
    run = sample_many(vae, var, labels, batch_size=batch_size, seed=seed, progress=progress, keep_images=True, **kwargs)
    images = torch.from_numpy(run.images).permute(0, 3, 1, 2)
    predicted = verdicts.predict(images.float() / 255)
    return float((predicted == np.asarray(labels)).mean()), images


def real_set(name: str, limit: int | None = None) -> ImageSet:
    """The first `limit` images (None: all) of a built-in set of real images (`imagesets.BUILTIN`)."""
    if name not in BUILTIN:
        raise NextscaleError(f"no built-in image set {name!r}; the built-in sets are {', '.join(BUILTIN)}")
    found = open_set(name)
    if limit is None or found.count <= limit:
        return found
    return ImageSet(f"{name} (the first {limit:,})", limit, None, lambda bs: _first(found, limit, bs), found.size)


def _first(image_set: ImageSet, limit: int, batch_size: int):
    left = limit
    for batch in image_set.batches(batch_size):
        if left <= 0:
            return
        yield batch[:left]
        left -= len(batch)
