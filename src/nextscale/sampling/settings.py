"""The sampler's settings, each defined once: its name, type, default, whether it takes one value per scale, its
check and its help. `sample()`'s keywords, the command-line flags and their help, the web form, `samples.json`
and the README's table are all derived from `SamplerConfig`.

A `SamplerConfig` is checked when it is made (so a value is checked once, where it enters) and is frozen; what
depends on the model (a per-scale list's length, a guidance rule's weights) is resolved by `for_model`. The
defaults are the reference README's FID settings. Nothing here imports torch: the command line builds its flags
from it before any model loads.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace

from ..errors import NextscaleError, SettingError
from ..runtime import PRECISIONS, check_compile_backend, is_int
from .guidance import Guidance, Interval, PerScale, check_weights, for_record, make_guidance, scales_problem


@dataclass(frozen=True)
class Kind:
    """What values a setting takes: `check(value)` gives the problem with one value (phrased to follow the
    setting's name) or None; `cli` are the argparse keywords that read it; `json` is how a web form sends it."""

    check: Callable[[object], str | None]
    cli: dict = field(default_factory=dict)
    json: str | None = None  # "number" or "integer"


def _number(low=-math.inf, high=math.inf, *, positive=False, integer=False):
    def check(value):
        if integer:
            if not is_int(value) or value < low:
                return f"must be an integer ≥ {low:g}, got {value!r}"
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            return f"must be a finite number, got {value!r}"
        if positive and value <= 0:
            return f"must be > 0, got {value!r}"
        if not low <= value <= high:
            return f"must lie in [{low:g}, {high:g}], got {value:g}"
        return None

    return check


def _flag(value):
    return None if isinstance(value, bool) else f"must be True or False, got {value!r}"


def _schedule(value):
    if isinstance(value, Guidance | str):
        return None  # parsed with `cfg` in `SamplerConfig.__post_init__`
    return f"must be a schedule name or a Guidance object, not {type(value).__name__}"


def _precision(value):
    return None if value in PRECISIONS else f"must be one of {', '.join(PRECISIONS)}, got {value!r}"


def _backend(value):
    if value is None:
        return None
    if not isinstance(value, str):
        return f"must be a torch.compile backend name or None, got {value!r}"
    try:
        check_compile_backend(value)
    except NextscaleError as e:
        return f"names an {e}"
    return None


def _number_or_list(kind):
    """An argparse type: one number, or comma-separated numbers (one per scale)."""
    import argparse

    def parse(text: str):
        try:
            values = [kind(v) for v in text.split(",")]
        except ValueError:
            what = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"{text!r} is not {what} or a comma-separated list of them") from None
        return values[0] if len(values) == 1 else values

    parse.__name__ = f"{kind.__name__} or list"
    return parse


def _scale_slice(text: str) -> slice:
    """`A:B` as a Python slice of the scales (either side may be left out, negative counts from the end)."""
    import argparse

    parts = text.split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        return slice(*(int(v) if v.strip() else None for v in parts))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not A:B (scale indices, as a Python slice)") from None


NUMBER = Kind(_number(), {"type": float}, json="number")
SCHEDULE = Kind(_schedule, {"metavar": "SCHEDULE"})
SCALES = Kind(scales_problem, {"type": _scale_slice, "metavar": "A:B"})
TEMPERATURE = Kind(_number(positive=True), {"type": _number_or_list(float)}, json="number")
TOP_K = Kind(_number(0, integer=True), {"type": _number_or_list(int)}, json="integer")
TOP_P = Kind(_number(0.0, 1.0), {"type": _number_or_list(float)}, json="number")
FLAG = Kind(_flag, {"action": "store_true"})
PRECISION = Kind(_precision, {"choices": PRECISIONS})
BACKEND = Kind(_backend, {"nargs": "?", "const": "inductor", "metavar": "BACKEND"})


