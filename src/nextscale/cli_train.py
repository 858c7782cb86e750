"""`nextscale train-tokenizer` and `nextscale train`."""

from __future__ import annotations

import argparse
from pathlib import Path

from .errors import NextscaleError


def add_train_args(p: argparse.ArgumentParser, *, lr: float, steps: int, batch_size: int, weight_decay: float):
    p.add_argument("--data", required=True, help="'digits' (built in) or a folder with one sub-folder per class")
    p.add_argument("--val-data", help="a held-out folder (default: the digits test split, or none)")
    p.add_argument("--run-dir", required=True, help="checkpoints and log.jsonl go here")
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir exactly where it stopped")
    p.add_argument("--out", help="where to write the trained model (default: RUN_DIR/model)")
    p.add_argument("--steps", type=int, default=steps)
    p.add_argument("--batch-size", type=int, default=batch_size)
    p.add_argument("--lr", type=float, default=lr, help=f"peak learning rate (default {lr})")
    p.add_argument("--warmup-steps", type=int, default=100)
    p.add_argument("--schedule", choices=["lin0", "lin", "cos"], default="lin0")
    p.add_argument("--lr-end-ratio", type=float, default=0.01, help="final LR / peak (reference wpe)")
    p.add_argument("--weight-decay", type=float, default=weight_decay)
    p.add_argument("--weight-decay-end", type=float, default=None)
    p.add_argument("--grad-clip", type=float, default=2.0)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--save-every", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="bf16 autocast (CUDA only)")
    p.add_argument("--device", default="auto")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def train_config(args, **extra):
    from .training import TrainConfig

    return TrainConfig(
        steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup_steps=args.warmup_steps,
        schedule=args.schedule, lr_end_ratio=args.lr_end_ratio, weight_decay=args.weight_decay,
        weight_decay_end=args.weight_decay_end, grad_clip=args.grad_clip, eval_every=args.eval_every,
        save_every=args.save_every, seed=args.seed, precision=args.precision, extra=extra,
    )  # fmt: skip


def parse_ints(text: str | None, flag: str) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise NextscaleError(f"{flag} takes comma-separated integers, got {text!r}") from None


def datasets(args, resolution: int):
    from .data import open_dataset

    train = open_dataset(args.data, resolution, "train", seed=args.seed)
    if args.val_data:
        return train, open_dataset(args.val_data, resolution, "test", seed=args.seed)
    return train, open_dataset("digits", resolution, "test", seed=args.seed) if args.data == "digits" else None


def check_run_dir(args) -> None:
    from .training.common import latest_checkpoint

    if latest_checkpoint(Path(args.run_dir)) is not None and not args.resume:
        raise NextscaleError(
            f"{args.run_dir} already holds a run: pass --resume to continue it, or pick a new --run-dir"
        )


def cmd_train_tokenizer(args) -> None:
    from dataclasses import replace

    from .cli import pick_device
    from .presets import preset_configs
    from .training import TokenizerOptions, train_tokenizer

    config, _ = preset_configs(args.preset)
    overrides = {
        "vocab_size": args.vocab_size,
        "z_channels": args.z_channels,
        "ch": args.ch,
        "ch_mult": parse_ints(args.ch_mult, "--ch-mult"),
        "patch_nums": parse_ints(args.patch_nums, "--patch-nums"),
    }
    config = replace(config, **{k: v for k, v in overrides.items() if v is not None})
    check_run_dir(args)
    options = TokenizerOptions(perceptual_weight=args.perceptual_weight, adversarial_weight=args.adversarial_weight,
                               adversarial_start=args.adversarial_start, revive_every=args.revive_every)  # fmt: skip
    train, test = datasets(args, config.resolution)
    vae, metrics = train_tokenizer(config, train, test, train_config(args, options=vars(options)), args.run_dir,
                                   options=options, resume=args.resume, device=pick_device(args.device),
                                   progress=not args.quiet)  # fmt: skip
    out = vae.save_pretrained(args.out or Path(args.run_dir) / "model")
    print(f"tokenizer saved to {out}: " + ", ".join(f"{k} {v:.3g}" for k, v in metrics.items()))


def cmd_train(args) -> None:
    from dataclasses import replace

    from .checkpoint import load_vae, save_model
    from .cli import pick_device
    from .presets import preset_configs
    from .training import VAROptions, train_var
    from .transformer import VARConfig

    device = pick_device(args.device)
    vae = load_vae(args.tokenizer, device=device)
    if args.depth is not None:
        config = VARConfig.from_depth(args.depth)
    else:
        _, config = preset_configs(args.preset)
    config = replace(config, vocab_size=vae.config.vocab_size, latent_channels=vae.config.z_channels,
                     patch_nums=vae.config.patch_nums, cond_drop_rate=args.cond_drop_rate)  # fmt: skip
    check_run_dir(args)
    train, test = datasets(args, vae.config.resolution)
    config = replace(config, num_classes=train.num_classes)  # the tokenizer fixed the rest of the fit
    options = VAROptions(label_smoothing=args.label_smoothing)
    settings = train_config(args, options=vars(options), tokenizer=str(args.tokenizer))
    var, metrics = train_var(config, vae, train, test, settings, args.run_dir, options=options, resume=args.resume,
                             device=device, progress=not args.quiet)  # fmt: skip
    out = save_model(vae, var, args.out or Path(args.run_dir) / "model")
    print(f"model (vae/ + var/) saved to {out}: " + ", ".join(f"{k} {v:.3g}" for k, v in metrics.items()))


def register(sub) -> None:
    p = sub.add_parser("train-tokenizer", help="train a multi-scale VQ-VAE")
    p.add_argument("--preset", default="digits", help="architecture preset (digits, tiny, var-d16 …)")
    p.add_argument("--vocab-size", type=int)
    p.add_argument("--z-channels", type=int)
    p.add_argument("--ch", type=int)
    p.add_argument("--ch-mult", help="e.g. 1,2,4 (len − 1 halvings)")
    p.add_argument("--patch-nums", help="e.g. 1,2,3,4,6,8 (the last is the latent size)")
    p.add_argument("--perceptual-weight", type=float, default=0.0, help="VGG feature loss (needs VGG16 weights)")
    p.add_argument("--adversarial-weight", type=float, default=0.0, help="PatchGAN hinge loss")
    p.add_argument("--adversarial-start", type=int, default=0)
    p.add_argument("--revive-every", type=int, default=50, help="steps between dead-code revivals (0: never)")
    add_train_args(p, lr=5e-4, steps=1500, batch_size=32, weight_decay=0.0)
    p.set_defaults(func=cmd_train_tokenizer)

    p = sub.add_parser("train", help="train a VAR transformer on a frozen tokenizer")
    p.add_argument("--tokenizer", required=True, help="a trained tokenizer (directory or reference .pth)")
    p.add_argument("--preset", default="digits", help="transformer shape preset (digits, tiny, var-d16 …)")
    p.add_argument("--depth", type=int, help="the released depth rule instead of --preset: width 64·depth")
    p.add_argument("--cond-drop-rate", type=float, default=0.1, help="label dropout for guidance")
    p.add_argument("--label-smoothing", type=float, default=0.0)
    add_train_args(p, lr=1e-3, steps=1500, batch_size=64, weight_decay=0.05)
    p.set_defaults(func=cmd_train)
