"""`nextscale bench`: sampling (and a training step) timed against the hardware's floor."""

from __future__ import annotations

from .. import registry
from ..errors import NextscaleError
from ..runtime import TRAIN_PRECISIONS
from .common import (
    add_device_arg,
    at_least,
    check_width_per_depth,
    parse_ints,
    resolve_device,
    writable_dir,
    writable_file,
)

ORDERS_LATENTS, ORDERS_BATCH_SIZES = "8,16", "1,64"  # bench --orders: the two latent sizes, batch 1 and a full batch


def register(sub) -> None:
    p = sub.add_parser("bench", help="time sampling (and a training step) against the hardware's floor")
    p.add_argument("--preset", default="var-d16", choices=list(registry.ARCHITECTURES), help="architecture")
    batch = "images per sample (with --train or --train-matrix: the global batch of a training step)"
    p.add_argument("--batch-size", type=int, default=4, help=batch)
    add_device_arg(p)
    p.add_argument(
        "--precision",
        choices=TRAIN_PRECISIONS,
        help="default: bf16 on GPU, fp32 on CPU (fp16: --train and --train-matrix only)",
    )
    p.add_argument("--compile", help="a torch.compile backend for the transformer step (e.g. inductor)")
    p.add_argument("--runs", type=int, default=3, help="timed runs (the median is reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs (or training steps) first")
    train_step = "also time --train's training step at this batch, in this process (0: skip)"
    p.add_argument("--train-batch-size", type=int, default=0, help=train_step)
    glibc_default = "measure with glibc's default of unmapping freed large blocks (see nextscale.runtime)"
    p.add_argument("--no-reuse-memory", action="store_true", help=glibc_default)
    p.add_argument("--json", help="also write the results here")
    load = "time loading instead: the preset's weights in both formats, each in a fresh process"
    p.add_argument("--load", action="store_true", help=load)
    p.add_argument("--scratch", default="outputs/bench-weights", help="with --load: weight files go in SCRATCH/PRESET")
    sweep = (
        "time each training-free speed-up (guidance off on the last scales, guidance-free, hand-off to a small "
        "model, per-scale top-k) on --preset shapes and measure its quality on the digits (1,000 samples), "
        "as one table"
    )
    p.add_argument("--sweep", action="store_true", help=sweep)
    p.add_argument("--fine-depth", type=int, default=8, help="with --sweep: the hand-off's small model's depth")
    orders = (
        "time sampling by next-scale prediction (VAR) against next-token prediction in raster order at the same size "
        "(--preset's blocks, or --depth's): forward passes, counted FLOPs and wall time per image, decoder included, "
        "at each --latents size and --batch-sizes batch"
    )
    p.add_argument("--orders", action="store_true", help=orders)
    p.add_argument(
        "--latents", default=ORDERS_LATENTS, help="with --orders: latent grid sizes (each ends a reference pyramid)"
    )
    p.add_argument("--batch-sizes", default=ORDERS_BATCH_SIZES, help="with --orders: the batches")
    t = p.add_argument_group("training (the trainer's own step on random tokens, in one process or under torchrun)")
    t.add_argument(
        "--train",
        action="store_true",
        help="time the training step instead, in this process or in every process of a torchrun job: "
        "tokens/s, the ratio to the FLOP floor, peak memory and parameter + gradient + optimizer "
        "memory per rank",
    )
    t.add_argument("--fsdp", action="store_true", help="with --train under torchrun: FSDP2 instead of DDP")
    t.add_argument(
        "--train-matrix",
        action="store_true",
        help="run --train for 1 process and for each larger --nprocs under DDP and FSDP2, each in fresh "
        "processes (torchrun --standalone, OMP_NUM_THREADS = cores / processes), and print one "
        "table",
    )
    t.add_argument("--nprocs", default="1,2", help="with --train-matrix: the process counts")
    t.add_argument(
        "--bench-scales",
        help="with --train or --train-matrix: these scales instead of the preset's (e.g. 1,2,3,4: fewer "
        "tokens; the parameters change only by the position embedding)",
    )
    t.add_argument("--train-steps", type=int, default=3, help="timed training steps (the median is reported)")
    recompute = "with --train or --train-matrix: recompute each block's activations in the backward"
    t.add_argument("--grad-checkpointing", action="store_true", help=recompute)
    t.add_argument(
        "--trainable",
        default="all",
        help="with --train or --train-matrix: what learns, as train's --trainable (all, groups, lora:RANK)",
    )
    depth = "with --train or --train-matrix: a transformer of this depth by the width rule, as `scaling run` builds "
    t.add_argument("--depth", type=int, help=depth + "its sizes, on --preset's tokenizer shapes")
    width = "with --depth: width = this × depth"
    t.add_argument("--width-per-depth", type=int, default=registry.RELEASED_WIDTH_PER_DEPTH, help=width)
    p.set_defaults(func=run)


