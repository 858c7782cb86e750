"""The `nextscale` command: a thin shell over the library; every command is a call a user could make."""

from __future__ import annotations

import argparse
import sys

from .errors import NextscaleError
from .runtime import reuse_freed_memory


def pick_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise NextscaleError(f"--device {name}: CUDA is not available on this machine")
    return torch.device(name)


def parse_classes(values: list[str] | None) -> list[int] | None:
    if not values:
        return None
    out = []
    for v in values:
        for part in v.split(","):
            part = part.strip()
            if part:
                try:
                    out.append(int(part))
                except ValueError:
                    raise NextscaleError(f"--class {part!r} is not an integer class id") from None
    return out


def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model (either --model, or --vae and --var)")
    g.add_argument("--model", help="a name (digits, var-d16 … var-d36) or a directory with vae/ and var/")
    g.add_argument("--vae", help="a tokenizer: a reference .pth file or a saved directory")
    g.add_argument("--var", help="a transformer: a reference .pth (or ar-ckpt-*.pth) file or a saved directory")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 … (default: auto)")


def add_sampling_args(p: argparse.ArgumentParser, cfg: float = 1.5, top_k: int = 900, top_p: float = 0.96) -> None:
    p.add_argument("--cfg", type=float, default=cfg, help=f"guidance scale (default {cfg})")
    p.add_argument(
        "--cfg-schedule",
        choices=["linear", "constant"],
        default="linear",
        help="linear: 0 at the 1x1 scale up to --cfg at the last (the reference); constant: --cfg",
    )
    p.add_argument("--top-k", type=int, default=top_k, help=f"0 disables (default {top_k})")
    p.add_argument("--top-p", type=float, default=top_p, help=f"0 disables (default {top_p})")
    p.add_argument("--more-smooth", action="store_true", help="Gumbel-softmax embeddings (looks, not FID)")
    p.add_argument("--seed", type=int, default=0)


def sampling_settings(args) -> dict:
    if not 0.0 <= args.top_p <= 1.0:
        raise NextscaleError(f"--top-p must lie in [0, 1], got {args.top_p}")
    if args.top_k < 0:
        raise NextscaleError(f"--top-k must be ≥ 0, got {args.top_k}")
    return dict(
        cfg=args.cfg,
        cfg_schedule=args.cfg_schedule,
        top_k=args.top_k,
        top_p=args.top_p,
        more_smooth=args.more_smooth,
    )


def load_models(args):
    from .checkpoint import load_model, load_pair

    device = pick_device(args.device)
    if args.model and (args.vae or args.var):
        raise NextscaleError("give either --model or --vae with --var, not both")
    if args.model:
        return load_model(args.model, device=device)
    if not (args.vae and args.var):
        raise NextscaleError("name a model: --model NAME|DIR, or both --vae PATH and --var PATH")
    return load_pair(args.vae, args.var, device=device)


def check_classes(classes: list[int] | None, num_classes: int) -> None:
    for c in classes or []:
        if not 0 <= c < num_classes:
            raise NextscaleError(f"--class {c} is out of range: this model has classes 0..{num_classes - 1}")


def cmd_sample(args) -> None:
    import random

    from .generate import sample_many

    if args.n < 1:
        raise NextscaleError(f"--n must be at least 1, got {args.n}")
    if args.batch_size < 1:
        raise NextscaleError(f"--batch-size must be at least 1, got {args.batch_size}")
    settings = sampling_settings(args)
    classes = parse_classes(args.classes)
    vae, var = load_models(args)
    check_classes(classes, var.num_classes)
    if classes:
        labels = [c for c in classes for _ in range(args.n)]
    else:
        rng = random.Random(args.seed)
        labels = [rng.randrange(var.num_classes) for _ in range(args.n)]
    run = sample_many(vae, var, labels, batch_size=args.batch_size, seed=args.seed, out_dir=args.out, **settings)
    print(f"wrote {len(run.labels)} images, grid.png and samples.npz to {run.out_dir}")


def cmd_demo(args) -> None:
    import time

    from .demo import run_demo

    started = time.time()
    model = "digits"
    if args.train:
        from .recipes import train_digits_model

        model = str(train_digits_model(args.model_out, run_dir=args.run_dir, device=pick_device(args.device)))
        print(f"trained both stages into {model}")
    path = run_demo(args.out, model=model, seed=args.seed, device=pick_device(args.device))
    print(f"wrote {path} in {time.time() - started:.1f} s")