def setting(default, label: str, help: str, kind: Kind, *, per_scale=False, recorded=False, speed=False):
    """A field of `SamplerConfig`. `recorded`: always written to samples.json (the others only when changed, so
    that records made before a setting existed still resume); `speed`: how fast, not what, is drawn."""
    meta = dict(label=label, help=help, kind=kind, per_scale=per_scale, recorded=recorded, speed=speed)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class SamplerConfig:
    cfg: float = setting(
        1.5,
        "Guidance",
        "guidance weight (at the last scale for linear; the paper's tables use 2.0, the reference README 1.5)",
        NUMBER,
        recorded=True,
    )
    cfg_schedule: str | Guidance = setting(
        "linear",
        "Guidance schedule",
        "linear: 0 at the 1x1 scale up to cfg at the last (the reference); constant: cfg; power:P: "
        "cfg·(si/(K-1))^P; list:w0,w1,…: one weight per scale (from Python, also a Guidance object)",
        SCHEDULE,
        recorded=True,
    )
    guidance_scales: slice | None = setting(
        None,
        "Guided scales",
        "guidance on scales A ≤ si < B only (a Python slice A:B; on the command line write --guidance-scales=-2: "
        "for a negative start); off elsewhere, where the unconditional half of the batch is dropped (None: every "
        "scale)",
        SCALES,
    )
    temperature: float | tuple[float, ...] = setting(
        1.0,
        "Temperature",
        "softmax temperature, or one per scale (1: the logits as they are)",
        TEMPERATURE,
        per_scale=True,
    )
    top_k: int | tuple[int, ...] = setting(
        900, "Top-k", "keep the k most likely tokens (0: all), or one per scale", TOP_K, per_scale=True, recorded=True
    )
    top_p: float | tuple[float, ...] = setting(
        0.96, "Top-p", "nucleus filtering (0: off), or one per scale", TOP_P, per_scale=True, recorded=True
    )
    more_smooth: bool = setting(
        False, "Smooth", "Gumbel-softmax embeddings (for looks, not for FID)", FLAG, recorded=True
    )
    precision: str = setting("fp32", "Precision", "bf16 autocast (for GPUs)", PRECISION, speed=True)
    compile: str | None = setting(
        None,
        "Compile",
        "torch.compile the transformer step with this backend (on the command line, a bare --compile: inductor)",
        BACKEND,
        speed=True,
    )

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if f.metadata["per_scale"] and isinstance(value, Sequence) and not isinstance(value, str):
                value = tuple(value)  # frozen all the way down, whatever sequence was given
                object.__setattr__(self, f.name, value)
            for one in value if isinstance(value, tuple) else (value,):
                problem = f.metadata["kind"].check(one)
                if problem:
                    raise SettingError(f.name, problem)
            if isinstance(value, tuple) and not value:
                raise SettingError(f.name, "is an empty list: give a number, or one per scale")
        make_guidance(self.cfg, self.cfg_schedule, self.guidance_scales)  # the schedule's own text

    @property
    def guidance(self) -> Guidance:
        return make_guidance(self.cfg, self.cfg_schedule, self.guidance_scales)

    def for_model(self, num_scales: int) -> ScaleSettings:
        """The settings resolved for a model of `num_scales` scales: guidance, and each per-scale value per scale.
        Raises naming the setting whose list does not fit."""
        guidance = self.guidance
        check_weights(guidance, num_scales)
        inner = guidance
        while isinstance(inner, Interval):
            inner = inner.inner
        if isinstance(inner, PerScale):  # a list of the wrong length names itself even where guidance is off
            inner.weight(0, num_scales)
        per_scale = {}
        for f in fields(self):
            if f.metadata["per_scale"]:
                value = getattr(self, f.name)
                values = list(value) if isinstance(value, tuple) else [value] * num_scales
                if len(values) != num_scales:
                    raise SettingError(f.name, f"has {len(values)} entries; this model has {num_scales} scales")
                per_scale[f.name] = values
        return ScaleSettings(guidance, **per_scale)

    def record(self, every: bool = False) -> dict:
        """The settings that decide the images (not the speed ones), as JSON values: what samples.json keeps (those
        always recorded and those changed, so that records made before a setting existed still resume), or
        `every` one of them."""
        return {
            f.name: for_record(getattr(self, f.name))
            for f in fields(self)
            if not f.metadata["speed"] and (every or f.metadata["recorded"] or getattr(self, f.name) != f.default)
        }

    def changed(self) -> dict:
        """The settings that differ from the defaults, by name."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) != f.default}


@dataclass
class ScaleSettings:
    """A `SamplerConfig` resolved for one model: guidance, and a temperature, top-k and top-p per scale."""

    guidance: Guidance
    temperature: list[float]
    top_k: list[int]
    top_p: list[float]


DEFAULTS = SamplerConfig()
SETTING_FIELDS = {f.name: f for f in fields(SamplerConfig)}
SETTINGS = tuple(SETTING_FIELDS)


def sampler_config(config: SamplerConfig | None = None, /, **settings) -> SamplerConfig:
    """`config` (default: the defaults) with `settings` replaced: the one door through which settings enter, so
    they are checked once. An unknown name is refused with the list of known ones."""
    if config is not None and not isinstance(config, SamplerConfig):
        raise NextscaleError(f"config must be a SamplerConfig, not {type(config).__name__}")
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise NextscaleError(f"unknown sampler setting {unknown[0]!r}; the settings are: {', '.join(SETTINGS)}")
    config = config or DEFAULTS
    return replace(config, **settings) if settings else config


def with_settings_signature(function=None, *, defaults: SamplerConfig | None = None):
    """Shows the settings as `function`'s own keyword arguments (help(), IDEs), in place of its `**settings`, with
    the values of `defaults` (a function whose settings start elsewhere than `DEFAULTS` says so)."""
    if function is None:
        return lambda f: with_settings_signature(f, defaults=defaults)
    defaults = defaults or DEFAULTS
    signature = inspect.signature(function)
    params = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    params += [
        inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=getattr(defaults, f.name), annotation=f.type)
        for f in fields(SamplerConfig)
    ]
    function.__signature__ = signature.replace(parameters=params)
    return function


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_arguments(parser, *, speed: bool = False) -> None:
    """The settings as command-line options (the speed ones with `speed`); each option's `dest` is the setting's
    name, so an error about a setting is reworded with its flag."""
    group = parser.add_argument_group("sampler (defaults: the reference README's FID settings)")
    for f in fields(SamplerConfig):
        if speed or not f.metadata["speed"]:
            group.add_argument(
                flag(f.name), dest=f.name, default=f.default, help=f.metadata["help"], **f.metadata["kind"].cli
            )


def from_arguments(args) -> SamplerConfig:
    """The settings an `add_arguments` parser read, checked."""
    return SamplerConfig(**{f.name: getattr(args, f.name) for f in fields(SamplerConfig) if hasattr(args, f.name)})


def markdown_table() -> str:
    """The README's table of settings, made from the definitions."""
    rows = [
        "| setting (`sample()` keyword) | flag | default | per scale | what it does |",
        "| --- | --- | --- | --- | --- |",
    ]
    for f in fields(SamplerConfig):
        per_scale = "yes" if f.metadata["per_scale"] else ""
        rows.append(f"| `{f.name}` | `{flag(f.name)}` | `{f.default!r}` | {per_scale} | {f.metadata['help']} |")
    return "\n".join(rows)
