"""`nextscale edit`: zero-shot in-/out-painting and class-conditional editing of one image or a folder."""

from __future__ import annotations

import sys
from pathlib import Path

from .errors import NextscaleError
from .images import load_image


def parse_box(text: str):
    try:
        box = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise NextscaleError(f"--box takes y0,x0,y1,x1 in [0, 1], got {text!r}") from None
    if len(box) != 4:
        raise NextscaleError(f"--box takes four numbers y0,x0,y1,x1, got {text!r}")
    from .editing import box_region

    box_region(box, 4)  # validates the range and order now, before any model loads
    return box


def image_jobs(image: Path, out: Path) -> list[tuple[Path, Path]]:
    from .data import IMAGE_EXTENSIONS

    if image.is_dir():
        files = sorted(p for p in image.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise NextscaleError(f"{image} holds no images")
        return [(p, out / f"{p.stem}.png") for p in files]
    if not image.is_file():
        raise NextscaleError(f"{image}: no such file")
    return [(image, out)]


def cmd_edit(args) -> None:
    import torch

    from .cli import check_classes, load_models, sampling_settings
    from .editing import edit, keep_masks_for
    from .images import save_png, to_uint8

    if (args.mask is None) == (args.box is None):
        raise NextscaleError("give exactly one of --mask PNG and --box y0,x0,y1,x1")
    mask = parse_box(args.box) if args.box else load_image(args.mask)
    settings = sampling_settings(args)
    jobs = image_jobs(Path(args.image), Path(args.out))
    images = [(src, dst, load_image(src)) for src, dst in jobs]  # every image must read before any work
    vae, var = load_models(args)
    if args.classes is not None:
        check_classes([args.classes], var.num_classes)
    mode = "outpaint" if args.outpaint else "inpaint"
    keep_masks_for(mask, mode, var.patch_nums, args.keep_scales)  # a mask that edits nothing fails before any work
    for i, (src, dst, picture) in enumerate(images):
        if picture.size != (vae.config.resolution,) * 2:
            print(f"{src}: resized and centre-cropped from {picture.width}×{picture.height} to the model's "
                  f"{vae.config.resolution}×{vae.config.resolution}", file=sys.stderr)  # fmt: skip
        result = edit(var, vae, picture, mask, mode=mode,
                      labels=args.classes, keep_coarse_scales=args.keep_scales, feather=args.feather,
                      generator=torch.Generator(device=var.head.weight.device).manual_seed(args.seed + i),
                      **settings)  # fmt: skip
        dst.parent.mkdir(parents=True, exist_ok=True)
        save_png(to_uint8(result.images)[0], dst)
        print(f"wrote {dst}")


def register(sub) -> None:
    from .cli import add_model_args, add_sampling_args

    p = sub.add_parser("edit", help="zero-shot in-painting, out-painting and class-conditional editing")
    add_model_args(p)
    p.add_argument("--image", required=True, help="an image, or a folder of images")
    p.add_argument("--mask", help="a mask image: white = the region to generate (any size)")
    p.add_argument("--box", help="the region to generate, y0,x0,y1,x1 in [0, 1]")
    p.add_argument("--outpaint", action="store_true", help="generate outside the region instead of inside")
    p.add_argument("--class", dest="classes", type=int, help="paint this class (default: unconditional)")
    p.add_argument("--keep-scales", type=int, default=0, help="force the input's first K scales everywhere")
    p.add_argument("--feather", type=float, help="paste into the original pixels with a soft edge (pixels)")
    p.add_argument("--out", required=True, help="output PNG (or folder, with a folder of images)")
    add_sampling_args(p, cfg=3.0, top_k=900, top_p=0.95)
    p.set_defaults(func=cmd_edit)