def cmd_eval(args) -> None:
    import json

    from .evaluation import evaluate_digit_edits, evaluate_digits

    if args.preset != "digits":
        raise NextscaleError(f"--preset {args.preset}: only the digits evaluation exists so far")
    if args.n_per_class < 2:
        raise NextscaleError(f"--n-per-class must be at least 2, got {args.n_per_class}")
    if not (args.model or args.vae or args.var):
        args.model = "digits"
    vae, var = load_models(args)
    report = evaluate_digits(vae, var, n_per_class=args.n_per_class, cfg=args.cfg, seed=args.seed,
                             top_k=args.top_k, top_p=args.top_p, cfg_schedule=args.cfg_schedule)  # fmt: skip
    print(report.summary())
    record = report.as_dict()
    if not args.skip_edits:
        edits = evaluate_digit_edits(vae, var, cfg=args.edit_cfg, seed=args.seed, top_k=args.top_k,
                                     top_p=args.top_p, cfg_schedule=args.cfg_schedule)  # fmt: skip
        print(edits.summary())
        record["edits"] = vars(edits)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(record, fh, indent=2)


def cmd_bench(args) -> None:
    from .bench import bench_sampling
    from .presets import PRESETS

    if args.preset not in PRESETS:
        raise NextscaleError(f"unknown preset {args.preset!r}; choose from {', '.join(PRESETS)}")
    for name in ("batch_size", "runs"):
        if getattr(args, name) < 1:
            raise NextscaleError(f"--{name.replace('_', '-')} must be at least 1")
    result = bench_sampling(args.preset, batch_size=args.batch_size, device=pick_device(args.device),
                            precision=args.precision, compile=args.compile, runs=args.runs, warmup=args.warmup,
                            train_batch_size=args.train_batch_size,
                            reuse_memory=not args.no_reuse_memory)  # fmt: skip
    print(result.table())
    if args.json:
        with open(args.json, "w") as fh:
            fh.write(result.to_json() + "\n")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nextscale", description="VAR: next-scale prediction image generation")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("sample", help="class-conditional samples as PNGs, a grid and an ADM-format samples.npz")
    add_model_args(p)
    p.add_argument(
        "--class",
        dest="classes",
        nargs="+",
        metavar="C",
        help="class ids (space- or comma-separated); default: random classes",
    )
    p.add_argument("--n", type=int, default=1, help="images per listed class, or in total without --class")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--out", default="outputs/samples", help="output directory (default outputs/samples)")
    add_sampling_args(p)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("demo", help="the built-in digits model in one picture (outputs/demo.png)")
    p.add_argument("--out", default="outputs/demo.png")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train", action="store_true", help="first retrain both stages from scratch (fixed seeds)")
    p.add_argument("--run-dir", default="runs/demo", help="with --train: checkpoints go here")
    p.add_argument("--model-out", default="outputs/digits-model", help="with --train: the trained model")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("eval", help="sample quality judged by an independent classifier (digits)")
    p.add_argument("--preset", default="digits")
    add_model_args(p)
    p.add_argument("--n-per-class", type=int, default=100)
    p.add_argument("--json", help="also write the numbers here")
    p.add_argument("--skip-edits", action="store_true", help="skip the centre-editing measurement")
    p.add_argument("--edit-cfg", type=float, default=3.0, help="guidance for the editing measurement (default 3)")
    add_sampling_args(p, cfg=1.5, top_k=0, top_p=0.0)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("bench", help="time sampling (and a training step) against the hardware's floor")
    p.add_argument("--preset", default="var-d16")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", choices=["fp32", "bf16"], help="default: bf16 on GPU, fp32 on CPU")
    p.add_argument("--compile", help="a torch.compile backend for the transformer step (e.g. inductor)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--train-batch-size", type=int, default=0, help="also time one training step (0: skip)")
    p.add_argument(
        "--no-reuse-memory",
        action="store_true",
        help="measure with glibc's default of unmapping freed large blocks (see nextscale.runtime)",
    )
    p.add_argument("--json", help="also write the results here")
    p.set_defaults(func=cmd_bench)

    from . import cli_edit, cli_train

    cli_train.register(sub)
    cli_edit.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not getattr(args, "no_reuse_memory", False):
        reuse_freed_memory()
    try:
        args.func(args)
    except NextscaleError as e:
        print(f"nextscale {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"nextscale {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
