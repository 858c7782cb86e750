"""`nextscale sample`: class-conditional samples as PNGs, a grid and an ADM-format `samples.npz`; with
`--per-class`, the evaluation protocol's N per class, split over torchrun's processes and resumable."""

from __future__ import annotations

from ..errors import NextscaleError
from .common import (
    add_device_arg,
    add_model_args,
    add_sampler_args,
    add_seed_arg,
    at_least,
    check_classes,
    check_for_model,
    check_model_args,
    check_seed,
    fine_model,
    load_models,
    parse_classes,
    resolve_device,
    sampler_settings,
    writable_dir,
)

SHARD_SIZE = 256


def register(sub) -> None:
    p = sub.add_parser(
        "sample",
        help="class-conditional samples as PNGs, a grid and an ADM-format samples.npz",
        description="Draws images in batches. With one batch, --seed S draws exactly what the "
        "reference's sampler draws with g_seed=S; later batches use seeds derived "
        "from (S, batch). With --per-class N (the evaluation protocol), image i of class "
        "c draws from its own seed (S, c, i), so 1 or N processes (torchrun "
        "--nproc_per_node N -m nextscale sample …) draw the same images; a stopped run "
        "resumes when rerun, and samples.npz comes out shuffled.",
    )
    add_model_args(p)
    classes = (
        "class ids or names (the model's, e.g. its training folders'), space- or comma-separated; id:N / name:N "
        "where a number is also a class's name (default: random classes, drawn by the sampler; with --per-class: "
        "every class)"
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument("--class", dest="classes", nargs="+", metavar="C", help=classes)
    which.add_argument(
        "--unconditional",
        action="store_true",
        help="draw from the null class (no class; guidance then changes nothing)",
    )
    p.add_argument("--n", type=int, help="images per listed class, or in total without --class (default 1)")
    p.add_argument(
        "--per-class",
        type=int,
        metavar="N",
        help="N images of every class (or of each --class) for evaluation: sharded, resumable, shuffled",
    )
    p.add_argument("--batch-size", type=int, default=16, help="images per forward pass")
    shards = "with --per-class: images per shard file, the unit a process draws and a rerun resumes from"
    p.add_argument("--shard-size", type=int, default=SHARD_SIZE, help=shards)
    p.add_argument(
        "--out",
        default="outputs/samples",
        help="output directory (what an earlier run of nextscale "
        "wrote there is replaced; with --per-class, a run "
        "there with the same settings is resumed)",
    )
    png = p.add_mutually_exclusive_group()
    png.add_argument("--no-png", action="store_true", help="write samples.npz and grid.png only")
    png.add_argument(
        "--png",
        action="store_true",
        help="with --per-class: also write png/NNNNNN.png in the order of samples.npz (default: none)",
    )
    rejection = p.add_argument_group("rejection sampling (with --per-class)")
    classifier = "a torch.export .pt2 (or TorchScript .pt) classifier: uint8 N×3×H×W images → N×C logits"
    rejection.add_argument("--reject", metavar="CLASSIFIER", help=classifier)
    rejection.add_argument(
        "--keep-top",
        type=float,
        metavar="F",
        help="draw N/F candidates per class and keep the N the classifier is most sure of",
    )
    add_sampler_args(p, speed=True)
    add_seed_arg(p, "random seed (batch 0 uses it as is: the reference's g_seed)")
    add_device_arg(p)
    p.set_defaults(func=run)


def run(args) -> None:
    if args.per_class is not None:
        return run_per_class(args)
    per_class_only = {
        "--reject": args.reject,
        "--keep-top": args.keep_top is not None,
        "--png": args.png,
        "--shard-size": args.shard_size != SHARD_SIZE,
    }
    stray = [flag for flag, given in per_class_only.items() if given]
    if stray:
        raise NextscaleError(f"{stray[0]} goes with --per-class N")
    from ..distributed import launched_by_torchrun
    from ..sampling import RepeatedClasses, sample_many

    if launched_by_torchrun():
        raise NextscaleError("under torchrun, sample with --per-class N (the work splits over the processes)")
    args.n = 1 if args.n is None else args.n
    at_least(args.n, 1, "--n")
    settings, seed, classes = common_checks(args)
    device = resolve_device(args.device)
    vae, var = load_models(args, device)
    classes = check_classes(classes, var)
    check_for_model(settings, var)
    fine = fine_model(args, vae, var, device)
    labels = RepeatedClasses(classes, args.n) if classes else None
    if args.unconditional:
        labels = RepeatedClasses([var.num_classes], args.n)  # the null class's id is the number of classes
    run_ = sample_many(
        vae,
        var,
        labels,
        count=args.n,
        batch_size=args.batch_size,
        seed=seed,
        out_dir=args.out,
        pngs=not args.no_png,
        config=settings,
        **fine,
    )
    if run_.note:
        print(run_.note)
    pngs = "" if args.no_png else "PNGs, "
    print(f"wrote {len(run_.labels)} images ({pngs}grid.png and samples.npz) to {run_.out_dir}")


def common_checks(args) -> tuple[dict, int, list[str] | None]:
    """What both modes check before any work: (sampler settings, seed, classes)."""
    at_least(args.batch_size, 1, "--batch-size")
    settings = sampler_settings(args)
    seed = check_seed(args.seed)
    classes = parse_classes(args.classes)
    check_model_args(args)
    writable_dir(args.out, "--out")
    return settings, seed, classes


def run_per_class(args) -> None:
    if args.unconditional:
        raise NextscaleError("--per-class draws every class (or each --class): drop --unconditional")
    if args.n is not None:
        raise NextscaleError("give --n or --per-class, not both")
    if args.no_png:
        raise NextscaleError("--per-class writes no PNGs unless --png is given: drop --no-png")
    if (args.reject is None) != (args.keep_top is None):
        raise NextscaleError("rejection sampling needs both --reject CLASSIFIER and --keep-top F")
    from ..sampling.per_class import MIN_KEEP_TOP

    if args.keep_top is not None and not MIN_KEEP_TOP <= args.keep_top <= 1:
        raise NextscaleError(f"--keep-top must be a fraction in [{MIN_KEEP_TOP}, 1], got {args.keep_top}")
    at_least(args.per_class, 1, "--per-class")
    at_least(args.shard_size, 1, "--shard-size")
    settings, seed, classes = common_checks(args)
    from ..distributed import setup, teardown
    from ..sampling import sample_per_class

    dist, device = setup(resolve_device(args.device))
    finished = False
    try:
        vae, var = load_models(args, device)
        classes = check_classes(classes, var)
        check_for_model(settings, var)
        fine = fine_model(args, vae, var, device)
        scorer, record = None, {"model": args.model} if args.model else {"vae": args.vae, "var": args.var}
        if args.reject:
            from ..evaluation.features import ExportedNetwork

            classifier = ExportedNetwork(args.reject, device, what="--reject")
            scorer = lambda images: classifier(images)[1]  # noqa: E731 (its logits)
            record["classifier"] = {"file": args.reject, "sha256": classifier.sha256}
        out = sample_per_class(
            vae,
            var,
            args.out,
            per_class=args.per_class,
            classes=classes,
            seed=seed,
            batch_size=args.batch_size,
            shard_size=args.shard_size,
            scorer=scorer,
            keep_top=args.keep_top,
            pngs=args.png,
            model=record,
            dist=dist,
            config=settings,
            **fine,
        )
        if dist.is_main:
            import json

            record = json.loads(out.with_name("samples.json").read_text())
            print(
                f"{out}: {record['count']} images in shuffled order, from {record['candidates_drawn']} drawn; "
                f"settings in {out.with_name('samples.json')}"
            )
        finished = True
    finally:
        teardown(after_error=not finished)
