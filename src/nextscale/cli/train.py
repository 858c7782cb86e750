"""`nextscale train-tokenizer` and `nextscale train`: both stages, with runs that resume exactly.

Every training setting's flag stores under the setting's own name (its field in `TrainConfig` or the stage's
options) and defaults to a FromRecipe, so the flags given are exactly the settings with another value. They take
the place of the recipe's (`--recipe`, else the built-in model's recipe for the stage), and what the recipe leaves
unset keeps the library's default: each default is written once, in the recipe or the class. The command's main
names the flag of a setting the library refuses.
"""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import replace
from pathlib import Path

from .. import registry
from ..errors import NextscaleError
from ..runtime import TRAIN_PRECISIONS
from ..training.config import (
    LR_SCHEDULES,
    TOKENIZER_TRAINABLE,
    TokenizerOptions,
    TrainConfig,
    check_decoder_only,
    curriculum_ramp,
    reference_drop_path,
)
from ..training.recipes import RECIPES, options_class, recipe, recipe_settings, setting_names
from ..training.trainable import PARAMETER_GROUPS
from .common import add_device_arg, add_seed_arg, check_seed, check_width_per_depth, parse_ints, resolve_device

BUILT_IN_RECIPES = {"tokenizer": "digits-tokenizer", "var": "digits-var"}  # the flags' defaults without --recipe
DEFAULT_PRESET = "digits"  # the architecture without --preset, --depth, --recipe or --init
FOLLOW_STEPS = ("pgwp", "warmup_steps")  # settings that follow the length of the run unless given


class FromRecipe:
    """The default of a training setting's flag: the flag was given when its value is another. It shows, in --help,
    the value a run takes without the flag."""

    def __init__(self, shown: str):
        self.shown = shown

    def __repr__(self) -> str:
        return self.shown


def shown_default(stage: str, name: str) -> str:
    """What a setting is when its flag is not given: the built-in recipe's value, else the library's default."""
    from dataclasses import MISSING, fields

    built_in = RECIPES[BUILT_IN_RECIPES[stage]]
    if name in FOLLOW_STEPS and name not in built_in.train:
        return "follows --steps, or --recipe's"
    if name in {**built_in.train, **built_in.options}:
        return f"{ {**built_in.train, **built_in.options}[name]!r}, or --recipe's"
    default = next(f.default for cls in (TrainConfig, options_class(stage)) for f in fields(cls) if f.name == name)
    return f"{default!r}, or --recipe's" if default is not MISSING else "--recipe's"


def add_setting(group, stage: str, flag: str, **kwargs) -> None:
    """The flag of a training setting: it stores under the setting's name and is unset unless given."""
    name = kwargs.get("dest") or flag.removeprefix("--").replace("-", "_")
    group.add_argument(flag, default=FromRecipe(shown_default(stage, name)), **kwargs)


