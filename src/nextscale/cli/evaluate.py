"""`nextscale eval`: FID, IS, precision/recall and KID of a sample set against a reference (torch-fidelity's
Inception, or any feature network), and `--preset digits`: the digits model judged by an independent classifier."""

from __future__ import annotations

import json

from ..errors import NextscaleError
from ..sampling.settings import DEFAULTS as SAMPLER_DEFAULTS
from .common import (
    SAMPLER_FLAGS,
    add_device_arg,
    add_model_args,
    add_sampler_args,
    add_seed_arg,
    at_least,
    check_for_model,
    check_seed,
    load_models,
    resolve_device,
    sampler_settings,
    writable_file,
)

METRICS = ("fid", "is", "prc", "kid")
DEFAULTS = {
    "features": "inception",
    "batch_size": 100,
    "n_per_class": 100,
    "seed": 0,
    **{name: getattr(SAMPLER_DEFAULTS, name) for name in SAMPLER_FLAGS},
}


def register(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="FID/IS/precision/recall/KID of samples against a reference; --preset digits",
        description="Metrics by torch-fidelity's functions with the ADM evaluator's conventions: "
        "FID from float64 statistics (a --ref .npz holding mu/sigma is used as they are), "
        "IS over consecutive 5,000-image blocks in the file's order, precision/recall "
        "with k=3 neighbours on the same pool features as FID.",
    )
    p.add_argument(
        "samples",
        nargs="?",
        metavar="SAMPLES",
        help="an ADM .npz (arr_0 uint8 N×H×W×3), a folder of images (class sub-folders too; images of another "
        "size than most are resized and centre-cropped to it, with a note), a folder nextscale sample wrote (its "
        "samples.npz is read), saved statistics (.npz with mu, sigma), or digits / digits-train",
    )
    p.add_argument(
        "--ref",
        help="the reference set, in any form SAMPLES takes (e.g. VIRTUAL_imagenet256_labeled.npz); a folder's images "
        "of another size than the samples' are resized and centre-cropped to theirs, as training reads images",
    )
    p.add_argument(
        "--metrics",
        help=f"comma-separated, from {','.join(METRICS)} (default: all the inputs allow; with only --save-stats, none)",
    )
    p.add_argument(
        "--features",
        default=DEFAULTS["features"],
        help="the feature network: inception, digits, or a "
        "torch.export .pt2 (or TorchScript .pt) file mapping "
        "uint8 N×3×H×W images to N×D features",
    )
    p.add_argument(
        "--inception-weights", help="the Inception weights file (default: downloaded once into torch's hub folder)"
    )
    p.add_argument("--save-stats", metavar="FILE", help="write SAMPLES' feature mean and covariance here (.npz)")
    p.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"], help="images per feature batch")
    p.add_argument("--json", help="also write the numbers and settings here")
    p.add_argument(
        "--preset", choices=["digits"], help="digits: sample the digits model and judge it (the options below)"
    )
    digits = p.add_argument_group("--preset digits")
    digits.add_argument("--n-per-class", type=int, default=DEFAULTS["n_per_class"], help="samples per class")
    digits.add_argument("--skip-edits", action="store_true", help="skip the centre-editing measurement")
    digits.add_argument(
        "--edit-cfg",
        type=float,
        help="guidance for the editing measurement (None: the edit evaluation's own, "
        "nextscale.evaluation.edits.EDIT_SETTINGS)",
    )
    add_model_args(p, default_model=None)
    add_sampler_args(p)
    add_seed_arg(p)
    add_device_arg(p)
    p.set_defaults(func=run)


SET_OPTIONS = {
    "samples": "SAMPLES",
    "ref": "--ref",
    "metrics": "--metrics",
    "features": "--features",
    "inception_weights": "--inception-weights",
    "save_stats": "--save-stats",
    "batch_size": "--batch-size",
}
PRESET_OPTIONS = {
    "n_per_class": "--n-per-class",
    "skip_edits": "--skip-edits",
    "edit_cfg": "--edit-cfg",
    "model": "--model",
    "vae": "--vae",
    "var": "--var",
    "seed": "--seed",
    **SAMPLER_FLAGS,
}


