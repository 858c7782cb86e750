"""`nextscale demo`: the built-in models in one picture (outputs/demo.png)."""

from __future__ import annotations

import time

from ..errors import NextscaleError
from .common import add_device_arg, add_seed_arg, check_seed, resolve_device, writable_dir, writable_file


def register(sub) -> None:
    p = sub.add_parser("demo", help="the built-in models in one picture (outputs/demo.png)")
    p.add_argument("--out", default="outputs/demo.png", help="the picture (.png)")
    add_seed_arg(p)
    p.add_argument(
        "--train",
        action="store_true",
        help="first retrain both stages of the digits model from scratch (fixed seeds), and show it",
    )
    p.add_argument("--run-dir", default="runs/demo", help="with --train: checkpoints go here (must hold no run)")
    p.add_argument("--model-out", default="outputs/digits-model", help="with --train: the trained model")
    add_device_arg(p, default="cpu")
    p.set_defaults(func=run)


def run(args) -> None:
    from ..demo import DEMO_MODELS, run_demo

    started = time.time()
    seed = check_seed(args.seed)
    device = resolve_device(args.device)
    writable_file(args.out, "--out", (".png",))
    models = list(DEMO_MODELS)
    if args.train:
        from pathlib import Path

        from ..training import train_builtin_model
        from ..training.common import check_run_dir

        for part in ("tokenizer", "var"):
            try:
                check_run_dir(Path(args.run_dir) / part, resume=False)
            except NextscaleError:
                raise NextscaleError(f"{Path(args.run_dir) / part} already holds a run: pick a new --run-dir") from None
        writable_dir(args.run_dir, "--run-dir")
        writable_dir(args.model_out, "--model-out")
        trained = str(train_builtin_model("digits", args.model_out, run_dir=args.run_dir, device=device))
        models[models.index("digits")] = trained
        print(f"trained both stages into {trained}")
    path = run_demo(args.out, models=models, seed=seed, device=device)
    print(f"wrote {path} in {time.time() - started:.1f} s")