def add_train_args(p: argparse.ArgumentParser, stage: str, run_dir: bool = True):
    """The arguments both stages share (`run_dir` False: all but where the run goes, for a command that places
    its runs itself)."""
    forms = [
        "'digits' or 'fashion-mnist' (built in: the train split)",
        "a folder of Fashion-MNIST's four IDX files",
        "a folder with one sub-folder per class",
        *(["a token directory"] if stage == "var" else []),
    ]
    data = f"{', '.join(forms[:-1])}, or {forms[-1]}"
    p.add_argument("--data", required=True, help=data)
    held_out = "a held-out set, as --data (None: a built-in dataset's test split; none for an image folder)"
    p.add_argument("--val-data", help=held_out)
    if run_dir:
        p.add_argument("--run-dir", required=True, help="checkpoints, log.jsonl and runs.jsonl go here")
        p.add_argument("--resume", action="store_true", help="continue the run in --run-dir exactly where it stopped")
        p.add_argument("--out", help="where to write the trained model (default: RUN_DIR/model)")
    g = p.add_argument_group(
        "training settings",
        f"a setting not given takes the recipe's value (--recipe, else {BUILT_IN_RECIPES[stage]}, the built-in "
        "model's), else the library's default (TrainConfig and the stage's options)",
    )
    add_setting(g, stage, "--steps", type=int, help="optimizer steps in all (a recipe's: its epochs over --data)")
    add_setting(g, stage, "--batch-size", type=int, help="the global batch: images per step over all processes")
    add_setting(g, stage, "--lr", type=float, help="peak learning rate")
    g.add_argument("--base-lr", type=float, help="the reference's scaling instead of --lr: lr = base-lr × batch / 256")
    add_setting(g, stage, "--warmup-steps", type=int, help="linear warm-up from 0.005 × the peak")
    schedules = "after warm-up: lin0 (the reference: flat 5%%, then linear), lin (flat 15%%) or cos"
    add_setting(g, stage, "--schedule", choices=LR_SCHEDULES, help=schedules)
    add_setting(g, stage, "--lr-end-ratio", type=float, help="final LR / peak (reference wpe)")
    add_setting(g, stage, "--weight-decay", type=float, help="AdamW weight decay")
    add_setting(g, stage, "--weight-decay-end", type=float, help="cosine to this (unset: constant)")
    add_setting(g, stage, "--grad-clip", type=float, help="gradient norm clipping")
    add_setting(g, stage, "--ema", type=float, help="EMA decay of the weights, e.g. 0.9999 (0: none)")
    add_setting(g, stage, "--eval-every", type=int, help="steps between evaluations")
    add_setting(g, stage, "--save-every", type=int, help="steps between checkpoints")
    add_setting(g, stage, "--keep", type=int, help="checkpoints kept")
    add_setting(g, stage, "--log-every", type=int, help="steps between log.jsonl records")
    add_setting(
        g, stage, "--count-flops", action="store_true", help="count the training FLOPs and log them at each evaluation"
    )
    add_seed_arg(g, "seed of the initial weights, the data order and every random draw")
    g = p.add_argument_group("scale (run under torchrun for several processes: the same command)")
    precision = "bf16 autocast, or fp16 autocast with a loss scaler (CUDA only)"
    add_setting(g, stage, "--precision", choices=TRAIN_PRECISIONS, help=precision)
    fsdp = "shard parameters, gradients and optimizer state (FSDP2)"
    add_setting(g, stage, "--fsdp", action="store_true", help=fsdp)
    checkpointing = "recompute each block in the backward"
    add_setting(g, stage, "--grad-checkpointing", action="store_true", help=checkpointing)
    add_setting(
        g,
        stage,
        "--compile",
        nargs="?",
        const="inductor",
        metavar="BACKEND",
        help="torch.compile (a bare --compile: inductor)",
    )
    g.add_argument(
        "--workers",
        type=int,
        default=min(4, os.cpu_count() or 1),  # the command's own: the library loads in its process (0)
        help="DataLoader worker processes for image folders (per process)",
    )
    add_device_arg(g)
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary line at the start")


def register(sub) -> None:
    p = sub.add_parser("train-tokenizer", help="train a multi-scale VQ-VAE")
    p.add_argument("--preset", choices=list(registry.ARCHITECTURES), help=f"architecture (default: {DEFAULT_PRESET})")
    p.add_argument("--vocab-size", type=int, help="codebook size (default: the preset's)")
    p.add_argument("--z-channels", type=int, help="latent channels (default: the preset's)")
    p.add_argument("--ch", type=int, help="base width (default: the preset's)")
    p.add_argument("--ch-mult", help="width multipliers, e.g. 1,2,4: len − 1 halvings (default: the preset's)")
    p.add_argument("--patch-nums", help="scales, e.g. 1,2,3,4,6,8: the last is the latent size (default: the preset's)")
    recipes = [n for n, r in RECIPES.items() if r.stage == "tokenizer"]
    p.add_argument(
        "--recipe",
        choices=recipes,
        help="a recipe by name (architecture, losses, batch, LR, steps or epochs): a built-in model's, or the "
        "documented 256 px one; flags given override it",
    )
    g = p.add_argument_group("losses")
    add_setting(g, "tokenizer", "--beta", type=float, help="commitment weight of the VQ loss")
    perceptual = "LPIPS loss (needs VGG16 weights; LPIPS's own for LPIPS proper)"
    add_setting(g, "tokenizer", "--perceptual-weight", type=float, help=perceptual)
    add_setting(
        g, "tokenizer", "--perceptual-weights", help="torchvision's vgg16-397923af.pth (unset: torch hub's cache)"
    )
    add_setting(
        g,
        "tokenizer",
        "--lpips-weights",
        help="the lpips package's weights/v0.1/vgg.pth (unset: equal channel weights, a plain VGG feature distance)",
    )
    add_setting(g, "tokenizer", "--adversarial-weight", type=float, help="PatchGAN hinge loss")
    add_setting(g, "tokenizer", "--adversarial-start", type=int, help="step at which the adversarial loss starts")
    add_setting(
        g,
        "tokenizer",
        "--no-adaptive-weight",
        dest="adaptive_weight",
        action="store_false",
        help="a fixed adversarial weight instead of VQGAN's adaptive one",
    )
    add_setting(g, "tokenizer", "--revive-every", type=int, help="steps between dead-code revivals (0: never)")
    g = p.add_argument_group("fine-tuning")
    g.add_argument(
        "--init",
        metavar="SOURCE",
        help="start from a trained tokenizer (a model name, a directory, a reference .pth, or a tokenizer run) "
        "instead of random weights; its architecture is the run's",
    )
    g.add_argument("--fresh-codebook", action="store_true", help="with --init: draw the codebook afresh")
    decoder_only = (
        "what learns: all, or decoder (with --init: the decoder and the post-quantization conv; the encoder and "
        "the codebook stay, so the tokens and the transformers trained on them stay valid, and no code is revived)"
    )
    add_setting(g, "tokenizer", "--trainable", choices=TOKENIZER_TRAINABLE, help=decoder_only)
    add_train_args(p, "tokenizer")
    p.set_defaults(func=run_tokenizer)

    p = sub.add_parser("train", help="train a VAR transformer on a frozen tokenizer")
    add_var_args(p)
    p.set_defaults(func=run_var)


