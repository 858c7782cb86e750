"""`nextscale edit`: zero-shot in-/out-painting and class-conditional editing of one image or a folder."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import NextscaleError
from .common import (
    add_device_arg,
    add_model_args,
    add_sampler_args,
    add_seed_arg,
    check_classes,
    check_for_model,
    check_model_args,
    check_seed,
    fine_model,
    load_models,
    resolve_device,
    sampler_settings,
    writable_dir,
    writable_file,
)


def register(sub) -> None:
    p = sub.add_parser(
        "edit",
        help="zero-shot in-painting, out-painting and class-conditional editing",
        description="Repaints a region of each image with the model. Image i draws from "
        "--seed (i = 0, as the reference's g_seed) or a seed derived from it.",
    )
    add_model_args(p)
    p.add_argument("--image", required=True, help="an image, or a folder of images")
    p.add_argument("--mask", help="a mask image: white = the region to generate (any size)")
    p.add_argument("--box", help="the region to generate, y0,x0,y1,x1 in [0, 1]")
    p.add_argument("--outpaint", action="store_true", help="generate outside the region instead of inside")
    p.add_argument("--class", dest="classes", help="paint this class: an id or a name (default: unconditional)")
    p.add_argument(
        "--keep-scales",
        dest="keep_coarse_scales",
        type=int,
        default=0,
        help="force the input's first K scales everywhere",
    )
    p.add_argument(
        "--feather",
        type=float,
        help="paste into the original pixels with a soft edge this wide (pixels; default: no paste)",
    )
    p.add_argument("--out", required=True, help="output .png (a folder, with a folder of images)")
    add_sampler_args(p, speed=True)
    add_seed_arg(p)
    add_device_arg(p)
    p.set_defaults(func=run)


def parse_box(text: str):
    from ..editing import box_region

    try:
        box = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise NextscaleError(f"--box takes y0,x0,y1,x1 in [0, 1], got {text!r}") from None
    if len(box) != 4:
        raise NextscaleError(f"--box takes four numbers y0,x0,y1,x1, got {text!r}")
    box_region(box, 4)  # validates the range and order now, before any model loads
    return box


def image_jobs(image: Path, out: Path) -> list[tuple[Path, Path]]:
    from ..data.folders import IMAGE_EXTENSIONS, visible_entries

    if image.is_dir():
        entries = visible_entries(image)
        files = [Path(e.path) for e in entries if e.is_file() and Path(e.name).suffix.lower() in IMAGE_EXTENSIONS]
        if not files:
            raise NextscaleError(f"{image} holds no images")
        if out.resolve() == image.resolve():
            raise NextscaleError(f"--out {out} is the --image folder: the results would mix with the inputs")
        stems = [p.stem for p in files]
        twins = sorted({s for s in stems if stems.count(s) > 1})
        if twins:
            raise NextscaleError(
                f"{image} holds several images named {twins[0]}.* ({len(twins)} such name(s)): "
                f"their results would all be {out / (twins[0] + '.png')}"
            )
        return [(p, out / f"{p.stem}.png") for p in files]
    if not image.is_file():
        raise NextscaleError(f"{image}: no such file")
    return [(image, out)]


def run(args) -> None:
    from ..data.folders import MASK_BACKGROUND
    from ..editing import edit
    from ..editing.edit import check_edit_settings
    from ..editing.masks import keep_masks_for
    from ..files import claim_output_dir
    from ..sampling.outputs import load_image, save_png, to_uint8
    from ..seeding import batch_generator

    if (args.mask is None) == (args.box is None):
        raise NextscaleError("give exactly one of --mask PNG and --box y0,x0,y1,x1")
    mask = parse_box(args.box) if args.box else load_image(args.mask, MASK_BACKGROUND)
    settings = sampler_settings(args)
    seed = check_seed(args.seed)
    if args.keep_coarse_scales < 0:
        raise NextscaleError(f"--keep-scales must be ≥ 0, got {args.keep_coarse_scales}")
    if args.feather is not None and not (args.feather >= 0 and args.feather < float("inf")):
        raise NextscaleError(f"--feather must be a finite number of pixels ≥ 0, got {args.feather}")
    check_model_args(args)
    device = resolve_device(args.device)
    image, out = Path(args.image), Path(args.out)
    jobs = image_jobs(image, out)
    if image.is_dir():
        writable_dir(out, "--out")
    else:
        writable_file(out, "--out", (".png",))
    pictures = [load_image(src) for src, _ in jobs]  # every image must read before any work
    vae, var = load_models(args, device)
    label = None if args.classes is None else check_classes([args.classes], var)[0]
    check_for_model(settings, var)
    fine = fine_model(args, vae, var, device)
    mode = "outpaint" if args.outpaint else "inpaint"
    side = vae.config.resolution
    check_edit_settings(mode, args.keep_coarse_scales, args.feather, len(var.patch_nums), side)
    keep_masks_for(
        mask, mode, var.patch_nums, args.keep_coarse_scales
    )  # a mask that edits nothing fails before any work
    if image.is_dir():
        note = claim_output_dir(out, "edit", [dst.name for _, dst in jobs])
        if note:
            print(note)
    for i, ((src, dst), picture) in enumerate(zip(jobs, pictures)):
        if picture.size != (side, side):
            print(
                f"{src}: resized and centre-cropped from {picture.width}×{picture.height} to the model's {side}×{side}",
                file=sys.stderr,
            )
        result = edit(
            vae,
            var,
            picture,
            mask,
            mode=mode,
            labels=label,
            keep_coarse_scales=args.keep_coarse_scales,
            feather=args.feather,
            generator=batch_generator(seed, i, device),
            config=settings,
            **fine,
        )
        save_png(to_uint8(result.images)[0], dst)
        print(f"wrote {dst}")
