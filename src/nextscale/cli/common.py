"""What the commands share: one-line argument errors, the model/sampler/device/seed arguments (defaults and
choices from the registry), and the checks every command makes before any work."""

from __future__ import annotations

import argparse
import sys

from .. import registry
from ..errors import NextscaleError


class DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends an option's default to its help where there is one to show: not None (the help says what happens
    then) and not a switch's False."""

    def _get_help_string(self, action) -> str:
        if action.default is None or action.default is False:
            return action.help or ""
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """Shows every option's default in its help, and reports a bad argument in one line (exit code 2)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", DefaultsFormatter)
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
    g.add_argument(
        "--any-tokenizer",
        action="store_true",
        help="pair the transformer with a tokenizer other than the one it records it was trained with",
    )


def add_device_arg(p: argparse.ArgumentParser, default: str = "auto") -> None:
    p.add_argument("--device", default=default, help="auto (CUDA where present), cpu, cuda, cuda:N or mps")


def add_seed_arg(p: argparse.ArgumentParser, help_text: str = "random seed") -> None:
    p.add_argument("--seed", type=int, default=0, help=help_text)


def add_sampler_args(p: argparse.ArgumentParser, speed: bool = False) -> None:
    """The sampler's settings as flags, from their one definition (`nextscale.sampling.SamplerConfig`)."""
    from ..sampling.settings import add_arguments

    add_arguments(p, speed=speed)
    if speed:
        g = p.add_argument_group("coarse-to-fine hand-off")
        g.add_argument(
            "--fine-model",
            metavar="NAME|DIR",
            help="a smaller transformer on the same tokenizer that draws the scales from --handoff on",
        )
        g.add_argument("--handoff", type=int, metavar="K", help="the first scale --fine-model draws")


def sampler_settings(args):
    """The sampler flags as a checked `SamplerConfig`, before any work (an error names its flag)."""
    from ..sampling.settings import from_arguments

    return from_arguments(args)


def sampler_flags() -> dict[str, str]:
    """Each sampler setting's flag, by name (for commands where they belong to one mode only)."""
    from dataclasses import fields

    from ..sampling.settings import SamplerConfig, flag

    return {f.name: flag(f.name) for f in fields(SamplerConfig) if not f.metadata["speed"]}


SAMPLER_FLAGS = sampler_flags()


def check_for_model(config, var) -> None:
    """The per-scale lists' lengths and the guidance weights, once the model (its number of scales) is known."""
    from ..sampling.sampler import check_settings_for

    check_settings_for(config, var)


def fine_model(args, vae, var, device) -> dict:
    """`--fine-model` with `--handoff`, loaded and checked against the model: {} without them."""
    if args.fine_model is None and args.handoff is None:
        return {}
    if args.fine_model is None or args.handoff is None:
        raise NextscaleError("--fine-model and --handoff go together")
    from ..sampling.sampler import check_handoff
    from ..weights import load_model

    fine_vae, fine_var = load_model(args.fine_model, device=device)
    if fine_vae.tokens_fingerprint() != vae.tokens_fingerprint():
        raise NextscaleError(
            f"--fine-model {args.fine_model} comes with another tokenizer than the model: the two "
            "transformers must share one"
        )
    check_handoff(vae, var, fine_var, args.handoff, device)
    return {"fine_var": fine_var, "handoff": args.handoff}


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
    check = not args.any_tokenizer
    if args.model:
        return load_model(args.model, device=device, check_tokenizer=check)
    return load_pair(args.vae, args.var, device=device, check_tokenizer=check)


def parse_classes(values: list[str] | None) -> list[str] | None:
    """`--class` as given: ids or names, space- or comma-separated (the model's names are known once it loads)."""
    parts = [part.strip() for value in values or [] for part in value.split(",")]
    return [part for part in parts if part] or None


def check_classes(classes: list[str] | None, var) -> list[int] | None:
    """`--class` values → class ids, by the model's names (`nextscale.weights.classes.class_index`)."""
    from ..weights.classes import class_index, model_class_names

    if not classes:
        return None
    names = model_class_names(var)
    return [class_index(value, names) for value in classes]  # a refusal names --class, by the flag's dest


def parse_ints(text: str | None, flag: str, minimum: int | None = None) -> tuple[int, ...] | None:
    """Reads "1,2,3" as (1, 2, 3), each at least `minimum` where given; None passes."""
    if text is None:
        return None
    try:
        values = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise NextscaleError(f"{flag} takes comma-separated integers, got {text!r}") from None
    if minimum is not None and min(values) < minimum:
        raise NextscaleError(f"{flag} takes integers of at least {minimum}, got {text!r}")
    return values


def check_width_per_depth(depth: int | None, width_per_depth: int) -> None:
    """--width-per-depth: at least 1, and given only with --depth (it shapes nothing else)."""
    at_least(width_per_depth, 1, "--width-per-depth")
    if depth is None and width_per_depth != registry.RELEASED_WIDTH_PER_DEPTH:
        raise NextscaleError("--width-per-depth applies with --depth")


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