def run(args) -> None:
    """Two modes; an option of the other mode is refused rather than silently ignored."""

    def given(options):
        return [flag for name, flag in options.items() if getattr(args, name) not in (None, False, DEFAULTS.get(name))]

    if args.preset == "digits":
        if given(SET_OPTIONS):
            raise NextscaleError(
                f"--preset digits draws and judges its own samples: {given(SET_OPTIONS)[0]} is for "
                "evaluating a sample set"
            )
        return run_digits(args)
    if not args.samples:
        raise NextscaleError("give SAMPLES to evaluate (with --ref REF), or --preset digits")
    if given(PRESET_OPTIONS):
        raise NextscaleError(f"{given(PRESET_OPTIONS)[0]} goes with --preset digits (SAMPLES are already drawn)")
    check_inception_weights(args)
    run_metrics(args)


def check_inception_weights(args) -> None:
    """Weights for another network than the one they are for would be ignored without a word."""
    if args.inception_weights and args.features != "inception":
        raise NextscaleError("--inception-weights goes with --features inception")


def run_metrics(args) -> None:
    from ..evaluation import evaluate, load_network, open_set
    from ..evaluation.report import check_metrics, notes, table

    at_least(args.batch_size, 1, "--batch-size")
    if args.metrics is not None:
        metrics = check_metrics(args.metrics.split(","))
    else:  # None: what the inputs allow
        metrics = () if args.save_stats and not args.ref else None
    writable_file(args.json, "--json", (".json",))
    writable_file(args.save_stats, "--save-stats", (".npz",))
    device = resolve_device(args.device)
    samples = open_set(args.samples, "SAMPLES")  # named problems with the inputs first, then the network
    ref = open_set(args.ref, "--ref", samples.size) if args.ref else None
    network = load_network(args.features, device=device, inception_weights=args.inception_weights)
    result = evaluate(samples, ref, network, metrics=metrics, batch_size=args.batch_size, save_stats=args.save_stats)
    shown = table(result) if result["metrics"] else "\n".join(line.strip() for line in notes(result))
    if shown:
        print(shown)
    if args.save_stats:
        print(f"wrote the statistics of {args.samples} to {args.save_stats}")
    if args.json:
        from ..files import atomic_write_text

        atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")


def run_digits(args) -> None:
    from ..evaluation import evaluate_digit_edits, evaluate_digits
    from ..runtime import check_finite

    at_least(args.n_per_class, 2, "--n-per-class")
    settings = sampler_settings(args)
    if args.edit_cfg is not None:
        check_finite(args.edit_cfg, "edit_cfg")
    seed = check_seed(args.seed)
    if not (args.model or args.vae or args.var):
        args.model = "digits"
    device = resolve_device(args.device)
    writable_file(args.json, "--json", (".json",))
    vae, var = load_models(args, device)
    if var.num_classes != 10 or vae.config.resolution != 32:
        raise NextscaleError("the digits evaluation needs a 10-class model of 32×32 images (like --model digits)")
    check_for_model(settings, var)
    report = evaluate_digits(vae, var, n_per_class=args.n_per_class, seed=seed, config=settings)
    print(report.summary())
    record = {"settings": settings.record(every=True), **report.as_dict()}
    if not args.skip_edits:
        from dataclasses import replace

        from ..evaluation.edits import EDIT_SETTINGS

        edit_cfg = EDIT_SETTINGS.cfg if args.edit_cfg is None else args.edit_cfg
        edits = evaluate_digit_edits(vae, var, seed=seed, config=replace(settings, cfg=edit_cfg))
        print(edits.summary())
        record["edits"] = vars(edits)
    if args.json:
        from ..files import atomic_write_text

        atomic_write_text(args.json, json.dumps(record, indent=2) + "\n")
