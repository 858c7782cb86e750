"""`nextscale bench --sweep`: each training-free speed-up's speed beside what it costs in quality.

Speed: the whole `sample` call on the chosen architecture with random weights (var-d16 by default), the same
seeds for every option, the median of timed runs, as a ratio to the reference-exact default. Quality: the
built-in digits model with the same option, judged by the independent classifier (accuracy on the requested
class, and the Fréchet distance of the judge's features as a ratio to real train ↔ test digits).

An option is described per model by how many of the last scales it touches, so that a 10-scale var-d16 and
the 6-scale digits model are compared like for like.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, replace

import torch

from ..registry import build
from ..sampling import sample
from ..transformer import VAR
from ..weights import load_model
from .measure import synchronize


@dataclass(frozen=True)
class Option:
    name: str
    guidance_off_last: int = 0  # guidance off on the last n scales (the unconditional half dropped there)
    cfg: float | None = None  # None: the default
    handoff_last: int = 0  # the last n scales drawn by the small model
    top_k_last: tuple[int, int] | None = None  # (n, k): top-k k on the last n scales, the default elsewhere

    def settings(self, num_scales: int, fine_var) -> dict:
        out: dict = {}
        if self.guidance_off_last:
            out["guidance_scales"] = slice(None, num_scales - self.guidance_off_last)
        if self.cfg is not None:
            out["cfg"] = self.cfg
        if self.handoff_last:
            out.update(fine_var=fine_var, handoff=num_scales - self.handoff_last)
        if self.top_k_last:
            n, k = self.top_k_last
            out["top_k"] = [900] * (num_scales - n) + [k] * n
        return out


OPTIONS = (
    Option("reference (default)"),
    Option("guidance off, last scale", guidance_off_last=1),
    Option("guidance off, last 2 scales", guidance_off_last=2),
    Option("guidance off, last 3 scales", guidance_off_last=3),
    Option("guidance-free (cfg 0)", cfg=0.0),
    Option("hand-off, last scale", handoff_last=1),
    Option("hand-off, last 2 scales", handoff_last=2),
    Option("hand-off, last 3 scales", handoff_last=3),
    Option("hand-off and guidance off, last 2 scales", guidance_off_last=2, handoff_last=2),
    Option("top-k 64 on the last 2 scales", top_k_last=(2, 64)),
)


@dataclass
class SweepRow:
    option: str
    seconds: float  # median time of one `sample` call at the benchmark's shapes
    token_seconds: float  # of which the transformer (every scale's tokens drawn, before the decoder)
    speedup: float  # the default's time ÷ this (whole call)
    token_speedup: float  # the same for the transformer part
    accuracy: float  # digits: share classified as the requested class
    frechet_ratio: float  # digits: Fréchet distance to real test digits ÷ real train ↔ test


def time_option(
    vae, var, fine_var, option: Option, batch: int, runs: int, warmup: int, precision: str
) -> tuple[float, float]:
    """Median (whole call, transformer part) seconds; the transformer part ends at the last scale's tokens."""
    K, device = len(var.patch_nums), var.head.weight.device
    labels = torch.arange(batch, device=device) % var.num_classes
    whole, tokens, marks = [], [], {}

    def on_scale(si, f_hat):
        if si == K - 1:
            synchronize(device)
            marks["tokens"] = time.perf_counter()

    for i in range(warmup + runs):
        synchronize(device)
        started = time.perf_counter()
        sample(vae, var, labels, seed=i, precision=precision, on_scale=on_scale, **option.settings(K, fine_var))
        synchronize(device)
        if i >= warmup:
            whole.append(time.perf_counter() - started)
            tokens.append(marks["tokens"] - started)
    return statistics.median(whole), statistics.median(tokens)


def sweep(
    preset: str = "var-d16",
    fine_depth: int = 8,
    *,
    batch: int = 4,
    runs: int = 3,
    warmup: int = 1,
    precision: str = "fp32",
    device="cpu",
    n_per_class: int = 100,
    options=OPTIONS,
    progress: bool = True,
) -> list[SweepRow]:
    """Times every option on `preset` shapes (random weights; the hand-off's small model follows the released
    depth rule at `fine_depth`: width 64·depth, on the same scales) and measures it on the digits (with the
    shipped `digits-small`)."""
    from ..evaluation.digits import judge_digit_samples

    torch.manual_seed(0)
    vae, var = (m.to(device).eval() for m in build(preset))
    fine_config = replace(var.config, depth=fine_depth, embed_dim=64 * fine_depth, num_heads=fine_depth)
    fine_var = VAR(fine_config).to(device).eval()
    digits_vae, digits_var = load_model("digits", device=device)
    _, digits_small = load_model("digits-small", device=device)
    rows = []
    for option in options:
        seconds, token_seconds = time_option(vae, var, fine_var, option, batch, runs, warmup, precision)
        settings = option.settings(len(digits_var.patch_nums), digits_small)
        accuracy, ratio = judge_digit_samples(
            digits_vae, digits_var, n_per_class=n_per_class, progress=progress, **settings
        )
        rows.append(SweepRow(option.name, seconds, token_seconds, 0.0, 0.0, accuracy, ratio))
        if progress:
            print(
                f"{option.name}: {seconds:.2f} s ({token_seconds:.2f} s tokens), accuracy {accuracy:.1%}, "
                f"Fréchet ratio {ratio:.2f}",
                flush=True,
            )
    for row in rows:
        row.speedup, row.token_speedup = rows[0].seconds / row.seconds, rows[0].token_seconds / row.token_seconds
    return rows


def table(rows: list[SweepRow], preset: str, batch: int, precision: str, device) -> str:
    head = (
        f"| option | {preset}, batch {batch}, {precision}, {device}: whole sample s | speed-up | transformer s "
        "| speed-up | digits accuracy | digits Fréchet ratio |\n" + "| --- " * 7 + "|"
    )
    lines = [
        f"| {r.option} | {r.seconds:.2f} | {r.speedup:.2f}× | {r.token_seconds:.2f} | {r.token_speedup:.2f}× | "
        f"{r.accuracy:.1%} | {r.frechet_ratio:.2f} |"
        for r in rows
    ]
    return "\n".join([head, *lines])


def as_dicts(rows: list[SweepRow]) -> list[dict]:
    return [asdict(r) for r in rows]
