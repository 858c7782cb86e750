"""Training recipes by name: the reference's for the released transformers (its README's), a documented 256 px
tokenizer, and the built-in digits model's (what `nextscale demo --train` replays).

A recipe's `train` values are fields of `TrainConfig` and its `options` fields of its stage's options class: a key
that is neither fails where the recipe is defined. `recipe_settings` builds a recipe into those typed objects,
with what the user gave in place of the recipe's values. Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from ..errors import NextscaleError
from .config import (
    IMAGENET_TRAIN_IMAGES,
    TokenizerOptions,
    TrainConfig,
    VAROptions,
    epoch_steps,
    peak_lr,
    reference_drop_path,
    reference_warmup,
)

STAGE_OPTIONS = {"tokenizer": TokenizerOptions, "var": VAROptions}


@dataclass(frozen=True)
class Recipe:
    stage: str  # "tokenizer" or "var"
    architecture: str
    data: str  # what it trains on
    train: dict = field(default_factory=dict)  # TrainConfig fields
    options: dict = field(default_factory=dict)  # TokenizerOptions / VAROptions fields
    # Where set, steps follow the dataset's size (`epoch_steps`), and a warm-up the recipe leaves unset follows
    # the steps (`reference_warmup`).
    epochs: int | None = None
    base_lr: float | None = None  # where set, the LR follows the batch: `peak_lr`
    n_images: int | None = None  # the size of `data`: the steps the recipe itself describes

    def __post_init__(self):
        """A key that is no setting fails here, where the recipe is written, naming it."""
        if self.stage not in STAGE_OPTIONS:
            raise TypeError(f"a recipe's stage is one of {', '.join(STAGE_OPTIONS)}, not {self.stage!r}")
        for values, cls in ((self.train, TrainConfig), (self.options, STAGE_OPTIONS[self.stage])):
            unknown = sorted(set(values) - {f.name for f in fields(cls)})
            if unknown:
                raise TypeError(f"a {self.stage} recipe sets {', '.join(unknown)}: not a field of {cls.__name__}")


def _reference(depth: int, batch: int, epochs: int, base_lr: float, alng: float, wpe: float, wd_end=None, reso=256):
    """Reference section 3.6: the LR per 256 images, warm-up for epochs/50, `lin0` down to wpe × peak."""
    train = dict(
        batch_size=batch,
        schedule="lin0",
        lr_end_ratio=wpe,
        weight_decay=0.05,
        weight_decay_end=wd_end,
        grad_clip=2.0,
        precision="fp16",
    )
    options = dict(cond_drop_rate=0.1, drop_path_rate=reference_drop_path(depth), init_adaln_gamma=alng)
    data = f"ImageNet-1k train, {reso} px"
    return Recipe("var", f"var-d{depth}", data, train, options, epochs, base_lr, IMAGENET_TRAIN_IMAGES)


def _digits_recipe(stage: str, steps: int, batch: int, lr: float, warmup: int, wd: float, every: int, **options):
    """The built-in model's recipes (seed 0): what `nextscale demo --train` replays."""
    train = dict(
        steps=steps,
        batch_size=batch,
        lr=lr,
        warmup_steps=warmup,
        weight_decay=wd,
        eval_every=every,
        save_every=every,
        seed=0,
    )
    return Recipe(stage, "digits", "digits", train, options)


