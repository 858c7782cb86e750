"""`nextscale train-tokenizer` and `nextscale train`: both stages, with runs that resume exactly."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from .. import registry
from ..errors import NextscaleError
from ..runtime import PRECISIONS
from .common import add_device_arg, add_seed_arg, check_seed, resolve_device, writable_dir


def add_train_args(p: argparse.ArgumentParser, recipe: registry.Recipe):
    """The training arguments; defaults are the built-in model's recipe for the stage."""
    r = recipe.train
    p.add_argument("--data", required=True, help="'digits' (built in) or a folder with one sub-folder per class")
    p.add_argument("--val-data", help="a held-out folder (default: the digits test split, or none)")
    p.add_argument("--run-dir", required=True, help="checkpoints and log.jsonl go here")
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir exactly where it stopped")
    p.add_argument("--out", help="where to write the trained model (default: RUN_DIR/model)")
    p.add_argument("--steps", type=int, default=r["steps"], help="optimizer steps in all")
    p.add_argument("--batch-size", type=int, default=r["batch_size"], help="images per step")
    p.add_argument("--lr", type=float, default=r["lr"], help="peak learning rate")
    p.add_argument("--warmup-steps", type=int, default=r["warmup_steps"], help="linear warm-up from 0.005 × the peak")
    schedules = "after warm-up: lin0 (the reference: flat 5%%, then linear), lin (flat 15%%) or cos"
    p.add_argument("--schedule", choices=registry.LR_SCHEDULES, default="lin0", help=schedules)
    p.add_argument("--lr-end-ratio", type=float, default=0.01, help="final LR / peak (the reference's wpe)")
    p.add_argument("--weight-decay", type=float, default=r["weight_decay"], help="AdamW weight decay (start)")
    p.add_argument("--weight-decay-end", type=float, default=None, help="cosine to this (default: constant)")
    p.add_argument("--grad-clip", type=float, default=2.0, help="gradient norm clipping")
    p.add_argument("--eval-every", type=int, default=r["eval_every"], help="steps between evaluations")
    p.add_argument("--save-every", type=int, default=r["save_every"], help="steps between checkpoints")
    add_seed_arg(p, "seed of the initial weights, the data order and every random draw")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32", help="bf16 autocast (CUDA only)")
    add_device_arg(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def register(sub) -> None:
    p = sub.add_parser("train-tokenizer", help="train a multi-scale VQ-VAE")
    p.add_argument("--preset", default="digits", choices=list(registry.ARCHITECTURES), help="architecture")
    p.add_argument("--vocab-size", type=int, help="codebook size (default: the preset's)")
    p.add_argument("--z-channels", type=int, help="latent channels (default: the preset's)")
    p.add_argument("--ch", type=int, help="base width (default: the preset's)")
    p.add_argument("--ch-mult", help="width multipliers, e.g. 1,2,4: len − 1 halvings (default: the preset's)")
    p.add_argument("--patch-nums", help="scales, e.g. 1,2,3,4,6,8: the last is the latent size (default: the preset's)")
    p.add_argument("--beta", type=float, default=0.25, help="commitment weight of the VQ loss")
    p.add_argument("--perceptual-weight", type=float, default=0.0, help="VGG feature loss (needs VGG16 weights)")
    p.add_argument("--adversarial-weight", type=float, default=0.0, help="PatchGAN hinge loss")
    p.add_argument("--adversarial-start", type=int, default=0, help="step at which the adversarial loss starts")
    p.add_argument("--revive-every", type=int, default=50, help="steps between dead-code revivals (0: never)")
    add_train_args(p, registry.RECIPES["digits-tokenizer"])
    p.set_defaults(func=run_tokenizer)

    p = sub.add_parser("train", help="train a VAR transformer on a frozen tokenizer")
    tokenizer = "a trained tokenizer: a model name (digits, var-d16 …), a directory or a reference .pth"
    p.add_argument("--tokenizer", required=True, help=tokenizer)
    p.add_argument("--preset", default="digits", choices=list(registry.ARCHITECTURES), help="transformer shape")
    p.add_argument("--depth", type=int, help="the released depth rule instead of --preset: width 64·depth")
    p.add_argument("--cond-drop-rate", type=float, default=0.1, help="label dropout, for guidance")
    p.add_argument("--drop-path-rate", type=float, default=None,
                   help="stochastic depth (default: 0.1·depth/24 with --depth, else 0)")  # fmt: skip
    p.add_argument("--label-smoothing", type=float, default=0.0, help="cross-entropy label smoothing")
    add_train_args(p, registry.RECIPES["digits-var"])
    p.set_defaults(func=run_var)


def train_config(args, **extra):
    from ..training import TrainConfig

    return TrainConfig(
        steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup_steps=args.warmup_steps,
        schedule=args.schedule, lr_end_ratio=args.lr_end_ratio, weight_decay=args.weight_decay,
        weight_decay_end=args.weight_decay_end, grad_clip=args.grad_clip, eval_every=args.eval_every,
        save_every=args.save_every, seed=check_seed(args.seed), precision=args.precision, extra=extra,
    )  # fmt: skip


def parse_ints(text: str | None, flag: str) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise NextscaleError(f"{flag} takes comma-separated integers, got {text!r}") from None


def prepare_run(args):
    """Checks the run directory and the outputs before any work: a run is continued only with --resume, and
    --resume needs a run. Returns the device."""
    from ..training.common import check_run_dir, check_training_device

    device = resolve_device(args.device)
    check_training_device(device, args.precision)
    check_run_dir(Path(args.run_dir), args.resume)
    writable_dir(args.run_dir, "--run-dir")
    writable_dir(args.out, "--out")
    return device


def datasets(args, resolution: int):
    from ..data import open_dataset

    train = open_dataset(args.data, resolution, "train", seed=args.seed)
    if args.val_data:
        val = open_dataset(args.val_data, resolution, "test", seed=args.seed)
        if getattr(val, "classes", None) != getattr(train, "classes", None):
            raise NextscaleError(f"--val-data {args.val_data} does not have the classes of --data {args.data} "
                                 "(the same class sub-folders, by name)")  # fmt: skip
        return train, val
    return train, open_dataset("digits", resolution, "test", seed=args.seed) if args.data == "digits" else None


def run_tokenizer(args) -> None:
    from ..training import TokenizerOptions, train_tokenizer

    config, _ = registry.architecture(args.preset)
    overrides = {
        "vocab_size": args.vocab_size,
        "z_channels": args.z_channels,
        "ch": args.ch,
        "ch_mult": parse_ints(args.ch_mult, "--ch-mult"),
        "patch_nums": parse_ints(args.patch_nums, "--patch-nums"),
    }
    config = replace(config, **{k: v for k, v in overrides.items() if v is not None})
    options = TokenizerOptions(beta=args.beta, perceptual_weight=args.perceptual_weight,
                               adversarial_weight=args.adversarial_weight, adversarial_start=args.adversarial_start,
                               revive_every=args.revive_every)  # fmt: skip
    settings = train_config(args, options=vars(options))
    device = prepare_run(args)
    train, test = datasets(args, config.resolution)
    vae, metrics = train_tokenizer(config, train, test, settings, args.run_dir, options=options,
                                   resume=args.resume, device=device, progress=not args.quiet)  # fmt: skip
    out = vae.save_pretrained(args.out or Path(args.run_dir) / "model")
    print(f"tokenizer saved to {out}: " + ", ".join(f"{k} {v:.3g}" for k, v in metrics.items()))


def run_var(args) -> None:
    from ..training import VAROptions, train_var
    from ..transformer import VARConfig
    from ..weights import load_vae, save_model

    if args.depth is not None:
        config = VARConfig.from_depth(args.depth)
    else:
        _, config = registry.architecture(args.preset)
    drop_path = args.drop_path_rate
    if drop_path is None:
        drop_path = 0.1 * args.depth / 24 if args.depth is not None else 0.0  # the released models' rule
    options = VAROptions(cond_drop_rate=args.cond_drop_rate, drop_path_rate=drop_path,
                         label_smoothing=args.label_smoothing)  # fmt: skip
    settings = train_config(args, options=vars(options), tokenizer=str(args.tokenizer))
    device = prepare_run(args)
    vae = load_vae(args.tokenizer, device=device)
    config = replace(config, vocab_size=vae.config.vocab_size, latent_channels=vae.config.z_channels,
                     patch_nums=vae.config.patch_nums)  # fmt: skip
    train, test = datasets(args, vae.config.resolution)
    config = replace(config, num_classes=train.num_classes)  # the tokenizer fixed the rest of the fit
    var, metrics = train_var(config, vae, train, test, settings, args.run_dir, options=options, resume=args.resume,
                             device=device, progress=not args.quiet)  # fmt: skip
    out = save_model(vae, var, args.out or Path(args.run_dir) / "model")
    print(f"model (vae/ + var/) saved to {out}: " + ", ".join(f"{k} {v:.3g}" for k, v in metrics.items()))