def add_var_args(p: argparse.ArgumentParser, sweep: bool = False) -> None:
    """`train`'s arguments; for a sweep (`scaling run`), all but the architecture, the run directory and --init."""
    tokenizer = (
        "a trained tokenizer: a model name (digits, var-d16 …), a directory or a reference .pth (with --init: "
        "default, the one the initial model was trained with)"
    )
    p.add_argument("--tokenizer", required=sweep, help=tokenizer)
    recipes = [n for n, r in RECIPES.items() if r.stage == "var"]
    recipe_help = (
        "a recipe by name: a built-in model's, or the reference's hyper-parameters for a released model (its "
        "README's): architecture, batch, LR, schedule, weight decay, steps or epochs; flags given override them"
    )
    p.add_argument("--recipe", choices=recipes, help=recipe_help)
    if not sweep:
        shape = f"transformer shape (default: {DEFAULT_PRESET})"
        p.add_argument("--preset", choices=list(registry.ARCHITECTURES), help=shape)
        p.add_argument("--depth", type=int, help="the released depth rule instead of --preset: width 64·depth")
    width = "with --depth: width = this × depth (64: the released models' rule)"
    p.add_argument("--width-per-depth", type=int, default=registry.RELEASED_WIDTH_PER_DEPTH, help=width)
    budget = (
        "the run's length as a token budget instead of --steps: steps = TOKENS ÷ (batch × the tokenizer's tokens "
        "per image), rounded up (e.g. 3e7)"
    )
    p.add_argument("--train-tokens", type=float, metavar="TOKENS", help=budget)
    kind = (
        "the transformer: var (next-scale prediction), or raster-ar, the raster-order baseline (one token at a "
        "time, from the same blocks; it needs --depth and a single-scale tokenizer, train-tokenizer --patch-nums N)"
    )
    p.add_argument("--kind", choices=registry.TRANSFORMER_KINDS, default="var", help=kind)
    g = p.add_argument_group("regularisation")
    add_setting(g, "var", "--cond-drop-rate", type=float, help="label dropout, for guidance")
    drop_path = "stochastic depth (with --depth, unset: the released models' rule for that depth)"
    add_setting(g, "var", "--drop-path-rate", type=float, help=drop_path)
    add_setting(g, "var", "--label-smoothing", type=float, help="cross-entropy label smoothing")
    g = p.add_argument_group("progressive training (the reference's curriculum over scales; off by default)")
    add_setting(g, "var", "--pg", type=float, help="fraction of the run by which every scale is trained (0: off)")
    add_setting(g, "var", "--pg0", type=int, help="the last scale trained until the warm-up ends")
    add_setting(
        g,
        "var",
        "--pgwp",
        type=int,
        help="steps over which a new scale's loss weight ramps up (unset: steps/300, as the reference's epochs/300)",
    )
    if sweep:
        add_train_args(p, "var", run_dir=False)
        return
    g = p.add_argument_group("fine-tuning (README: Fine-tuning)")
    g.add_argument(
        "--init",
        metavar="SOURCE",
        help="start from a trained transformer instead of random weights: a model name (var-d16, digits, fashion …), "
        "a model directory, a reference .pth (or trainer checkpoint), or a run directory or checkpoint",
    )
    g.add_argument(
        "--class-map",
        metavar="OLD=NEW,…",
        help="with --init: the initial model's class OLD (a name or id) gives its embedding row to the data's class "
        "NEW (classes of the same name keep theirs; others start from the mean of the old rows)",
    )
    trainable = (
        f"what learns: all, groups ({', '.join(PARAMETER_GROUPS)}: comma-separated), lora:RANK on the attention and "
        "feed-forward linears (needs peft: the finetune extra), or LoRA with groups (lora:16,class)"
    )
    add_setting(g, "var", "--trainable", help=trainable)
    add_train_args(p, "var")


