"""Recipes from the registry turned into training runs: the built-in digits model's, which
`nextscale demo --train` replays."""

from __future__ import annotations

from pathlib import Path

from ..data import DigitsDataset
from ..registry import architecture, recipe
from ..weights import save_model
from . import TokenizerOptions, TrainConfig, VAROptions, train_tokenizer, train_var


def recipe_settings(name: str, stage: str, **overrides) -> tuple[TrainConfig, TokenizerOptions | VAROptions]:
    """A registry recipe's training settings and stage options (with `overrides` of the TrainConfig)."""
    r = recipe(name, stage)
    options_class = TokenizerOptions if stage == "tokenizer" else VAROptions
    return TrainConfig(**{**r.train, **overrides}), options_class(**r.options)


def train_digits_model(out_dir, *, run_dir, device="cpu", progress: bool = True) -> Path:
    """Both stages of the built-in model from scratch (recipes `digits-tokenizer`, `digits-var`); writes
    `out_dir/{vae,var}`."""
    run_dir = Path(run_dir)
    vae_config, var_config = architecture("digits")
    tok_config, tok_options = recipe_settings("digits-tokenizer", "tokenizer")
    var_train_config, var_options = recipe_settings("digits-var", "var")
    seed = tok_config.seed
    train, test = DigitsDataset("train", seed=seed), DigitsDataset("test", seed=seed)
    vae, _ = train_tokenizer(
        vae_config,
        train,
        test,
        tok_config,
        run_dir / "tokenizer",
        options=tok_options,
        device=device,
        progress=progress,
    )
    var, _ = train_var(
        var_config,
        vae,
        train,
        test,
        var_train_config,
        run_dir / "var",
        options=var_options,
        device=device,
        progress=progress,
    )
    return save_model(vae.cpu(), var.cpu(), out_dir)
