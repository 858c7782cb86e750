"""`nextscale bench --orders`: what an image costs by next-scale prediction (VAR) and by next-token prediction in
raster order (the baseline), at the same transformer size, as the latent grid grows (the time column of the
paper's Table 1 and its steps and FLOPs claims, measured).

Both orders draw with the default sampler settings from random weights (cost does not depend on them), and both
decode with the same tokenizer decoder, whose time is included: what a user waits for. VAR's pyramid for an
n×n latent is the reference's 256 px schedule (or its 512 px one) up to n; the raster model's map is n×n.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, replace

import torch

from ..errors import NextscaleError
from ..registry import RELEASED_WIDTH_PER_DEPTH, architecture
from ..runtime import count_flops
from ..sampling import sample
from ..sampling.draws import fhat_to_images
from ..tokenizer import PATCH_NUMS_256, PATCH_NUMS_512, VQVAE
from ..transformer import VAR, RasterAR, RasterConfig, VARConfig
from .measure import cpu_times, machine_name, steal_fraction, synchronize


@dataclass
class OrderCost:
    order: str
    latent: int
    batch_size: int
    forward_passes: int  # passes through the block stack (a guided pass runs both halves of the batch at once)
    gflop_per_image: float  # the whole sample call, decoder included
    seconds_per_image: float  # the median whole sample call ÷ the batch
    decode_seconds_per_image: float
    decode_gflop_per_image: float


def pyramid(latent: int) -> tuple[int, ...]:
    """VAR's scales for an n×n latent: a reference schedule up to n."""
    for schedule in (PATCH_NUMS_256, PATCH_NUMS_512):
        if latent in schedule:
            return schedule[: schedule.index(latent) + 1]
    sizes = sorted(set(PATCH_NUMS_256) | set(PATCH_NUMS_512))
    raise NextscaleError(f"no reference pyramid ends at {latent}×{latent}; choose from {', '.join(map(str, sizes))}")


def models(preset: str, latent: int, depth: int | None, width_per_depth: int, device):
    """{order: (tokenizer, transformer)} of one size at one latent size, with random weights: the preset's
    tokenizer (with VAR's pyramid, or the single n×n scale) and transformer blocks (or `depth`'s rule), the
    raster model's blocks equal to VAR's."""
    vae_config, var_config = architecture(preset)
    scales = pyramid(latent)
    if depth is None:
        var_config = replace(var_config, patch_nums=scales)
    else:  # as `train --depth` builds it on this tokenizer
        shapes = {k: getattr(var_config, k) for k in ("num_classes", "vocab_size", "latent_channels")}
        var_config = VARConfig.from_depth(depth, width_per_depth, **shapes, patch_nums=scales)
    shared = {k: v for k, v in asdict(var_config).items() if k in RasterConfig.__dataclass_fields__}
    raster_config = RasterConfig(**{**shared, "grid": latent})
    return {
        "VAR": (
            VQVAE(replace(vae_config, patch_nums=scales), device=device).eval(),
            VAR(var_config, device=device).eval(),
        ),
        "raster": (
            VQVAE(replace(vae_config, patch_nums=(latent,)), device=device).eval(),
            RasterAR(raster_config, device=device).eval(),
        ),
    }


def measure(vae, model, batch_size: int, runs: int, warmup: int, seed: int = 0) -> dict:
    """Forward passes, FLOPs and median seconds of one `sample` call (default settings, fp32)."""
    device = next(model.parameters()).device
    labels = [i % model.num_classes for i in range(batch_size)]
    passes = []
    hook = model.blocks[0].register_forward_pre_hook(lambda *_: passes.append(1))
    try:
        flops = count_flops(lambda: sample(vae, model, labels, seed=seed))
        forward_passes = len(passes)
    finally:
        hook.remove()
    seconds = []
    for i in range(warmup + runs):
        synchronize(device)
        started = time.perf_counter()
        sample(vae, model, labels, seed=seed)
        synchronize(device)
        if i >= warmup:
            seconds.append(time.perf_counter() - started)
    return {"forward_passes": forward_passes, "flops": flops, "seconds": statistics.median(seconds)}