def run_settings(
    args, stage: str, n_images: int, implied: dict | None = None, tokens_per_image: int | None = None, **extra
):
    """The run's (TrainConfig, options): the recipe with the settings given in its place, after the `implied`
    ones (what other flags imply), and its steps from --train-tokens where given (`tokens_per_image`: the
    tokenizer's). `extra` is saved with the run's settings, beside the options."""
    names = setting_names(stage)
    given = {**(implied or {}), **{k: v for k, v in vars(args).items() if k in names and not isinstance(v, FromRecipe)}}
    if args.base_lr is not None and "lr" in given:
        raise NextscaleError("give --lr or --base-lr, not both")
    budget = getattr(args, "train_tokens", None)
    if budget is not None:
        if "steps" in given:
            raise NextscaleError("give --steps or --train-tokens, not both")
        batch = recipe_settings(args.recipe or BUILT_IN_RECIPES[stage], stage, n_images=n_images, **given)[0]
        given["steps"] = steps_for_tokens(budget, batch.batch_size, tokens_per_image)
    if args.resume:  # what follows --steps keeps its recorded value: a resumed run may change its length
        saved = saved_settings(args.run_dir).get("train", {})
        given.update({name: saved[name] for name in FOLLOW_STEPS if name not in given and name in saved})
    name = args.recipe or BUILT_IN_RECIPES[stage]
    config, options = recipe_settings(name, stage, n_images=n_images, base_lr=args.base_lr, **given)
    if "pgwp" not in given:
        config = replace(config, pgwp=curriculum_ramp(config.steps))
    return replace(config, extra={"options": vars(options), **extra}), options


def steps_for_tokens(tokens: float, batch_size: int, tokens_per_image: int) -> int:
    """The steps that train on `tokens` tokens (rounded up), at least one step's worth."""
    per_step = batch_size * tokens_per_image
    if not tokens >= per_step:  # NaN too
        raise NextscaleError(
            f"--train-tokens {tokens:g} is less than one step ({batch_size} images × {tokens_per_image} tokens)"
        )
    return math.ceil(tokens / per_step)


def var_architecture(args):
    """The transformer's configuration: --depth's rule, else the recipe's depth by that rule, else --preset."""
    from ..transformer import VARConfig

    depth = args.depth
    check_width_per_depth(depth, args.width_per_depth)
    if depth is None and args.recipe:
        r = recipe(args.recipe, "var")
        if not r.epochs:  # a built-in model's recipe: its own shape, unless --preset names another
            return registry.architecture(args.preset or r.architecture)[1]
        depth = registry.architecture(r.architecture)[1].depth
    if depth is None:
        return registry.architecture(args.preset or DEFAULT_PRESET)[1]
    rule = {k: getattr(args, k) for k in ("width_per_depth", "head_dim") if getattr(args, k, None) is not None}
    return VARConfig.from_depth(depth, **rule)  # `scaling run` may take another width rule


def architecture_given(args) -> bool:
    """Whether a flag names the architecture (--preset, --depth, or a recipe's)."""
    return args.preset is not None or getattr(args, "depth", None) is not None or args.recipe is not None


