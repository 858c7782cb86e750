"""Training both stages: `train_tokenizer` and `train_var` (what `nextscale train-tokenizer` / `train` call), and
the built-in models' two runs (`train_builtin_model`: `nextscale demo --train` for the digits)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ..data import class_names, identity
from ..errors import NextscaleError
from ..registry import architecture
from ..tokenizer import VQVAE, VQVAEConfig
from ..transformer import VAR, RasterAR, RasterConfig, VARConfig
from ..weights import save_model
from .config import TokenizerOptions, TrainConfig, VAROptions, check_decoder_only
from .distributed import Distributed
from .export import run_provenance
from .recipes import RECIPES, recipe, recipe_settings
from .tokenizer_stage import TokenizerStage
from .trainable import apply_trainable, merge_lora
from .trainer import Trainer
from .var_stage import RasterStage, VARStage


def train_tokenizer(
    config: VQVAEConfig,
    train_data: Dataset,
    test_data: Dataset | None,
    train_config: TrainConfig,
    run_dir: str | Path,
    *,
    options: TokenizerOptions | None = None,
    resume: bool | None = None,
    device="cpu",
    dist: Distributed | None = None,
    progress: bool = True,
    stop_after: int | None = None,
    init: VQVAE | None = None,
    fresh_codebook: bool = False,
) -> tuple[VQVAE, dict]:
    """Trains a multi-scale VQ-VAE in `run_dir`. `resume`: True continues the run there (which must exist),
    False starts one (the directory must hold none), None continues one if there is one. `dist`: this
    process's place in a torchrun job (`distributed.setup`); None: one process. `init`: a trained tokenizer of
    this `config` to start from (recorded by fingerprint), its codebook kept unless `fresh_codebook`; with
    `options.trainable` "decoder", the run trains its decoder alone and the result makes `init`'s tokens
    (`VQVAE.tokens_fingerprint`)."""
    options = options or TokenizerOptions()
    initial = {} if init is None else {"init": init.fingerprint(), "fresh_codebook": fresh_codebook}
    check_decoder_only(options.trainable, init is not None, fresh_codebook)
    if options.trainable == "decoder":
        # what its checkpoints hold (`export` freezes the same parts to read them) and whose tokens it makes
        initial.update(
            trainable="decoder", tokens_of=init.tokens_fingerprint(), token_parts=init.token_parts_fingerprint()
        )
    train_config = recorded(train_config, train_data, test_data, **initial)
    torch.manual_seed(train_config.seed)  # the initial weights, drawn on the CPU: the same on any device
    vae = VQVAE(config, device="cpu")
    if init is not None:
        if init.config != config:
            raise NextscaleError("the initial tokenizer's configuration is not the run's")
        drawn = vae.quantize.embedding.weight.detach().clone()
        vae.load_state_dict(init.state_dict())
        if fresh_codebook:
            with torch.no_grad():
                vae.quantize.embedding.weight.copy_(drawn)
                vae.quantize.ema_vocab_hit_SV.zero_()  # the old codes' use says nothing of the new ones
    stage = TokenizerStage(vae, train_data, test_data, train_config, options, device, dist)
    vae, metrics = _fit(stage, train_config, run_dir, resume, progress, stop_after, dist, device)
    vae.provenance = run_provenance(train_config.extra)
    return vae, metrics


def train_var(
    config: VARConfig,
    vae: VQVAE,
    train_data: Dataset,
    test_data: Dataset | None,
    train_config: TrainConfig,
    run_dir: str | Path,
    *,
    options: VAROptions | None = None,
    resume: bool | None = None,
    device="cpu",
    dist: Distributed | None = None,
    progress: bool = True,
    stop_after: int | None = None,
    init: VAR | None = None,
) -> tuple[VAR, dict]:
    """Trains a VAR on the frozen `vae`'s tokens in `run_dir` (`resume`, `dist` as for `train_tokenizer`).
    `train_data`: token shards (`TokenDataset`) or images. `init`: trained weights to start from instead of random
    ones, with `config` (`finetune.adapt_classes` gives it the data's classes); the run records them by fingerprint.
    The transformer records (`provenance`) the tokenizer it was trained with, by fingerprint, and its data's class
    names."""
    options, dist = options or VAROptions(), dist or Distributed()
    start = {} if init is None else {"init": init.fingerprint()}
    if options.trainable != "all":  # what its checkpoints hold: `export` rebuilds the adapters to read them
        start["trainable"] = options.trainable
    train_config = recorded(
        train_config,
        train_data,
        test_data,
        tokenizer=vae.tokens_fingerprint(),
        classes=class_names(train_data),
        **start,
    )
    var = initial_var(config, train_config, options, dist, init)
    stage_class = RasterStage if isinstance(var, RasterAR) else VARStage
    stage = stage_class(vae, var, train_data, test_data, train_config, options, device, dist)
    var, metrics = _fit(stage, train_config, run_dir, resume, progress, stop_after, dist, device)
    var = merge_lora(var)  # an ordinary VAR, as `export` gives; the run's checkpoints keep the adapters
    var.provenance = run_provenance(train_config.extra)
    return var, metrics


def recorded(train_config: TrainConfig, train_data: Dataset, test_data: Dataset | None, **more) -> TrainConfig:
    """The settings as the run saves them, with what it trains on (`data.identity`) and `more`: a resumed run
    compares them, so that it never goes on with other data or another tokenizer."""
    seen = {"data": identity(train_data), "val_data": identity(test_data), **more}
    return replace(train_config, extra={**train_config.extra, **seen})


def initial_var(
    config: VARConfig, train_config: TrainConfig, options: VAROptions, dist: Distributed, init: VAR | None = None
) -> VAR:
    """The transformer as a training run starts it (and `nextscale bench --train` times it): `init` (trained
    weights, with the data's classes: `finetune.adapt_classes`), else drawn afresh on the CPU, or under FSDP on the
    meta device on every process but the first; then what it trains is set (`options.trainable`)."""
    torch.manual_seed(train_config.seed)  # the initial weights, drawn on the CPU: the same on any device
    if init is not None:
        if init.config != config:
            raise NextscaleError("the initial transformer's configuration is not the run's")
        var = init.train()
    else:
        model_class = RasterAR if isinstance(config, RasterConfig) else VAR
        var = model_class(config, device="meta")  # shapes first, then one initialisation with the recipe's scales
        if not train_config.fsdp or dist.is_main:  # under FSDP the other ranks take rank 0's weights
            var.to_empty(device="cpu")
            var.init_weights(**options.init_kwargs())
    var.set_drop_path(options.drop_path_rate)
    return apply_trainable(var, options.trainable)


def _fit(stage, train_config: TrainConfig, run_dir, resume, progress: bool, stop_after, dist, device):
    trainer = Trainer(stage, train_config, run_dir, dist=dist, device=device, progress=progress)
    trainer.start(resume)
    return stage.model, trainer.fit(stop_after=stop_after)


def train_builtin_model(name: str, out_dir, *, run_dir, device="cpu", progress: bool = True) -> Path:
    """Both stages of built-in model `name` (`digits`, `fashion`) by its recipes (`NAME-tokenizer`, then
    `NAME-decoder` where there is one, `NAME-var`), each on the recipe's data with its test split held out; writes
    `out_dir/{vae,var}`. A stage with a run in `run_dir` continues it (an interrupted training picks up where it
    stopped); a finished one is not redone."""
    from ..data import open_dataset

    run_dir = Path(run_dir)
    vae_config, var_config = architecture(name)
    stages = {stage: recipe(f"{name}-{stage}", stage) for stage in ("tokenizer", "var")}
    (tok_config, tok_options), (var_train_config, var_options) = (
        recipe_settings(r_name, stage) for stage, r_name in ((s, f"{name}-{s}") for s in stages)
    )
    data = stages["tokenizer"].data
    seed = tok_config.seed
    train, test = (open_dataset(data, vae_config.resolution, split, seed=seed) for split in ("train", "test"))
    common = dict(device=device, progress=progress)
    vae, _ = train_tokenizer(vae_config, train, test, tok_config, run_dir / "tokenizer", options=tok_options, **common)
    if f"{name}-decoder" in RECIPES:  # the same tokens, decoded more sharply: the transformer trains on either
        dec_config, dec_options = recipe_settings(f"{name}-decoder", "tokenizer")
        vae, _ = train_tokenizer(
            vae_config, train, test, dec_config, run_dir / "decoder", options=dec_options, init=vae, **common
        )
    var_config = replace(var_config, num_classes=train.num_classes)
    var, _ = train_var(var_config, vae, train, test, var_train_config, run_dir / "var", options=var_options, **common)
    return save_model(vae.cpu(), var.cpu(), out_dir)
