"""`nextscale train-tokenizer` and `nextscale train`: both stages, with runs that resume exactly."""

from __future__ import annotations

import argparse
import os
from dataclasses import replace
from pathlib import Path

from .. import registry
from ..errors import NextscaleError
from ..runtime import TRAIN_PRECISIONS
from .common import add_device_arg, add_seed_arg, check_seed, flag_error, resolve_device, writable_dir


class Given(argparse.Action):
    """Stores the value and remembers that the user gave it (a recipe fills in only what was not given)."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        namespace.given = {*getattr(namespace, "given", ()), self.dest}


def add_train_args(p: argparse.ArgumentParser, recipe: registry.Recipe):
    """The training arguments; defaults are the built-in model's recipe for the stage."""
    r = recipe.train
    data = "'digits' (built in), a folder with one sub-folder per class" + (
        ", or a token directory" if recipe.stage == "var" else ""
    )
    p.add_argument("--data", required=True, help=data)
    p.add_argument("--val-data", help="a held-out folder (default: the digits test split, or none)")
    p.add_argument("--run-dir", required=True, help="checkpoints, log.jsonl and runs.jsonl go here")
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir exactly where it stopped")
    p.add_argument("--out", help="where to write the trained model (default: RUN_DIR/model)")
    p.add_argument("--steps", type=int, default=r["steps"], action=Given, help="optimizer steps in all")
    p.add_argument(
        "--batch-size",
        type=int,
        default=r["batch_size"],
        action=Given,
        help="the global batch: images per step over all processes",
    )
    p.add_argument("--lr", type=float, default=r["lr"], action=Given, help="peak learning rate")
    p.add_argument(
        "--base-lr",
        type=float,
        action=Given,
        help="the reference's scaling instead of --lr: lr = base-lr × batch-size / 256",
    )
    p.add_argument(
        "--warmup-steps", type=int, default=r["warmup_steps"], action=Given, help="linear warm-up from 0.005 × the peak"
    )
    schedules = "after warm-up: lin0 (the reference: flat 5%%, then linear), lin (flat 15%%) or cos"
    p.add_argument("--schedule", choices=registry.LR_SCHEDULES, default="lin0", action=Given, help=schedules)
    p.add_argument("--lr-end-ratio", type=float, default=0.01, action=Given, help="final LR / peak (reference wpe)")
    p.add_argument("--weight-decay", type=float, default=r["weight_decay"], action=Given, help="AdamW weight decay")
    p.add_argument(
        "--weight-decay-end", type=float, default=None, action=Given, help="cosine to this (default: constant)"
    )
    p.add_argument("--grad-clip", type=float, default=2.0, action=Given, help="gradient norm clipping")
    p.add_argument("--ema", type=float, default=0.0, help="EMA decay of the weights, e.g. 0.9999 (0: none)")
    p.add_argument("--eval-every", type=int, default=r["eval_every"], action=Given, help="steps between evaluations")
    p.add_argument("--save-every", type=int, default=r["save_every"], action=Given, help="steps between checkpoints")
    p.add_argument("--keep", type=int, default=2, help="checkpoints kept")
    p.add_argument("--log-every", type=int, default=50, help="steps between log.jsonl records")
    add_seed_arg(p, "seed of the initial weights, the data order and every random draw")
    g = p.add_argument_group("scale (run under torchrun for several processes: the same command)")
    g.add_argument(
        "--precision",
        choices=TRAIN_PRECISIONS,
        default="fp32",
        action=Given,
        help="bf16 autocast, or fp16 autocast with a loss scaler (CUDA only)",
    )
    g.add_argument("--fsdp", action="store_true", help="shard parameters, gradients and optimizer state (FSDP2)")
    g.add_argument("--grad-checkpointing", action="store_true", help="recompute each block in the backward")
    g.add_argument("--compile", nargs="?", const="inductor", default=None, help="torch.compile (a backend name)")
    g.add_argument(
        "--workers",
        type=int,
        default=min(4, os.cpu_count() or 1),
        help="DataLoader worker processes for image folders (per process)",
    )
    add_device_arg(g)
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def register(sub) -> None:
    p = sub.add_parser("train-tokenizer", help="train a multi-scale VQ-VAE")
    p.add_argument("--preset", default="digits", choices=list(registry.ARCHITECTURES), help="architecture")
    p.add_argument("--vocab-size", type=int, help="codebook size (default: the preset's)")
    p.add_argument("--z-channels", type=int, help="latent channels (default: the preset's)")
    p.add_argument("--ch", type=int, help="base width (default: the preset's)")
    p.add_argument("--ch-mult", help="width multipliers, e.g. 1,2,4: len − 1 halvings (default: the preset's)")
    p.add_argument("--patch-nums", help="scales, e.g. 1,2,3,4,6,8: the last is the latent size (default: the preset's)")
    recipes = [n for n, r in registry.RECIPES.items() if r.stage == "tokenizer" and r.epochs]
    p.add_argument(
        "--recipe",
        choices=recipes,
        help="a documented 256 px recipe (architecture, losses, batch, LR, epochs); flags given override it",
    )
    p.add_argument("--beta", type=float, default=0.25, action=Given, help="commitment weight of the VQ loss")
    p.add_argument(
        "--perceptual-weight",
        type=float,
        default=0.0,
        action=Given,
        help="LPIPS loss (needs VGG16 weights; LPIPS's own for LPIPS proper)",
    )
    p.add_argument("--perceptual-weights", help="torchvision's vgg16-397923af.pth (default: torch hub's cache)")
    p.add_argument(
        "--lpips-weights",
        help="the lpips package's weights/v0.1/vgg.pth (default: equal channel weights, a plain VGG feature distance)",
    )
    p.add_argument("--adversarial-weight", type=float, default=0.0, action=Given, help="PatchGAN hinge loss")
    p.add_argument(
        "--adversarial-start", type=int, default=0, action=Given, help="step at which the adversarial loss starts"
    )
    p.add_argument(
        "--no-adaptive-weight", action="store_true", help="a fixed adversarial weight instead of VQGAN's adaptive one"
    )
    p.add_argument("--revive-every", type=int, default=50, help="steps between dead-code revivals (0: never)")
    add_train_args(p, registry.RECIPES["digits-tokenizer"])
    p.set_defaults(func=run_tokenizer)

    p = sub.add_parser("train", help="train a VAR transformer on a frozen tokenizer")
    tokenizer = "a trained tokenizer: a model name (digits, var-d16 …), a directory or a reference .pth"
    p.add_argument("--tokenizer", required=True, help=tokenizer)
    recipes = [n for n, r in registry.RECIPES.items() if r.stage == "var" and r.epochs]
    recipe_help = (
        "the reference's hyper-parameters for this model (its README's recipes): depth, batch, LR, "
        "schedule, weight decay, epochs; flags given override them"
    )
    p.add_argument("--recipe", choices=recipes, help=recipe_help)
    p.add_argument("--preset", default="digits", choices=list(registry.ARCHITECTURES), help="transformer shape")
    p.add_argument("--depth", type=int, help="the released depth rule instead of --preset: width 64·depth")
    p.add_argument("--cond-drop-rate", type=float, default=0.1, action=Given, help="label dropout, for guidance")
    p.add_argument(
        "--drop-path-rate",
        type=float,
        default=None,
        action=Given,
        help="stochastic depth (default: 0.1·depth/24 with --depth, else 0)",
    )
    p.add_argument("--label-smoothing", type=float, default=0.0, action=Given, help="cross-entropy label smoothing")
    g = p.add_argument_group("progressive training (the reference's curriculum over scales; off by default)")
    g.add_argument("--pg", type=float, default=0.0, help="fraction of the run by which every scale is trained (0: off)")
    g.add_argument("--pg0", type=int, default=4, help="the last scale trained until the warm-up ends")
    g.add_argument(
        "--pgwp",
        type=int,
        default=None,
        help="steps over which a new scale's loss weight ramps up (default: steps/300, as the reference's epochs/300)",
    )
    add_train_args(p, registry.RECIPES["digits-var"])
    p.set_defaults(func=run_var)


