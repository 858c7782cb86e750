"""`nextscale tokenize` (a dataset → token shards, once) and `nextscale export` (a checkpoint → a model)."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import NextscaleError
from .common import add_device_arg, at_least, resolve_device, writable_dir


def register(sub) -> None:
    p = sub.add_parser("tokenize", help="encode an image folder once into token shards for `nextscale train`")
    data = (
        "'digits' or 'fashion-mnist' (built in: the train split), a folder of Fashion-MNIST's four IDX files "
        "(its train split), or a folder with one sub-folder per class"
    )
    p.add_argument("--data", required=True, help=data)
    p.add_argument("--tokenizer", required=True, help="a model name (digits, var-d16 …), a directory or a .pth")
    p.add_argument("--out", required=True, help="the token directory (a stopped run resumes here)")
    p.add_argument("--flip", action="store_true", help="also encode each image flipped (training picks one per epoch)")
    p.add_argument("--batch-size", type=int, default=256, help="images per tokenizer call (per process)")
    p.add_argument("--shard-size", type=int, default=4096, help="images per shard file")
    p.add_argument(
        "--rebuild",
        action="store_true",
        help="remove the tokens --out holds first (made by another tokenizer, or with other settings)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=min(4, os.cpu_count() or 1),
        help="DataLoader worker processes that read the images",
    )
    add_device_arg(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_tokenize)

    p = sub.add_parser("export", help="a training checkpoint → a model directory in the project's format")
    p.add_argument("run", help="a run directory (its latest checkpoint) or a checkpoint directory")
    p.add_argument("out", help="the model directory to write")
    p.add_argument(
        "--weights", choices=("auto", "ema", "raw"), default="auto", help="auto: the EMA weights when the run kept them"
    )
    p.add_argument("--tokenizer", help="a transformer run's tokenizer (default: the one the run recorded)")
    p.add_argument(
        "--any-tokenizer",
        action="store_true",
        help="export with a tokenizer other than the one the run trained with (the model records which that was)",
    )
    p.set_defaults(func=run_export)


def run_tokenize(args) -> None:
    from ..data import ImageFolderDataset, builtin_dataset, open_dataset
    from ..data.tokens import tokenize
    from ..pretrained import short_fingerprint
    from ..training.distributed import setup, teardown
    from ..weights import load_vae
    from ..weights.load import recorded_source

    at_least(args.batch_size, 1, "--batch-size")
    at_least(args.shard_size, 1, "--shard-size")
    at_least(args.workers, 0, "--workers")
    writable_dir(args.out, "--out")
    dist, device = setup(resolve_device(args.device))
    vae = load_vae(args.tokenizer, device=device)
    if builtin_dataset(args.data) is not None:
        data = open_dataset(args.data, vae.config.resolution, "train")
    else:  # centre crops: a token directory holds one view (or two, with --flip) of each image
        data = ImageFolderDataset(args.data, vae.config.resolution, train=False)
    workers = 0 if getattr(data, "in_memory", False) else args.workers
    index = tokenize(
        data,
        vae,
        args.out,
        flip=args.flip,
        batch_size=args.batch_size,
        shard_size=args.shard_size,
        dist=dist,
        device=device,
        progress=not args.quiet and dist.is_main,
        tokenizer_name=recorded_source(args.tokenizer),
        workers=workers,
        rebuild=args.rebuild,
    )
    if dist.is_main:
        from ..data.folders import name_files

        skipped = [name for name, _ in getattr(data, "skipped", [])]  # named, with why, when the folder was listed
        count = f"{len(data)} of {len(data) + len(skipped)}" if skipped else f"{len(data)}"
        note = f"; {len(skipped)} skipped: {name_files(skipped)}" if skipped else ""
        print(f"{count} images tokenized by tokenizer {short_fingerprint(vae.tokens_fingerprint())}: {index}{note}")
    teardown()


def run_export(args) -> None:
    from ..training.export import export_checkpoint
    from ..weights import save_model

    writable_dir(args.out, "out")
    stage, model, record = export_checkpoint(args.run, args.weights)
    if stage == "tokenizer":
        model.save_pretrained(args.out)
        print(f"tokenizer (step {record['step']}) saved to {args.out}")
        return
    vae = export_tokenizer(args, model, record["settings"]["train"].get("extra") or {})
    save_model(vae, model, Path(args.out))
    print(f"model (vae/ + var/, step {record['step']}) saved to {args.out}")
    if args.any_tokenizer and model.provenance.get("tokenizer") not in (None, vae.tokens_fingerprint()):
        print("the transformer records that it was trained with another tokenizer: load it with --any-tokenizer")


def export_tokenizer(args, var, extra: dict):
    """The tokenizer a transformer run is exported with: --tokenizer, else the one the run recorded (by absolute
    path: found from any directory), checked by content against the one the run trained with."""
    from ..files import first_line
    from ..pretrained import short_fingerprint
    from ..weights import load_vae

    trained_with = var.provenance.get("tokenizer")  # None for runs from before tokenizers were recorded by content
    # Such runs recorded the path given (to the directory they ran in) where later runs record the fingerprint.
    source = args.tokenizer or extra.get("tokenizer_path") or (extra.get("tokenizer") if trained_with is None else None)
    if not source:
        raise NextscaleError("the run did not record where its tokenizer was: pass --tokenizer")
    which = f"--tokenizer {source}" if args.tokenizer else f"the run's tokenizer {source}"
    try:
        vae = load_vae(source)
    except NextscaleError as e:
        if args.tokenizer:
            raise
        raise NextscaleError(
            f"{which} cannot be read ({first_line(e)}): pass --tokenizer with where it is now"
        ) from None
    if vae.config.vocab_size != var.config.vocab_size or tuple(vae.config.patch_nums) != var.patch_nums:
        raise NextscaleError(f"{which} does not fit this transformer (codebook or scales differ)")
    fingerprint = vae.tokens_fingerprint()
    if trained_with is None or fingerprint == trained_with or args.any_tokenizer:
        return vae
    then, now = short_fingerprint(trained_with), short_fingerprint(fingerprint)
    if args.tokenizer:
        raise NextscaleError(
            f"{which} ({now}) is not the tokenizer this run trained with ({then}): pass that one, or --any-tokenizer"
        )
    raise NextscaleError(
        f"{which} has changed since the run trained with it (then {then}, now {now}): pass --tokenizer with the "
        "one it trained with, or --any-tokenizer to export with this one"
    )
