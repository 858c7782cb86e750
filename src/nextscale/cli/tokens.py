"""`nextscale tokenize` (a dataset → token shards, once) and `nextscale export` (a checkpoint → a model)."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import NextscaleError
from .common import add_device_arg, at_least, resolve_device, writable_dir


def register(sub) -> None:
    p = sub.add_parser("tokenize", help="encode an image folder once into token shards for `nextscale train`")
    p.add_argument("--data", required=True, help="'digits' (built in) or a folder with one sub-folder per class")
    p.add_argument("--tokenizer", required=True, help="a model name (digits, var-d16 …), a directory or a .pth")
    p.add_argument("--out", required=True, help="the token directory (a stopped run resumes here)")
    p.add_argument("--flip", action="store_true", help="also encode each image flipped (training picks one per epoch)")
    p.add_argument("--batch-size", type=int, default=256, help="images per tokenizer call (per process)")
    p.add_argument("--shard-size", type=int, default=4096, help="images per shard file")
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
    p.set_defaults(func=run_export)


def run_tokenize(args) -> None:
    from ..data import DigitsDataset, ImageFolderDataset
    from ..data.tokens import tokenize
    from ..training.distributed import setup, teardown
    from ..weights import load_vae

    at_least(args.batch_size, 1, "--batch-size")
    at_least(args.shard_size, 1, "--shard-size")
    at_least(args.workers, 0, "--workers")
    writable_dir(args.out, "--out")
    dist, device = setup(resolve_device(args.device))
    vae = load_vae(args.tokenizer, device=device)
    if args.data == "digits":
        data = DigitsDataset("train", resolution=vae.config.resolution)
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
        tokenizer_name=str(args.tokenizer),
        workers=workers,
    )
    if dist.is_main:
        print(f"{len(data)} images tokenized: {index}")
    teardown()


def run_export(args) -> None:
    from ..training.export import export_checkpoint
    from ..weights import load_vae, save_model

    writable_dir(args.out, "out")
    stage, model, record = export_checkpoint(args.run, args.weights)
    if stage == "tokenizer":
        model.save_pretrained(args.out)
        print(f"tokenizer (step {record['step']}) saved to {args.out}")
        return
    tokenizer = args.tokenizer or record["settings"]["train"].get("extra", {}).get("tokenizer")
    if not tokenizer:
        raise NextscaleError("the run did not record its tokenizer: pass --tokenizer")
    vae = load_vae(tokenizer)
    if vae.config.vocab_size != model.config.vocab_size or tuple(vae.config.patch_nums) != model.patch_nums:
        raise NextscaleError(f"--tokenizer {tokenizer} does not fit this transformer (codebook or scales differ)")
    save_model(vae, model, Path(args.out))
    print(f"model (vae/ + var/, step {record['step']}) saved to {args.out}")
