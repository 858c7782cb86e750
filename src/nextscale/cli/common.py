"""What the commands share: one-line argument errors, the model/sampler/device/seed arguments (defaults and
choices from the registry), and the checks every command makes before any work."""

from __future__ import annotations

import argparse
import sys

from .. import registry
from ..errors import NextscaleError


class Parser(argparse.ArgumentParser):
    """Shows every option's default in its help, and reports a bad argument in one line (exit code 2)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def add_model_args(p: argparse.ArgumentParser, default_model: str | None = None) -> None:
    names = ", ".join(registry.MODEL_NAMES)
    g = p.add_argument_group("model (either --model, or --vae and --var; names work in all three)")
    g.add_argument("--model", default=default_model, help=f"a name ({names}) or a directory with vae/ and var/")
    g.add_argument("--vae", help="a tokenizer: a model name, a saved directory or a reference .pth file")
    g.add_argument(
        "--var", help="a transformer: a model name, a saved directory or a reference .pth (or ar-ckpt-*.pth) file"
    )


def add_device_arg(p: argparse.ArgumentParser, default: str = "auto") -> None:
    p.add_argument("--device", default=default, help="auto (CUDA where present), cpu, cuda, cuda:N or mps")


def add_seed_arg(p: argparse.ArgumentParser, help_text: str = "random seed") -> None:
    p.add_argument("--seed", type=int, default=0, help=help_text)


def number_or_list(kind):
    """An argparse type: one number, or comma-separated numbers (one per scale)."""

    def parse(text: str):
        try:
            values = [kind(v) for v in text.split(",")]
        except ValueError:
            what = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"{text!r} is not {what} or a comma-separated list of them") from None
        return values[0] if len(values) == 1 else values

    parse.__name__ = f"{kind.__name__} or list"
    return parse


def scale_slice(text: str) -> slice:
    """`A:B` as a Python slice of the scales (either side may be left out, negative counts from the end)."""
    parts = text.split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        return slice(*(int(v) if v.strip() else None for v in parts))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not A:B (scale indices, as a Python slice)") from None


def add_sampler_args(p: argparse.ArgumentParser, cfg: float = registry.SAMPLER.cfg, speed: bool = False) -> None:
    s = registry.SAMPLER
    g = p.add_argument_group("sampler (defaults: the reference README's FID settings)")
    g.add_argument("--cfg", type=float, default=cfg, help="guidance weight (at the last scale for linear)")
    schedules = (
        "linear: 0 at the 1x1 scale up to --cfg at the last (the reference); constant: --cfg; power:P: "
        "--cfg·(si/(K-1))^P; list:w0,w1,…: one weight per scale"
    )
    g.add_argument("--cfg-schedule", default=s.cfg_schedule, metavar="SCHEDULE", help=schedules)
    g.add_argument(
        "--guidance-scales",
        type=scale_slice,
        metavar="A:B",
        help="guidance on scales A ≤ si < B only (a Python slice; write --guidance-scales=-2: for a "
        "negative start); off elsewhere, where the unconditional half of the batch is dropped "
        "(default: every scale)",
    )
    temperature = "softmax temperature, or one per scale (comma-separated)"
    g.add_argument("--temperature", type=number_or_list(float), default=s.temperature, help=temperature)
    g.add_argument(
        "--top-k",
        type=number_or_list(int),
        default=s.top_k,
        help="keep the k most likely tokens (0: all), or one per scale",
    )
    g.add_argument(
        "--top-p", type=number_or_list(float), default=s.top_p, help="nucleus filtering (0: off), or one per scale"
    )
    g.add_argument("--more-smooth", action="store_true", help="Gumbel-softmax embeddings (for looks, not FID)")
    if speed:
        g.add_argument(
            "--fine-model",
            metavar="NAME|DIR",
            help="a smaller transformer on the same tokenizer that draws the scales from --handoff on",
        )
        g.add_argument("--handoff", type=int, metavar="K", help="the first scale --fine-model draws")
        g.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="bf16 autocast (GPUs)")
        g.add_argument(
            "--compile", nargs="?", const="inductor", help="torch.compile the transformer step (a backend name)"
        )


def sampler_settings(args) -> dict:
    """The sampler arguments, checked (the library's own checks, before any work)."""
    from ..sampling.sampler import check_sampler_settings

    settings = dict(
        cfg=args.cfg,
        cfg_schedule=args.cfg_schedule,
        top_k=args.top_k,
        top_p=args.top_p,
        more_smooth=args.more_smooth,
        temperature=args.temperature,
        guidance_scales=args.guidance_scales,
    )
    try:
        check_sampler_settings(**settings)
    except NextscaleError as e:
        raise flag_error(e, SAMPLER_FLAGS) from None
    for name in ("precision", "compile"):
        if getattr(args, name, None) is not None:
            settings[name] = getattr(args, name)
    if settings.get("compile") is not None:
        from ..runtime import check_compile_backend

        check_compile_backend(settings["compile"])
    return settings


SAMPLER_FLAGS = {
    "cfg_schedule": "--cfg-schedule",
    "cfg": "--cfg",
    "top_k": "--top-k",
    "top_p": "--top-p",
    "more_smooth": "--more-smooth",
    "temperature": "--temperature",
    "guidance_scales": "--guidance-scales",
}


def check_for_model(settings: dict, var) -> None:
    """The per-scale lists' lengths, once the model (and so its number of scales) is known."""
    from ..sampling.sampler import SETTING_NAMES, check_sampler_settings

    try:
        check_sampler_settings(**{k: settings[k] for k in SETTING_NAMES}, num_scales=len(var.patch_nums))
    except NextscaleError as e:
        raise flag_error(e, SAMPLER_FLAGS) from None


def fine_model(args, vae, var, device) -> dict:
    """`--fine-model` with `--handoff`, loaded and checked against the model: {} without them."""
    if args.fine_model is None and args.handoff is None:
        return {}
    if args.fine_model is None or args.handoff is None:
        raise NextscaleError("--fine-model and --handoff go together")
    from ..sampling.per_class import weights_fingerprint
    from ..sampling.sampler import check_handoff
    from ..weights import load_model

    fine_vae, fine_var = load_model(args.fine_model, device=device)
    if weights_fingerprint(fine_vae) != weights_fingerprint(vae):
        raise NextscaleError(
            f"--fine-model {args.fine_model} comes with another tokenizer than the model: the two "
            "transformers must share one"
        )
    try:
        check_handoff(vae, var, fine_var, args.handoff, device)
    except NextscaleError as e:
        raise flag_error(e, {"handoff": "--handoff"}) from None
    return {"fine_var": fine_var, "handoff": args.handoff}


def flag_error(error: NextscaleError, flags: dict[str, str]) -> NextscaleError:
    """A library error about a setting, reworded with the command-line flag that sets it."""
    message = str(error)
    for field, flag in flags.items():
        if message.startswith(f"{field} "):
            return NextscaleError(flag + message[len(field) :])
    return error


def check_seed(seed: int) -> int:
    from ..seeding import check_seed as check

    return check(seed, "--seed")


def resolve_device(name: str):
    from ..runtime import resolve_device as resolve

    try:
        return resolve(name)
    except NextscaleError as e:
        raise NextscaleError(f"--device: {e}") from None


def check_model_args(args) -> None:
    if args.model and (args.vae or args.var):
        raise NextscaleError("give either --model or --vae with --var, not both")
    if not args.model and not (args.vae and args.var):
        raise NextscaleError("name a model: --model NAME|DIR, or both --vae and --var")


def load_models(args, device):
    from ..weights import load_model, load_pair

    check_model_args(args)
    if args.model:
        return load_model(args.model, device=device)
    return load_pair(args.vae, args.var, device=device)


def parse_classes(values: list[str] | None) -> list[int] | None:
    if not values:
        return None
    out = []
    for value in values:
        for part in value.split(","):
            part = part.strip()
            if part:
                try:
                    out.append(int(part))
                except ValueError:
                    raise NextscaleError(f"--class {part!r} is not an integer class id") from None
    return out


def check_classes(classes: list[int] | None, num_classes: int) -> None:
    for c in classes or []:
        if not 0 <= c < num_classes:
            raise NextscaleError(f"--class {c} is out of range: this model has classes 0..{num_classes - 1}")


def at_least(value: int, minimum: int, flag: str) -> int:
    if value < minimum:
        raise NextscaleError(f"{flag} must be at least {minimum}, got {value}")
    return value


def writable_file(path: str | None, flag: str, suffixes: tuple[str, ...] = ()):
    """Checks an output file's folder can be written (and its suffix) before any work; None passes."""
    from ..files import ensure_writable_file

    return None if path is None else ensure_writable_file(path, flag, suffixes)


def writable_dir(path: str | None, flag: str):
    from ..files import ensure_writable_dir

    return None if path is None else ensure_writable_dir(path, flag)