def _fashion_recipe(stage: str, steps: int, lr: float, every: int, options: dict | None = None, **train):
    """The built-in Fashion-MNIST model's recipes (seed 0), on the 60,000 training images at batch 64."""
    train = dict(steps=steps, batch_size=64, lr=lr, eval_every=every, save_every=every // 2, seed=0, **train)
    if options is None:
        options = dict(cond_drop_rate=0.1, drop_path_rate=0.0) if stage == "var" else {}
    return Recipe(stage, "fashion", "fashion-mnist", train, options)


def _tokenizer_recipe():
    """The 256 px tokenizer of the released models' shape (4096 codes, 32 channels, scales 1…16). The reference
    released no tokenizer training: these settings follow the open VQGAN-style recipes (LPIPS weight 1, a
    PatchGAN hinge loss at 0.5 with VQGAN's adaptive weight from step 20k, AdamW 1e-4 at batch 128,
    β = (0.9, 0.95))."""
    train = dict(
        batch_size=128,
        warmup_steps=0,
        schedule="cos",
        lr_end_ratio=0.1,
        weight_decay=0.0,
        grad_clip=1.0,
        precision="bf16",
    )
    options = dict(beta=0.25, perceptual_weight=1.0, adversarial_weight=0.5, adversarial_start=20_000)
    data = "ImageNet-1k train, 256 px"
    return Recipe("tokenizer", "var-d16", data, train, options, 40, 2e-4, IMAGENET_TRAIN_IMAGES)  # 1e-4 at 128


RECIPES = {
    "digits-tokenizer": _digits_recipe("tokenizer", 1500, 32, 5e-4, 50, 0.0, 250),
    "digits-var": _digits_recipe("var", 3000, 64, 1e-3, 100, 0.05, 500, cond_drop_rate=0.1, drop_path_rate=0.0),
    "fashion-tokenizer": _fashion_recipe(
        "tokenizer", 2000, 5e-4, 500, warmup_steps=100, schedule="cos", lr_end_ratio=0.1, weight_decay=0.0
    ),
    # The fashion tokenizer's decoder alone, sharpened by a PatchGAN loss (`--init` the fashion-tokenizer run's
    # model): the same tokens, so fashion-var trains on either.
    "fashion-decoder": _fashion_recipe(
        "tokenizer",
        1500,
        1e-4,
        250,
        dict(trainable="decoder", adversarial_weight=0.5),
        warmup_steps=100,
        schedule="cos",
        lr_end_ratio=0.1,
        weight_decay=0.0,
    ),
    "fashion-var": _fashion_recipe("var", 9000, 1e-3, 500, warmup_steps=100, weight_decay=0.05),
    "vqvae-256": _tokenizer_recipe(),
    "var-d16": _reference(16, 768, 200, 1e-4, 1e-3, 0.1),
    "var-d20": _reference(20, 768, 250, 1e-4, 1e-3, 0.1),
    "var-d24": _reference(24, 768, 350, 8e-5, 1e-4, 0.01),
    "var-d30": _reference(30, 1024, 350, 8e-5, 1e-5, 0.01, wd_end=0.08),
    "var-d36": _reference(36, 768, 350, 8e-5, 5e-6, 0.01, wd_end=0.08, reso=512),
}


def recipe(name: str, stage: str | None = None) -> Recipe:
    if name not in RECIPES or (stage is not None and RECIPES[name].stage != stage):
        names = [n for n, r in RECIPES.items() if stage is None or r.stage == stage]
        raise NextscaleError(
            f"unknown {stage or ''} recipe {name!r}; choose from {', '.join(names)}".replace("  ", " ")
        )
    return RECIPES[name]


def options_class(stage: str) -> type[TokenizerOptions] | type[VAROptions]:
    return STAGE_OPTIONS[stage]


def setting_names(stage: str) -> set[str]:
    """Every setting of a run of `stage`: the fields of TrainConfig and of the stage's options."""
    return {f.name for cls in (TrainConfig, options_class(stage)) for f in fields(cls)}


def recipe_settings(
    name: str, stage: str | None = None, *, n_images: int | None = None, base_lr: float | None = None, **given
) -> tuple[TrainConfig, TokenizerOptions | VAROptions]:
    """Recipe `name` as (TrainConfig, options), with the settings `given` (fields of either) in place of its own.
    What the recipe derives follows what was given: its steps are its epochs over `n_images` (default: the size of
    its data) at the batch trained, its LR is `base_lr` (default: its own; `lr` given wins) per 256 images of that
    batch, and its warm-up, where it sets none, a fiftieth of the steps. A recipe's key that is no field of its
    class fails here, naming both."""
    r = recipe(name, stage)
    options_type = options_class(r.stage)
    option_names = {f.name for f in fields(options_type)}
    train = {**r.train, **{k: v for k, v in given.items() if k not in option_names}}
    batch_size = train.get("batch_size", TrainConfig.batch_size)
    if r.epochs and "steps" not in given:
        train["steps"] = epoch_steps(r.epochs, n_images or r.n_images, batch_size)
    base_lr = r.base_lr if base_lr is None else base_lr
    if base_lr is not None and "lr" not in given:
        train["lr"] = peak_lr(base_lr, batch_size)
    if r.epochs and "warmup_steps" not in train:
        train["warmup_steps"] = reference_warmup(train["steps"])
    options = {**r.options, **{k: v for k, v in given.items() if k in option_names}}
    return TrainConfig(**train), options_type(**options)