def start_processes(args):
    """Joins torchrun's group when launched by it; checks the run directory and the outputs before any work:
    a run is continued only with --resume, and --resume needs a run. Creates nothing: the run directory is made
    by the trainer once the settings and the data are known good, so a refused run leaves no folder behind.
    Returns (dist, device)."""
    from ..training.common import check_run_dir, check_training_device
    from ..training.distributed import setup

    check_seed(args.seed)
    device = resolve_device(args.device)
    if not isinstance(
        args.precision, FromRecipe
    ):  # a recipe's precision is checked with the recipe, once the data is open
        check_training_device(device, args.precision)
    check_run_dir(Path(args.run_dir), args.resume)
    creatable_dir(args.run_dir, "--run-dir")
    creatable_dir(args.out, "--out")
    return setup(device)


def creatable_dir(path: str | None, flag: str) -> None:
    from ..files import ensure_creatable_dir

    if path is not None:
        ensure_creatable_dir(path, flag)


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
    from ..data import builtin_dataset

    built_in = builtin_dataset(args.data) is not None  # a built-in dataset holds out its own test split
    return train, open_dataset(args.data, resolution, "test", seed=args.seed) if built_in else None


def saved_settings(run_dir) -> dict:
    """The settings of the run's newest checkpoint ({} for a run stopped before its first)."""
    from ..training.checkpoint import latest_checkpoint, read_record

    ckpt = latest_checkpoint(Path(run_dir))
    return read_record(ckpt)["settings"] if ckpt is not None else {}


def finish(dist, model_out: Path, message: str) -> None:
    from ..training.distributed import teardown

    if dist.is_main:
        print(f"{message} saved to {model_out}")
    teardown()


def run_tokenizer(args) -> None:
    from ..training import train_tokenizer
    from ..training.export import export_checkpoint
    from ..weights.load import recorded_source

    trainable = args.trainable
    if isinstance(trainable, FromRecipe):
        chosen = recipe(args.recipe or BUILT_IN_RECIPES["tokenizer"], "tokenizer")
        trainable = chosen.options.get("trainable", TokenizerOptions.trainable)
    check_decoder_only(trainable, bool(args.init), args.fresh_codebook)  # before anything loads
    dist, device = start_processes(args)
    preset = args.preset or (recipe(args.recipe, "tokenizer").architecture if args.recipe else DEFAULT_PRESET)
    config, _ = registry.architecture(preset)
    overrides = {
        "vocab_size": args.vocab_size,
        "z_channels": args.z_channels,
        "ch": args.ch,
        "ch_mult": parse_ints(args.ch_mult, "--ch-mult"),
        "patch_nums": parse_ints(args.patch_nums, "--patch-nums"),
    }
    given = {k: v for k, v in overrides.items() if v is not None}
    config = replace(config, **given)
    init, initial = None, {}
    if args.init:
        from ..training.finetune import check_same_architecture, load_init_vae

        init = load_init_vae(args.init, patch_nums=given.get("patch_nums"))
        if architecture_given(args):
            check_same_architecture(init.config, config, args.init)
        else:
            check_same_architecture(init.config, replace(init.config, **given), args.init)
        config, initial = init.config, {"init_path": recorded_source(args.init)}
    elif args.fresh_codebook:
        raise NextscaleError("--fresh-codebook applies with --init")
    train, test = datasets(args, config.resolution)
    settings, options = run_settings(args, "tokenizer", len(train), **initial)
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
        init=init,
        fresh_codebook=args.fresh_codebook,
    )
    out = Path(args.out or Path(args.run_dir) / "model")
    if dist.is_main:
        _, vae, _ = export_checkpoint(args.run_dir)
        vae.save_pretrained(out)
    finish(dist, out, "tokenizer")


def run_var(args) -> None:
    dist, out = train_var_from_args(args)
    finish(dist, out, "model (vae/ + var/)")


