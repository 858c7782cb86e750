"""`nextscale eval`: FID, IS, precision/recall and KID of a sample set against a reference (torch-fidelity's
Inception, or any feature network), and `--preset digits|fashion`: a built-in model's samples judged on real data
by an independent classifier (the presets: nextscale.evaluation.presets)."""

from __future__ import annotations

import json
import sys

from ..errors import NextscaleError
from ..evaluation.presets import PRESETS, REGISTERED
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
    "seed": 0,
    **{name: getattr(SAMPLER_DEFAULTS, name) for name in SAMPLER_FLAGS},
}


def register(sub) -> None:
    p = sub.add_parser(
        "eval",
        help=f"FID/IS/precision/recall/KID of samples against a reference; --preset {'|'.join(PRESETS)}",
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
        "samples.npz is read), saved statistics (.npz with mu, sigma), or a built-in dataset's test images by its "
        "name (digits, fashion-mnist) or its training images (digits-train, fashion-mnist-train)",
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
        help=f"the feature network: {', '.join(REGISTERED)}, or a torch.export .pt2 (or TorchScript .pt) file mapping "
        "uint8 N×3×H×W images to N×D features",
    )
    p.add_argument(
        "--inception-weights", help="the Inception weights file (default: downloaded once into torch's hub folder)"
    )
    p.add_argument("--save-stats", metavar="FILE", help="write SAMPLES' feature mean and covariance here (.npz)")
    p.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"], help="images per feature batch")
    p.add_argument("--json", help="also write the numbers and settings here")
    presets = "; ".join(
        f"{p.name}: the {p.model} model against the {p.test} test images, beside {p.train} "
        f"({'all' if p.train_limit is None else f'the first {p.train_limit:,}'}) against them, through the "
        f"{p.network} network"
        for p in PRESETS.values()
    )
    p.add_argument(
        "--preset",
        choices=list(PRESETS),
        help=f"sample a built-in model and judge it on real data with the options below, beside the real floor "
        f"(real training images against the same test images): {presets}",
    )
    preset = p.add_argument_group("--preset NAME")
    counts = ", ".join(f"{p.n_per_class} for {p.name}" for p in PRESETS.values())
    preset.add_argument("--n-per-class", type=int, help=f"samples per class (None: the preset's: {counts})")
    preset.add_argument("--skip-edits", action="store_true", help="skip the centre-editing measurement")
    preset.add_argument(
        "--edit-cfg",
        type=float,
        help="guidance for the editing measurement (None: the edit evaluation's own, "
        "nextscale.evaluation.edits.EDIT_SETTINGS)",
    )
    limits = ", ".join(f"{p.edit_limit or 'all'} for {p.name}" for p in PRESETS.values())
    preset.add_argument(
        "--edit-limit", type=int, help=f"edit the first N real test images (None: the preset's: {limits})"
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
    "edit_limit": "--edit-limit",
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

    if args.preset:
        if given(SET_OPTIONS):
            raise NextscaleError(
                f"--preset {args.preset} draws and judges its own samples: {given(SET_OPTIONS)[0]} is for "
                "evaluating a sample set"
            )
        return run_preset(args)
    names = " or ".join(PRESETS)
    if not args.samples:
        raise NextscaleError(f"give SAMPLES to evaluate (with --ref REF), or --preset {names}")
    if given(PRESET_OPTIONS):
        raise NextscaleError(f"{given(PRESET_OPTIONS)[0]} goes with --preset {names} (SAMPLES are already drawn)")
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


def run_preset(args) -> None:
    """Every check (numbers, the output file, the model and the settings for it) before any sample is drawn."""
    from dataclasses import replace

    from ..evaluation import evaluate_edits, evaluate_samples
    from ..evaluation.edits import EDIT_SETTINGS
    from ..evaluation.samples import check_model_for
    from ..runtime import check_finite

    preset = PRESETS[args.preset]
    n_per_class = preset.n_per_class if args.n_per_class is None else at_least(args.n_per_class, 2, "--n-per-class")
    edit_limit = preset.edit_limit if args.edit_limit is None else at_least(args.edit_limit, 1, "--edit-limit")
    settings = sampler_settings(args)
    edit_cfg = EDIT_SETTINGS.cfg if args.edit_cfg is None else check_finite(args.edit_cfg, "edit_cfg")
    seed = check_seed(args.seed)
    if not (args.model or args.vae or args.var):
        args.model = preset.model
    device = resolve_device(args.device)
    writable_file(args.json, "--json", (".json",))
    vae, var = load_models(args, device)
    check_model_for(preset, vae, var)
    check_for_model(settings, var)
    from ..sampling.draws import is_raster

    if is_raster(var) and not args.skip_edits:  # its edits would fail after all the sampling
        print("a raster-order model repaints no region: the edits are skipped", file=sys.stderr, flush=True)
        args.skip_edits = True
    report = evaluate_samples(vae, var, preset.name, n_per_class=n_per_class, seed=seed, config=settings)
    print(report.summary())
    options = {
        "preset": preset.name,
        "model": args.model,
        "vae": args.vae,
        "var": args.var,
        "n_per_class": n_per_class,
        "seed": seed,
        "skip_edits": args.skip_edits,
        "edit_cfg": None if args.skip_edits else edit_cfg,
        "edit_limit": None if args.skip_edits else edit_limit,
        "device": str(device),
    }
    record = {"options": options, "settings": settings.record(every=True), **report.as_dict()}
    if not args.skip_edits:
        edits = evaluate_edits(
            vae, var, preset.name, seed=seed, limit=edit_limit, progress=True, config=replace(settings, cfg=edit_cfg)
        )
        print(edits.summary())
        record["edits"] = edits.as_dict()
    if args.json:
        from ..files import atomic_write_text

        atomic_write_text(args.json, json.dumps(record, indent=2) + "\n")