def run(args) -> None:
    from ..files import atomic_write_text
    from ..runtime import check_compile_backend

    at_least(args.batch_size, 1, "--batch-size")
    at_least(args.runs, 1, "--runs")
    at_least(args.warmup, 0, "--warmup")
    at_least(args.train_batch_size, 0, "--train-batch-size")
    at_least(args.train_steps, 1, "--train-steps")
    if args.depth is not None:
        at_least(args.depth, 1, "--depth")
    at_least(args.width_per_depth, 1, "--width-per-depth")
    check_compile_backend(args.compile)
    training = args.train or args.train_matrix
    chosen = [
        flag
        for flag, on in (
            ("--train", args.train),
            ("--train-matrix", args.train_matrix),
            ("--load", args.load),
            ("--sweep", args.sweep),
            ("--orders", args.orders),
        )
        if on
    ]
    if len(chosen) > 1:
        raise NextscaleError(
            f"choose one of --train, --train-matrix, --load, --sweep and --orders, not {' and '.join(chosen)}"
        )
    if not args.orders:
        for flag, given in (
            ("--latents", args.latents != ORDERS_LATENTS),
            ("--batch-sizes", args.batch_sizes != ORDERS_BATCH_SIZES),
        ):
            if given:
                raise NextscaleError(f"{flag} applies to --orders")
    at_least(args.fine_depth, 1, "--fine-depth")
    if args.fsdp and not args.train:
        raise NextscaleError("--fsdp applies to --train (--train-matrix runs DDP and FSDP itself)")
    if not training:
        sizes_apply = "--train, --train-matrix and --orders" if args.orders else "--train and --train-matrix"
        for flag, given in (
            ("--bench-scales", args.bench_scales is not None),
            ("--grad-checkpointing", args.grad_checkpointing),
            ("--nprocs", args.nprocs != "1,2"),
            ("--trainable", args.trainable != "all"),
            ("--depth", args.depth is not None and not args.orders),
            ("--width-per-depth", args.width_per_depth != registry.RELEASED_WIDTH_PER_DEPTH and not args.orders),
        ):
            if given:
                raise NextscaleError(f"{flag} applies to {sizes_apply}")
    elif args.compile:
        raise NextscaleError("--compile applies to sampling: --train times the eager training step")
    elif args.train_batch_size:
        raise NextscaleError("--train-batch-size applies to sampling: --train takes the global batch from --batch-size")
    if args.precision == "fp16" and not training:
        raise NextscaleError("--precision fp16 applies to --train and --train-matrix: sampling runs fp32 or bf16")
    device = resolve_device(args.device)
    writable_file(args.json, "--json", (".json",))
    if training:
        return run_training(args, device)
    if args.sweep:
        return run_sweep(args, device)
    if args.orders:
        return run_orders(args, device)
    if args.load:
        from ..bench import loading

        writable_dir(args.scratch, "--scratch")
        results = loading.bench_loading(args.preset, args.scratch, str(device))
        print(loading.table(results))
        if args.json:
            atomic_write_text(args.json, loading.to_json(results) + "\n")
        return
    from ..bench import bench_sampling

    result = bench_sampling(
        args.preset,
        batch_size=args.batch_size,
        device=device,
        precision=args.precision,
        compile=args.compile,
        runs=args.runs,
        warmup=args.warmup,
        train_batch_size=args.train_batch_size,
        reuse_memory=not args.no_reuse_memory,
    )
    print(result.table())
    if args.json:
        atomic_write_text(args.json, result.to_json() + "\n")


def run_sweep(args, device) -> None:
    import json

    from ..bench import sweep
    from ..files import atomic_write_text

    precision = args.precision or ("bf16" if device.type == "cuda" else "fp32")
    rows = sweep.sweep(
        args.preset,
        args.fine_depth,
        batch=args.batch_size,
        runs=args.runs,
        warmup=args.warmup,
        precision=precision,
        device=device,
    )
    print(sweep.table(rows, args.preset, args.batch_size, precision, device.type))
    if args.json:
        record = {
            "preset": args.preset,
            "batch_size": args.batch_size,
            "precision": precision,
            "device": str(device),
            "rows": sweep.as_dicts(rows),
        }
        atomic_write_text(args.json, json.dumps(record, indent=2) + "\n")


def run_orders(args, device) -> None:
    import json
    import sys

    from ..bench import orders
    from ..files import atomic_write_text

    if args.precision not in (None, "fp32") or args.compile:
        raise NextscaleError("--orders times the eager fp32 sampler: leave out --precision and --compile")
    check_width_per_depth(args.depth, args.width_per_depth)
    latents = parse_ints(args.latents, "--latents", minimum=1)
    batches = parse_ints(args.batch_sizes, "--batch-sizes", minimum=1)
    for latent in latents:
        orders.pyramid(latent)  # refused before minutes of timing
    result = orders.bench_orders(
        args.preset,
        latents=latents,
        batch_sizes=batches,
        depth=args.depth,
        width_per_depth=args.width_per_depth,
        runs=args.runs,
        warmup=args.warmup,
        device=device,
        log=lambda m: print(m, file=sys.stderr, flush=True),
    )
    print(orders.table(result))
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")


def run_training(args, device) -> None:
    import json
    import sys

    from ..bench import training
    from ..files import atomic_write_text

    scales = training.parse_scales(args.bench_scales)
    settings = dict(
        preset=args.preset,
        batch_size=args.batch_size,
        precision=args.precision,
        steps=args.train_steps,
        warmup=args.warmup,
        patch_nums=scales,
        grad_checkpointing=args.grad_checkpointing,
        trainable=args.trainable,
        depth=args.depth,
        width_per_depth=args.width_per_depth,
    )
    if args.train_matrix:
        nprocs = parse_ints(args.nprocs, "--nprocs", minimum=1)
        result = training.bench_training_matrix(
            device=str(device),
            nprocs=nprocs,
            out_json=args.json,
            log=lambda m: print(m, file=sys.stderr, flush=True),
            **settings,
        )
        print(result["table"])
        return
    records = training.bench_train_step(device=device, fsdp=args.fsdp, **settings)
    if _is_main():  # every rank returns every record; one prints them
        print(training.run_table(records))
        if args.json:
            atomic_write_text(args.json, json.dumps({"ranks": records}, indent=2) + "\n")


def _is_main() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"