TRAIN_FLAGS = {
    "steps": "--steps",
    "batch_size": "--batch-size",
    "lr_end_ratio": "--lr-end-ratio",
    "lr": "--lr",
    "warmup_steps": "--warmup-steps",
    "weight_decay_end": "--weight-decay-end",
    "weight_decay": "--weight-decay",
    "grad_clip": "--grad-clip",
    "eval_every": "--eval-every",
    "save_every": "--save-every",
    "log_every": "--log-every",
    "keep": "--keep",
    "ema": "--ema",
    "workers": "--workers",
    "pgwp": "--pgwp",
    "pg0": "--pg0",
    "pg": "--pg",
    "cond_drop_rate": "--cond-drop-rate",
    "drop_path_rate": "--drop-path-rate",
    "label_smoothing": "--label-smoothing",
    "adversarial_start": "--adversarial-start",
    "revive_every": "--revive-every",
    "beta": "--beta",
}


def train_config(args, **extra):
    from ..training import TrainConfig

    lr = args.lr
    if args.base_lr is not None:
        if "lr" in getattr(args, "given", ()):
            raise NextscaleError("give --lr or --base-lr, not both")
        lr = args.base_lr * args.batch_size / 256
    pg = getattr(args, "pg", 0.0)
    pgwp = getattr(args, "pgwp", None)
    try:
        return TrainConfig(
            steps=args.steps,
            batch_size=args.batch_size,
            lr=lr,
            warmup_steps=args.warmup_steps,
            schedule=args.schedule,
            lr_end_ratio=args.lr_end_ratio,
            weight_decay=args.weight_decay,
            weight_decay_end=args.weight_decay_end,
            grad_clip=args.grad_clip,
            eval_every=args.eval_every,
            save_every=args.save_every,
            log_every=args.log_every,
            keep=args.keep,
            seed=check_seed(args.seed),
            precision=args.precision,
            ema=args.ema,
            fsdp=args.fsdp,
            grad_checkpointing=args.grad_checkpointing,
            compile=args.compile,
            workers=args.workers,
            pg=pg,
            pg0=getattr(args, "pg0", 4),
            pgwp=pgwp if pgwp is not None else max(1, args.steps // 300),
            extra=extra,
        )
    except NextscaleError as e:
        raise flag_error(e, TRAIN_FLAGS) from None


def apply_recipe(args, n_images: int, stage: str = "var") -> None:
    """`--recipe`: the recipe's settings for every flag the user did not give; its epochs become steps for
    this dataset's size."""
    r = registry.recipe(args.recipe, stage)
    given = getattr(args, "given", set())
    for key, value in {**r.train, **r.options}.items():
        if key not in given and hasattr(args, key):
            setattr(args, key, value)
    if "batch_size" in given and "lr" not in given and "base_lr" not in given:
        args.lr = r.train["lr"] / r.train["batch_size"] * args.batch_size  # base LR × batch / 256, as the recipe
    args.init_adaln_gamma = r.options.get("init_adaln_gamma")
    if "steps" not in given:
        args.steps = r.epochs * max(1, n_images // args.batch_size)
        if "warmup_steps" not in given:
            args.warmup_steps = args.steps // 50 if stage == "var" else 0  # the reference: epochs / 50
    if stage == "var" and args.depth is None:
        args.depth = registry.architecture(args.recipe)[1].depth


def parse_ints(text: str | None, flag: str) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(x) for x in text.split(","))
    except ValueError:
        raise NextscaleError(f"{flag} takes comma-separated integers, got {text!r}") from None


def start_processes(args):
    """Joins torchrun's group when launched by it; checks the run directory and the outputs before any work:
    a run is continued only with --resume, and --resume needs a run. Returns (dist, device)."""
    from ..training.common import check_run_dir, check_training_device
    from ..training.distributed import setup

    check_seed(args.seed)
    device = resolve_device(args.device)
    check_training_device(device, args.precision)
    check_run_dir(Path(args.run_dir), args.resume)
    writable_dir(args.run_dir, "--run-dir")
    writable_dir(args.out, "--out")
    return setup(device)


def datasets(args, resolution: int, tokens_allowed: bool = False):
    from ..data import open_dataset
    from ..data.tokens import INDEX, TokenDataset

    def open_data(spec: str, split: str):
        if tokens_allowed and (Path(spec) / INDEX).is_file():
            return TokenDataset(spec)
        return open_dataset(spec, resolution, split, seed=args.seed)

    train = open_data(args.data, "train")
    if args.val_data:
        val = open_data(args.val_data, "test")
        if list(getattr(val, "classes", []) or []) != list(getattr(train, "classes", []) or []):
            raise NextscaleError(
                f"--val-data {args.val_data} does not have the classes of --data {args.data} "
                "(the same class sub-folders, by name)"
            )
        return train, val
    return train, open_dataset("digits", resolution, "test", seed=args.seed) if args.data == "digits" else None


def saved_settings(run_dir) -> dict:
    from ..training.checkpoint import latest_checkpoint, read_record

    return read_record(latest_checkpoint(Path(run_dir)))["settings"]


def finish(dist, model_out: Path, message: str) -> None:
    from ..training.distributed import teardown

    if dist.is_main:
        print(f"{message} saved to {model_out}")
    teardown()


def run_tokenizer(args) -> None:
    from ..training import TokenizerOptions, train_tokenizer
    from ..training.export import export_checkpoint

    dist, device = start_processes(args)
    if args.recipe:
        r = registry.recipe(args.recipe, "tokenizer")
        args.preset = r.architecture if args.preset == "digits" else args.preset
    config, _ = registry.architecture(args.preset)
    overrides = {
        "vocab_size": args.vocab_size,
        "z_channels": args.z_channels,
        "ch": args.ch,
        "ch_mult": parse_ints(args.ch_mult, "--ch-mult"),
        "patch_nums": parse_ints(args.patch_nums, "--patch-nums"),
    }
    config = replace(config, **{k: v for k, v in overrides.items() if v is not None})
    train, test = datasets(args, config.resolution)
    if args.recipe:
        apply_recipe(args, len(train), "tokenizer")
    try:
        options = TokenizerOptions(
            beta=args.beta,
            perceptual_weight=args.perceptual_weight,
            perceptual_weights=args.perceptual_weights,
            lpips_weights=args.lpips_weights,
            adversarial_weight=args.adversarial_weight,
            adversarial_start=args.adversarial_start,
            adaptive_weight=not args.no_adaptive_weight,
            revive_every=args.revive_every,
        )
    except NextscaleError as e:
        raise flag_error(e, TRAIN_FLAGS) from None
    settings = train_config(args, options=vars(options))
    train_tokenizer(
        config,
        train,
        test,
        settings,
        args.run_dir,
        options=options,
        resume=args.resume,
        device=device,
        dist=dist,
        progress=not args.quiet,
    )
    out = Path(args.out or Path(args.run_dir) / "model")
    if dist.is_main:
        _, vae, _ = export_checkpoint(args.run_dir)
        vae.save_pretrained(out)
    finish(dist, out, "tokenizer")


def run_var(args) -> None:
    from ..training import VAROptions, train_var
    from ..training.export import export_checkpoint
    from ..transformer import VARConfig
    from ..weights import load_vae, save_model

    dist, device = start_processes(args)
    vae = load_vae(args.tokenizer, device=device)
    train, test = datasets(args, vae.config.resolution, tokens_allowed=True)
    args.init_adaln_gamma = None
    if args.recipe:
        apply_recipe(args, len(train))
    if args.depth is not None:
        config = VARConfig.from_depth(args.depth)
    else:
        _, config = registry.architecture(args.preset)
    drop_path = args.drop_path_rate
    if drop_path is None:
        drop_path = 0.1 * args.depth / 24 if args.depth is not None else 0.0  # the released models' rule
    extra = {} if args.init_adaln_gamma is None else {"init_adaln_gamma": args.init_adaln_gamma}
    try:
        options = VAROptions(
            cond_drop_rate=args.cond_drop_rate, drop_path_rate=drop_path, label_smoothing=args.label_smoothing, **extra
        )
    except NextscaleError as e:
        raise flag_error(e, TRAIN_FLAGS) from None
    if args.pgwp is None and args.resume:  # its default follows --steps, which a resumed run may change
        args.pgwp = saved_settings(args.run_dir)["train"]["pgwp"]
    settings = train_config(args, options=vars(options), tokenizer=str(args.tokenizer))
    config = replace(
        config,
        vocab_size=vae.config.vocab_size,
        latent_channels=vae.config.z_channels,
        patch_nums=vae.config.patch_nums,
        num_classes=train.num_classes,
    )
    train_var(
        config,
        vae,
        train,
        test,
        settings,
        args.run_dir,
        options=options,
        resume=args.resume,
        device=device,
        dist=dist,
        progress=not args.quiet,
    )
    out = Path(args.out or Path(args.run_dir) / "model")
    if dist.is_main:
        _, var, _ = export_checkpoint(args.run_dir)
        save_model(vae.cpu(), var, out)
    finish(dist, out, "model (vae/ + var/)")
