"""`nextscale eval`: sample quality judged by an independent classifier (the digits)."""

from __future__ import annotations

import json

from ..errors import NextscaleError
from .common import (
    add_device_arg,
    add_model_args,
    add_sampler_args,
    add_seed_arg,
    at_least,
    check_seed,
    load_models,
    resolve_device,
    sampler_settings,
    writable_file,
)


def register(sub) -> None:
    p = sub.add_parser("eval", help="sample quality judged by an independent classifier (digits)")
    p.add_argument("--preset", default="digits", choices=["digits"], help="which evaluation")
    add_model_args(p, default_model=None)
    p.add_argument("--n-per-class", type=int, default=100, help="samples per class")
    p.add_argument("--json", help="also write the numbers here")
    p.add_argument("--skip-edits", action="store_true", help="skip the centre-editing measurement")
    p.add_argument("--edit-cfg", type=float, default=3.0, help="guidance for the editing measurement")
    add_sampler_args(p)
    add_seed_arg(p)
    add_device_arg(p)
    p.set_defaults(func=run)


def run(args) -> None:
    from ..evaluation import evaluate_digit_edits, evaluate_digits
    from ..runtime import check_finite

    at_least(args.n_per_class, 2, "--n-per-class")
    settings = sampler_settings(args)
    check_finite(args.edit_cfg, "--edit-cfg")
    seed = check_seed(args.seed)
    if not (args.model or args.vae or args.var):
        args.model = "digits"
    device = resolve_device(args.device)
    writable_file(args.json, "--json", (".json",))
    vae, var = load_models(args, device)
    if var.num_classes != 10 or vae.config.resolution != 32:
        raise NextscaleError("the digits evaluation needs a 10-class model of 32×32 images (like --model digits)")
    report = evaluate_digits(vae, var, n_per_class=args.n_per_class, seed=seed, **settings)
    print(report.summary())
    record = {"settings": settings, **report.as_dict()}
    if not args.skip_edits:
        edit_settings = {**settings, "cfg": args.edit_cfg}
        edits = evaluate_digit_edits(vae, var, seed=seed, **edit_settings)
        print(edits.summary())
        record["edits"] = vars(edits)
    if args.json:
        from ..files import atomic_write_text

        atomic_write_text(args.json, json.dumps(record, indent=2) + "\n")
