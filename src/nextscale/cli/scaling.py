"""`nextscale scaling run` (a sweep of transformer depths: ordinary `train` runs in SWEEP/d{depth}) and
`nextscale scaling fit SWEEP` (power laws, `scaling.json`, `scaling.png`)."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import NextscaleError
from .common import parse_ints


def register(sub) -> None:
    from .train import add_var_args

    p = sub.add_parser("scaling", help="scaling laws: sweep transformer sizes, fit power laws, draw Fig. 5 and 6")
    commands = p.add_subparsers(
        dest="scaling_command", required=True, metavar="{run,fit}", help="run: train the sizes; fit: the laws"
    )
    run = commands.add_parser("run", help="train one transformer per depth on one tokenizer and one dataset")
    run.add_argument("--depths", required=True, help="comma-separated depths, e.g. 1,2,3,4,6")
    run.add_argument("--out", required=True, help="the sweep: each depth's run goes in OUT/d{depth}")
    run.add_argument("--head-dim", type=int, help="channels per head (default: heads = depth, as in the paper)")
    add_var_args(run, sweep=True)
    run.set_defaults(func=run_sweep, command="scaling")
    fit = commands.add_parser("fit", help="fit the sweep's power laws: SWEEP/scaling.json and SWEEP/scaling.png")
    fit.add_argument("sweep", help="the folder `scaling run --out` wrote")
    fit.add_argument("--irreducible", type=float, help="the irreducible term Q∞ of the second fit (default: fitted)")
    fit.add_argument("--no-plot", action="store_true", help="write scaling.json only")
    fit.set_defaults(func=run_fit, command="scaling")


def parse_depths(text: str) -> list[int]:
    depths = parse_ints(text, "--depths")
    if min(depths) < 1 or len(set(depths)) != len(depths):
        raise NextscaleError(f"--depths needs distinct positive depths, got {text!r}")
    return sorted(depths)


def run_sweep(args) -> None:
    from copy import copy

    from ..training.checkpoint import latest_checkpoint, read_record
    from ..training.distributed import teardown
    from .train import train_var_from_args

    depths = parse_depths(args.depths)
    if args.width_per_depth < 1 or (args.head_dim is not None and args.head_dim < 1):
        raise NextscaleError("--width-per-depth and --head-dim must be positive")
    for depth in depths:
        if args.head_dim is not None and (args.width_per_depth * depth) % args.head_dim:
            raise NextscaleError(f"--head-dim {args.head_dim} does not divide depth {depth}'s width")
    out = Path(args.out)
    for depth in depths:
        size = copy(args)
        size.run_dir = out / f"d{depth}"
        size.out = None
        size.depth, size.preset, size.init, size.class_map = depth, None, None, None
        size.count_flops = True
        ckpt = latest_checkpoint(size.run_dir) if size.run_dir.is_dir() else None
        size.resume = ckpt is not None
        if ckpt is not None and (size.run_dir / "model" / "var").is_dir():
            done = read_record(ckpt)
            print(f"depth {depth}: at step {done['step']}, checking its settings", file=sys.stderr, flush=True)
        elif not args.quiet:
            print(f"depth {depth}: {'resuming' if size.resume else 'training'}", file=sys.stderr, flush=True)
        dist, model = train_var_from_args(size)
        if dist.is_main:
            print(f"depth {depth}: model in {model}")
    teardown()


def run_fit(args) -> None:
    from ..scaling.results import fit_sweep, table

    result = fit_sweep(args.sweep, args.irreducible)
    print(table(result))
    print(f"wrote {Path(args.sweep) / 'scaling.json'}")
    if not args.no_plot:
        from ..scaling.plots import draw

        print(f"wrote {draw(result, Path(args.sweep) / 'scaling.png')}")