def train_var_from_args(args):
    """`train`'s work, up to the exported model; returns (dist, the model's directory). The process group stays
    up (`finish` tears it down): `scaling run` trains several sizes in one."""
    from ..training import train_var
    from ..training.export import export_checkpoint
    from ..weights import load_vae, save_model
    from ..weights.load import recorded_source

    check_kind_flags(args)  # before anything loads
    dist, device = start_processes(args)
    init = None
    if args.init:
        from ..training.finetune import init_tokenizer, load_init_var

        init, tokenizer_source = load_init_var(args.init)
        args.tokenizer = init_tokenizer(args.init, tokenizer_source, args.tokenizer)
    elif args.tokenizer is None:
        raise NextscaleError("give --tokenizer (or --init, which takes the tokenizer its model was trained with)")
    elif args.class_map:
        raise NextscaleError("--class-map applies with --init")
    vae = load_vae(args.tokenizer, device=device, patch_nums=init.config.patch_nums if init is not None else None)
    check_kind_tokenizer(args, vae)
    train, test = datasets(args, vae.config.resolution, tokens_allowed=True)
    config = var_architecture(args)
    implied = {} if args.depth is None else {"drop_path_rate": reference_drop_path(args.depth)}
    recorded = {"tokenizer_path": recorded_source(args.tokenizer)}
    if init is not None:
        recorded.update(init_path=recorded_source(args.init), class_map=args.class_map)
    tokens_per_image = vae.config.num_tokens
    settings, options = run_settings(args, "var", len(train), implied, tokens_per_image, **recorded)
    if args.kind == "raster-ar":
        from ..transformer import RasterConfig

        fields = dict(depth=config.depth, embed_dim=config.embed_dim, num_heads=config.num_heads)
        grid = dict(vocab_size=vae.config.vocab_size, grid=vae.config.patch_nums[0], num_classes=train.num_classes)
        config = RasterConfig(**fields, **grid)
    else:
        config = replace(
            config,
            vocab_size=vae.config.vocab_size,
            latent_channels=vae.config.z_channels,
            patch_nums=vae.config.patch_nums,
            num_classes=train.num_classes,
        )
    if init is not None:
        init = fitted_init(args, init, vae, train, config, options, dist)
        config = init.config
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
        init=init,
    )
    out = Path(args.out or Path(args.run_dir) / "model")
    if dist.is_main:
        _, var, _ = export_checkpoint(args.run_dir)
        save_model(vae.cpu(), var, out)
    return dist, out


def check_kind_flags(args) -> None:
    """What the raster-order baseline needs of the flags: its size by the depth rule, and no fine-tuning."""
    if args.kind != "raster-ar":
        return
    if getattr(args, "depth", None) is None:
        raise NextscaleError("--kind raster-ar takes its size from --depth (VAR's width rule), not from a preset")
    for flag, given in (("--init", getattr(args, "init", None)), ("--preset", getattr(args, "preset", None))):
        if given:
            raise NextscaleError(f"{flag} applies to --kind var")
    trainable = getattr(args, "trainable", "all")  # `scaling run` has no fine-tuning flags
    if not isinstance(trainable, FromRecipe) and trainable != "all":
        raise NextscaleError("--trainable applies to --kind var: a raster-order model trains all its weights")


def check_kind_tokenizer(args, vae) -> None:
    """The raster-order baseline reads a tokenizer of one scale."""
    if args.kind == "raster-ar" and len(vae.config.patch_nums) != 1:
        raise NextscaleError(
            f"--kind raster-ar needs a single-scale tokenizer (train-tokenizer --patch-nums N); "
            f"{args.tokenizer} has scales {','.join(map(str, vae.config.patch_nums))}"
        )


def fitted_init(args, init, vae, train, config, options, dist):
    """--init's transformer checked against the tokenizer and the architecture flags, with the data's classes."""
    import sys

    from ..data import class_names
    from ..training.finetune import (
        adapt_classes,
        check_same_architecture,
        parse_class_map,
        refuse_other_tokenizer_shape,
    )
    from ..training.trainable import parse_trainable

    refuse_other_tokenizer_shape(vae, init, args.init)
    if architecture_given(args):
        check_same_architecture(init.config, config, args.init, ignore=("num_classes",))
    names = class_names(train) or [str(c) for c in range(train.num_classes)]
    init, plan = adapt_classes(init, names, parse_class_map(args.class_map))
    new = sum(row is None for row in plan.rows)
    if dist.is_main and not args.quiet:
        print(f"starting from {args.init}: {plan.describe()}", file=sys.stderr, flush=True)
    if new and dist.is_main and "class" not in parse_trainable(options.trainable).groups:
        print(
            f"warning: {'1 new class starts' if new == 1 else f'{new} new classes start'} from the mean of the old "
            f"rows and --trainable {options.trainable} leaves the class embedding frozen (add class to --trainable)",
            file=sys.stderr,
            flush=True,
        )
    return init
