"""`nextscale eval-tokenizer`: how well a tokenizer reconstructs a data set (PSNR, SSIM, LPIPS, rFID) and how
much of its codebook each scale uses."""

from __future__ import annotations

import argparse
import json
import os

from ..errors import NextscaleError
from .common import add_device_arg, add_seed_arg, at_least, check_seed, resolve_device, writable_file


def register(sub) -> None:
    description = (
        "Each image's centre crop at the tokenizer's resolution is tokenized and decoded from its tokens. "
        "PSNR and SSIM on images in [0, 1] (SSIM: 11×11 Gaussian window, σ 1.5, as skimage's "
        "gaussian_weights=True), means over images; rFID between the originals and the reconstructions "
        "through `nextscale eval`'s feature networks (by default the fashion network for Fashion-MNIST, else "
        "Inception where its weights are here, skipped with a note where not, unless --rfid); per scale, the share "
        "of the codebook used and the perplexity of its tokens."
    )
    p = sub.add_parser(
        "eval-tokenizer",
        help="reconstruction PSNR/SSIM/LPIPS/rFID and codebook use of a tokenizer",
        description=description,
    )
    p.add_argument("--tokenizer", required=True, help="a model name (digits, var-d16 …), a directory or a .pth")
    data = (
        "'digits' or 'fashion-mnist' (built in: the test split), a folder of Fashion-MNIST's four IDX files (its "
        "test split), or a folder with one sub-folder per class"
    )
    p.add_argument("--data", required=True, help=data)
    p.add_argument("--limit", type=int, help="evaluate only the first N images (None: all)")
    p.add_argument("--batch-size", type=int, default=32, help="images per tokenizer call")
    p.add_argument(
        "--features",
        help="rFID's feature network: inception, digits, fashion, or a torch.export .pt2 (or TorchScript .pt) file, "
        "as for `nextscale eval` (None: fashion for Fashion-MNIST, else inception; with --inception-weights, "
        "inception)",
    )
    p.add_argument("--inception-weights", help="the Inception weights file (None: torch's hub folder, see --rfid)")
    p.add_argument(
        "--rfid",
        action=argparse.BooleanOptionalAction,
        help="--rfid: rFID is required (the Inception weights download into torch's hub folder if missing, and an "
        "error names the file where they cannot); --no-rfid: skip it (None: computed where the network is at hand, "
        "skipped with a note where the Inception weights are not in torch's hub folder; nothing is downloaded)",
    )
    p.add_argument(
        "--lpips-weights",
        nargs="+",
        metavar="PATH",
        help="folders or files holding torchvision's vgg16-397923af.pth and the lpips package's vgg.pth "
        "(None: looked for in torch's hub folder and the lpips package; LPIPS is skipped, with a "
        "note, where they are not found)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=min(4, os.cpu_count() or 1),
        help="DataLoader worker processes that read a folder's images",
    )
    p.add_argument("--json", help="also write the numbers and settings here")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_seed_arg(p, "the seed of the digits' train/test split")
    add_device_arg(p)
    p.set_defaults(func=run)


def run(args) -> None:
    from ..data import builtin_dataset, open_dataset
    from ..evaluation import evaluate_tokenizer
    from ..evaluation.tokenizer import load_lpips
    from ..weights import load_vae

    if args.limit is not None:
        at_least(args.limit, 1, "--limit")
    at_least(args.batch_size, 1, "--batch-size")
    at_least(args.workers, 0, "--workers")
    seed = check_seed(args.seed)
    writable_file(args.json, "--json", (".json",))
    built_in = builtin_dataset(args.data)
    if built_in is None and not os.path.isdir(args.data):
        raise NextscaleError(
            f"--data {args.data}: no such folder (give 'digits', 'fashion-mnist', a folder of Fashion-MNIST's IDX "
            "files or a folder of class sub-folders)"
        )
    check_rfid_flags(args)
    device = resolve_device(args.device)
    lpips = load_lpips(args.lpips_weights, device=device)[0] if args.lpips_weights else "auto"  # named: must load
    vae = load_vae(args.tokenizer, device=device)
    data = open_dataset(args.data, vae.config.resolution, split="test", seed=seed)
    network = rfid_network(args, device, data)
    workers = 0 if getattr(data, "in_memory", False) else args.workers
    report = evaluate_tokenizer(
        vae,
        data,
        network=network,
        lpips=lpips,
        batch_size=args.batch_size,
        limit=args.limit,
        device=device,
        workers=workers,
        progress=not args.quiet,
    )
    split = " (test split)" if built_in else ""
    print(f"tokenizer {args.tokenizer} on {args.data}{split}: {report.summary()}")
    if args.json:
        from ..files import atomic_write_text

        settings = {
            "tokenizer": str(args.tokenizer),
            "data": args.data,
            "limit": args.limit,
            "seed": seed,
            "batch_size": args.batch_size,
            "features": args.features,
            "rfid": {True: "required", False: "skipped", None: "where the network is at hand"}[args.rfid],
            "device": str(device),
        }
        atomic_write_text(args.json, json.dumps({"settings": settings, **report.as_dict()}, indent=2) + "\n")


def check_rfid_flags(args) -> None:
    """Before any work: --inception-weights names the network (Inception), and neither goes with --no-rfid."""
    from .evaluate import check_inception_weights

    if args.rfid is False and (args.features or args.inception_weights):
        flag = "--features" if args.features else "--inception-weights"
        raise NextscaleError(f"{flag} is for rFID: drop --no-rfid")
    if args.features is None and args.inception_weights:
        args.features = "inception"
    check_inception_weights(args)


def rfid_network(args, device, data):
    """A network that must load (a file, --features digits or fashion, --inception-weights, --rfid), or a name the
    library resolves: "auto" (the data's own network, else Inception) or "inception". Inception so named is used
    where its weights are here; where not, rFID is skipped with a note."""
    from ..evaluation import load_network
    from ..evaluation.tokenizer import default_features

    if args.rfid is False:
        return None
    if args.features is None and not args.rfid:
        return "auto"
    features = args.features or default_features(data)
    if features != "inception" or args.inception_weights or args.rfid:
        return load_network(features, device=device, inception_weights=args.inception_weights)
    return "inception"
