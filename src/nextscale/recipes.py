"""Training recipes: the built-in digits model's, which `nextscale demo --train` replays."""

from __future__ import annotations

from .training import TokenizerOptions, TrainConfig, VAROptions

DIGITS_SEED = 0


def digits_tokenizer_recipe() -> tuple[TrainConfig, TokenizerOptions]:
    config = TrainConfig(steps=1500, batch_size=32, lr=5e-4, warmup_steps=50, weight_decay=0.0, eval_every=250,
                         save_every=250, seed=DIGITS_SEED)  # fmt: skip
    return config, TokenizerOptions()


def digits_var_recipe() -> tuple[TrainConfig, VAROptions]:
    config = TrainConfig(steps=3000, batch_size=64, lr=1e-3, warmup_steps=100, weight_decay=0.05, eval_every=500,
                         save_every=500, seed=DIGITS_SEED)  # fmt: skip
    return config, VAROptions()


def train_digits_model(out_dir, *, run_dir, device="cpu", progress: bool = True):
    """Both stages of the built-in model from scratch, with the recipes above; writes `out_dir/{vae,var}`."""
    from pathlib import Path

    from .checkpoint import save_model
    from .data import DigitsDataset
    from .presets import preset_configs
    from .training import train_tokenizer, train_var

    run_dir = Path(run_dir)
    vae_config, var_config = preset_configs("digits")
    train, test = DigitsDataset("train", seed=DIGITS_SEED), DigitsDataset("test", seed=DIGITS_SEED)
    tok_config, tok_options = digits_tokenizer_recipe()
    vae, _ = train_tokenizer(vae_config, train, test, tok_config, run_dir / "tokenizer", options=tok_options,
                             device=device, progress=progress)  # fmt: skip
    var_train_config, var_options = digits_var_recipe()
    var, _ = train_var(var_config, vae, train, test, var_train_config, run_dir / "var", options=var_options,
                       device=device, progress=progress)  # fmt: skip
    return save_model(vae.cpu(), var.cpu(), out_dir)