def decode_cost(vae, latent: int, batch_size: int, runs: int, device) -> tuple[float, int]:
    """Median seconds and FLOPs of decoding a batch's n×n f̂ to images, the step both samplers end with."""
    f_hat = torch.zeros(batch_size, vae.config.z_channels, latent, latent, device=device)
    warmup, times = 2, []
    with torch.no_grad():
        flops = count_flops(lambda: fhat_to_images(vae, f_hat))
        for _ in range(warmup + max(runs, 5)):  # cheap, so timed more often than a whole sample
            synchronize(device)
            started = time.perf_counter()
            fhat_to_images(vae, f_hat)
            synchronize(device)
            times.append(time.perf_counter() - started)
    return statistics.median(times[warmup:]), flops


def bench_orders(
    preset: str = "fashion",
    *,
    latents=(8, 16),
    batch_sizes=(1, 64),
    depth: int | None = None,
    width_per_depth: int = RELEASED_WIDTH_PER_DEPTH,
    runs: int = 3,
    warmup: int = 1,
    device="cpu",
    log=None,
) -> dict:
    device = torch.device(device)
    torch.manual_seed(0)
    rows: list[OrderCost] = []
    started = cpu_times()
    for latent in latents:
        pairs = models(preset, latent, depth, width_per_depth, device)
        for batch_size in batch_sizes:
            decode, decode_flops = decode_cost(pairs["VAR"][0], latent, batch_size, runs, device)
            for order, (vae, model) in pairs.items():
                if log:
                    log(f"{order}, {latent}×{latent} latent, batch {batch_size}")
                m = measure(vae, model, batch_size, runs, warmup)
                rows.append(
                    OrderCost(
                        order=order,
                        latent=latent,
                        batch_size=batch_size,
                        forward_passes=m["forward_passes"],
                        gflop_per_image=m["flops"] / batch_size / 1e9,
                        seconds_per_image=m["seconds"] / batch_size,
                        decode_seconds_per_image=decode / batch_size,
                        decode_gflop_per_image=decode_flops / batch_size / 1e9,
                    )
                )
        parameters = {order: _count(model) for order, (_, model) in pairs.items()}
    return {
        "preset": preset,
        "depth": depth,
        "width_per_depth": width_per_depth if depth is not None else None,
        "parameters": parameters,
        "device": str(device),
        "machine": machine_name(device),
        "rows": [asdict(r) for r in rows],
        "cpu_steal": steal_fraction(started, cpu_times()),
    }


def _count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def table(result: dict) -> str:
    size = f"depth {result['depth']}" if result["depth"] is not None else f"{result['preset']}'s transformer blocks"
    params = ", ".join(f"{k} {v / 1e6:.2f}M" for k, v in result["parameters"].items())
    lines = [
        f"nextscale bench --orders: {result['preset']} tokenizer, {size} (parameters at the last latent: {params}), "
        f"{result['device']} ({result['machine']}), fp32, default sampler settings",
        *(
            [f"the host took {result['cpu_steal']:.0%} of this machine's CPU time meanwhile (steal)"]
            if result.get("cpu_steal")
            else []
        ),
        f"{'latent':<8}{'batch':>6}{'order':>8}{'passes':>8}{'GFLOP/img':>11}{'(decode)':>10}{'ms/img':>10}{'(decode)':>10}"
        f"{'raster÷VAR':>12}",
    ]
    by_key = {(r["latent"], r["batch_size"], r["order"]): r for r in result["rows"]}
    for r in result["rows"]:
        var = by_key[(r["latent"], r["batch_size"], "VAR")]
        ratio = f"{r['seconds_per_image'] / var['seconds_per_image']:.2f}×" if r["order"] == "raster" else ""
        lines.append(
            f"{r['latent']}×{r['latent']:<5}{r['batch_size']:>6}{r['order']:>8}{r['forward_passes']:>8}"
            f"{r['gflop_per_image']:>11.3f}{r['decode_gflop_per_image']:>10.3f}{r['seconds_per_image'] * 1e3:>10.2f}"
            f"{r['decode_seconds_per_image'] * 1e3:>10.2f}{ratio:>12}"
        )
    return "\n".join(lines)
