"""`nextscale sample`: class-conditional samples as PNGs, a grid and an ADM-format `samples.npz`."""

from __future__ import annotations

from .common import (
    add_device_arg,
    add_model_args,
    add_sampler_args,
    add_seed_arg,
    at_least,
    check_classes,
    check_model_args,
    check_seed,
    load_models,
    parse_classes,
    resolve_device,
    sampler_settings,
    writable_dir,
)


def register(sub) -> None:
    p = sub.add_parser("sample", help="class-conditional samples as PNGs, a grid and an ADM-format samples.npz",
                       description="Draws images in batches. With one batch, --seed S draws exactly what the "
                                   "reference's sampler draws with g_seed=S; later batches use seeds derived "
                                   "from (S, batch).")  # fmt: skip
    add_model_args(p)
    classes = "class ids, space- or comma-separated (default: random classes, drawn by the sampler)"
    p.add_argument("--class", dest="classes", nargs="+", metavar="C", help=classes)
    p.add_argument("--n", type=int, default=1, help="images per listed class, or in total without --class")
    p.add_argument("--batch-size", type=int, default=16, help="images per forward pass")
    p.add_argument("--out", default="outputs/samples", help="output directory (what an earlier run of nextscale "
                                                             "wrote there is replaced)")  # fmt: skip
    p.add_argument("--no-png", action="store_true", help="write samples.npz and grid.png only")
    add_sampler_args(p)
    add_seed_arg(p, "random seed (batch 0 uses it as is: the reference's g_seed)")
    add_device_arg(p)
    p.set_defaults(func=run)


def run(args) -> None:
    from ..sampling import RepeatedClasses, sample_many

    at_least(args.n, 1, "--n")
    at_least(args.batch_size, 1, "--batch-size")
    settings = sampler_settings(args)
    seed = check_seed(args.seed)
    classes = parse_classes(args.classes)
    check_model_args(args)
    device = resolve_device(args.device)
    writable_dir(args.out, "--out")
    vae, var = load_models(args, device)
    check_classes(classes, var.num_classes)
    labels = RepeatedClasses(classes, args.n) if classes else None
    run_ = sample_many(vae, var, labels, count=args.n, batch_size=args.batch_size, seed=seed, out_dir=args.out,
                       pngs=not args.no_png, **settings)  # fmt: skip
    if run_.note:
        print(run_.note)
    pngs = "" if args.no_png else "PNGs, "
    print(f"wrote {len(run_.labels)} images ({pngs}grid.png and samples.npz) to {run_.out_dir}")
