"""`nextscale bench`: sampling (and a training step) timed against the hardware's floor."""

from __future__ import annotations

from .. import registry
from ..runtime import PRECISIONS
from .common import add_device_arg, at_least, resolve_device, writable_dir, writable_file


def register(sub) -> None:
    p = sub.add_parser("bench", help="time sampling (and a training step) against the hardware's floor")
    p.add_argument("--preset", default="var-d16", choices=list(registry.ARCHITECTURES), help="architecture")
    p.add_argument("--batch-size", type=int, default=4, help="images per sample")
    add_device_arg(p)
    p.add_argument("--precision", choices=PRECISIONS, help="default: bf16 on GPU, fp32 on CPU")
    p.add_argument("--compile", help="a torch.compile backend for the transformer step (e.g. inductor)")
    p.add_argument("--runs", type=int, default=3, help="timed runs (the median is reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs first")
    p.add_argument("--train-batch-size", type=int, default=0, help="also time one training step (0: skip)")
    glibc_default = "measure with glibc's default of unmapping freed large blocks (see nextscale.runtime)"
    p.add_argument("--no-reuse-memory", action="store_true", help=glibc_default)
    p.add_argument("--json", help="also write the results here")
    load = "time loading instead: the preset's weights in both formats, each in a fresh process"
    p.add_argument("--load", action="store_true", help=load)
    p.add_argument("--scratch", default="outputs/bench-weights", help="with --load: weight files go in SCRATCH/PRESET")
    p.set_defaults(func=run)


def run(args) -> None:
    from ..bench import bench_sampling
    from ..files import atomic_write_text
    from ..runtime import check_compile_backend

    at_least(args.batch_size, 1, "--batch-size")
    at_least(args.runs, 1, "--runs")
    at_least(args.warmup, 0, "--warmup")
    at_least(args.train_batch_size, 0, "--train-batch-size")
    check_compile_backend(args.compile)
    device = resolve_device(args.device)
    writable_file(args.json, "--json", (".json",))
    if args.load:
        from ..bench import loading

        writable_dir(args.scratch, "--scratch")
        results = loading.bench_loading(args.preset, args.scratch, str(device))
        print(loading.table(results))
        if args.json:
            atomic_write_text(args.json, loading.to_json(results) + "\n")
        return
    result = bench_sampling(args.preset, batch_size=args.batch_size, device=device, precision=args.precision,
                            compile=args.compile, runs=args.runs, warmup=args.warmup,
                            train_batch_size=args.train_batch_size, reuse_memory=not args.no_reuse_memory)  # fmt: skip
    print(result.table())
    if args.json:
        atomic_write_text(args.json, result.to_json() + "\n")
