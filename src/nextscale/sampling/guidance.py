"""Classifier-free guidance as a small object: the weight at each scale, and whether a scale needs the
unconditional branch at all. The sampler drops the unconditional half of the batch (and its KV cache) as soon as
no remaining scale needs it, so guidance off at the finest scales costs half there, and `cfg = 0` runs B rows.

Logits mix as `(1 + w) · cond − w · uncond` with `w = weight(si, K)`. A user's rule subclasses `Guidance` and
defines `weight` (and `needs_unconditional` where a zero weight should still keep the unconditional rows).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import NextscaleError, SettingError
from ..runtime import check_finite, is_int


class Guidance:
    def weight(self, si: int, num_scales: int) -> float:
        raise NotImplementedError

    def needs_unconditional(self, si: int, num_scales: int) -> bool:
        return self.weight(si, num_scales) != 0


@dataclass(frozen=True)
class Linear(Guidance):
    """The reference: 0 at the 1×1 scale, rising linearly to `cfg` at the last."""

    cfg: float

    def weight(self, si, num_scales):
        return self.cfg * si / (num_scales - 1)


@dataclass(frozen=True)
class Constant(Guidance):
    cfg: float

    def weight(self, si, num_scales):
        return self.cfg


@dataclass(frozen=True)
class Power(Guidance):
    """`cfg · (si / (K − 1))^power`: power 1 is the reference's ramp; larger powers guide the coarse scales less."""

    cfg: float
    power: float

    def __post_init__(self):
        if isinstance(self.power, bool) or not isinstance(self.power, int | float) or not self.power >= 0:
            raise NextscaleError(f"the power of a power schedule must be a number ≥ 0, got {self.power!r}")

    def weight(self, si, num_scales):
        return self.cfg * (si / (num_scales - 1)) ** self.power


@dataclass(frozen=True)
class PerScale(Guidance):
    """One weight per scale, as given."""

    weights: tuple[float, ...]

    def weight(self, si, num_scales):
        if len(self.weights) != num_scales:
            raise NextscaleError(
                f"the guidance list has {len(self.weights)} weights; this model has {num_scales} scales"
            )
        return self.weights[si]


@dataclass(frozen=True)
class Interval(Guidance):
    """`inner` on scales start ≤ si < stop (a Python slice: negative counts from the end, None is open), off
    elsewhere."""

    inner: Guidance
    start: int | None = None
    stop: int | None = None

    def weight(self, si, num_scales):
        return self.inner.weight(si, num_scales) if si in range(num_scales)[self.start : self.stop] else 0.0


SCHEDULES = ("linear", "constant", "power:P", "list:w0,w1,…")


def make_guidance(cfg: float = 1.5, schedule: str | Guidance = "linear", scales: slice | None = None) -> Guidance:
    """A schedule name (`linear`, `constant`, `power:P`, `list:w0,w1,…`, where a list ignores `cfg`) or an object,
    limited to `scales` when given."""
    check_finite(cfg, "cfg")
    guidance = schedule if isinstance(schedule, Guidance) else _parse(schedule, cfg)
    if scales is not None:
        problem = scales_problem(scales)
        if problem:
            raise SettingError("guidance_scales", problem)
        guidance = Interval(guidance, scales.start, scales.stop)
    return guidance


def scales_problem(scales) -> str | None:
    """What is wrong with `guidance_scales` (None: nothing)."""
    if scales is None:
        return None
    if not isinstance(scales, slice):
        return f"must be a slice of the scales (slice(A, B)), got {scales!r}"
    if any(bound is not None and not is_int(bound) for bound in (scales.start, scales.stop)):
        return f"must be a slice of integer scale indices (A:B), got {scales!r}"
    if scales.step not in (None, 1):
        return "takes no step: give A:B"
    return None


def _parse(schedule: str, cfg: float) -> Guidance:
    if not isinstance(schedule, str):
        raise SettingError("cfg_schedule", f"must be a name or a Guidance object, not {type(schedule).__name__}")
    name, _, value = schedule.partition(":")
    if name in ("linear", "constant") and not value:
        return Linear(cfg) if name == "linear" else Constant(cfg)
    if name == "power" and value:
        power = _number(value, "power:P")
        if power < 0:
            raise SettingError("cfg_schedule", f"power:P needs P ≥ 0, got {value}")
        return Power(cfg, power)
    if name == "list" and value:
        return PerScale(tuple(_number(v, "list") for v in value.split(",")))
    raise SettingError("cfg_schedule", f"must be one of {', '.join(SCHEDULES)}, got {schedule!r}")


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise SettingError("cfg_schedule", f"{what}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise SettingError("cfg_schedule", f"{what}: {text!r} is not a finite number")
    return value


def check_weights(guidance: Guidance, num_scales: int) -> None:
    """Every scale's weight finite and the unconditional-branch answer a bool, before any work (a user's rule
    and the lists alike)."""
    for si in range(num_scales):
        weight = guidance.weight(si, num_scales)
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight):
            raise NextscaleError(f"the guidance weight of scale {si} must be a finite number, got {weight!r}")
        if not isinstance(guidance.needs_unconditional(si, num_scales), bool):
            raise NextscaleError(f"{type(guidance).__name__}.needs_unconditional must return True or False")


def for_record(value):
    """A setting as a JSON record keeps it: a slice as "A:B", numbers as numbers, a guidance rule by its
    dataclass repr (or, for a rule without one, its class's name: a memory address would differ every run)."""
    if isinstance(value, slice):
        return f"{'' if value.start is None else value.start}:{'' if value.stop is None else value.stop}"
    if isinstance(value, tuple | list):
        return [for_record(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy and torch scalars
        return value.item()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    text = repr(value)
    return f"{type(value).__module__}.{type(value).__qualname__}" if " at 0x" in text else text
