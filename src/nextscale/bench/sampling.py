"""`nextscale bench`: how close sampling and training come to what the hardware allows.

For each phase it reports the measured time, the FLOPs it performed (torch's FlopCounterMode), the floor
(FLOPs ÷ the machine's matrix-multiply rate, measured in the same run: fp32 on CPU, bf16 on GPU) and the
ratio time ÷ floor. Warm-up runs come first; medians of the timed runs are reported.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass, field

import torch

from ..distributed import Distributed
from ..registry import build
from ..runtime import count_flops, peak_memory_bytes, reuse_freed_memory, reusing_freed_memory
from ..sampling import sample
from ..sampling.settings import DEFAULTS as SAMPLER_DEFAULTS
from ..training.common import check_training_device
from .measure import machine_name, matmul_rate, reset_peak_memory, synchronize
from .training import bench_train_step


@dataclass
class Phase:
    name: str
    seconds: float
    flops: int
    floor_seconds: float

    @property
    def ratio(self) -> float:
        return self.seconds / self.floor_seconds if self.floor_seconds else float("inf")


@dataclass
class BenchResult:
    preset: str
    device: str
    machine: str
    precision: str
    batch_size: int
    compile: str | None
    matmul_tflops: float
    phases: list[Phase]
    per_scale_seconds: list[float]
    images_per_second: float
    peak_memory_gib: float
    settings: dict = field(default_factory=dict)
    training: dict | None = None
    reuse_freed_memory: bool = False

    def to_json(self) -> str:
        record = asdict(self)
        for phase, src in zip(record["phases"], self.phases):
            phase["ratio"] = src.ratio
        return json.dumps(record, indent=2)

    def table(self) -> str:
        lines = [
            f"nextscale bench: {self.preset}, batch {self.batch_size}, {self.precision}, {self.device} "
            f"({self.machine}), compile={self.compile}, reuse freed memory={self.reuse_freed_memory}",
            f"matmul rate {self.matmul_tflops * 1000:.1f} GFLOP/s (median); {self.images_per_second:.3f} images/s; "
            f"peak memory while sampling {self.peak_memory_gib:.2f} GiB",
            f"{'phase':<20}{'time s':>10}{'GFLOP':>12}{'floor s':>10}{'ratio':>8}",
        ]
        for p in self.phases:
            lines.append(f"{p.name:<20}{p.seconds:>10.3f}{p.flops / 1e9:>12.1f}{p.floor_seconds:>10.3f}{p.ratio:>8.2f}")
        lines.append("per scale (s): " + " ".join(f"{t:.3f}" for t in self.per_scale_seconds))
        if self.training:
            t = self.training
            lines.append(
                f"training step (batch {t['batch_size']}): {t['seconds']:.3f} s, {t['tokens_per_second']:.0f} "
                f"tokens/s, {t['flops'] / 1e9:.1f} GFLOP, floor {t['floor_seconds']:.3f} s, ratio {t['ratio']:.2f}, "
                f"peak memory {t['peak_memory_gib']:.2f} GiB"
            )
        return "\n".join(lines)


def bench_sampling(
    preset: str = "var-d16",
    *,
    batch_size: int = 4,
    device="cpu",
    precision: str | None = None,
    compile: str | None = None,
    runs: int = 3,
    warmup: int = 1,
    train_batch_size: int = 0,
    seed: int = 0,
    reuse_memory: bool = True,
) -> BenchResult:
    """Times the sampler with random weights (speed does not depend on them), guidance on, top-k 900, top-p 0.96.

    The matmul rate is measured before every timed run and the median is used, so that a noisy machine slows
    the yardstick and the runs alike. `reuse_memory` applies `nextscale.runtime.reuse_freed_memory` first, as
    the `nextscale` command does (False leaves the allocator as glibc sets it, in the process and in `sample`
    itself; the result says which was measured). `train_batch_size` > 0 adds the training step of
    `nextscale bench --train` in this process: `runs` timed steps of the trainer's own step at that batch.
    """
    device = torch.device(device)
    precision = precision or ("bf16" if device.type == "cuda" else "fp32")
    if train_batch_size:  # refused now, not after minutes of sampling
        check_training_device(device, precision)
    if reuse_memory:
        reuse_freed_memory()
    # The sampling models are gone once it returns: the training step builds its own, as training does.
    result = _time_sampling(preset, batch_size, device, precision, compile, runs, warmup, seed, reuse_memory)
    if train_batch_size:
        result.training = _training_step(preset, train_batch_size, device, precision, runs, seed)
    return result


def _time_sampling(preset, batch_size, device, precision, compile, runs, warmup, seed, reuse_memory) -> BenchResult:
    torch.manual_seed(seed)
    vae, var = build(preset, device=device)
    vae.eval()
    var.eval()
    settings = dict(precision=precision, compile=compile)  # the default sampler otherwise
    labels = list(range(batch_size))
    matmul_dtype = torch.bfloat16 if precision == "bf16" else torch.float32

    marks: list[float] = []

    def on_scale(si: int, f_hat) -> None:
        synchronize(device)
        marks.append(time.perf_counter())

    def one_run():
        marks.clear()
        synchronize(device)
        started = time.perf_counter()
        sample(vae, var, labels, seed=seed, on_scale=on_scale, reuse_memory=reuse_memory, **settings)
        synchronize(device)
        ended = time.perf_counter()
        per_scale = [b - a for a, b in zip([started, *marks[:-1]], marks)]
        return ended - started, per_scale, ended - marks[-1]

    for _ in range(warmup):
        one_run()
    reset_peak_memory(device)
    rates, results = [], []
    for _ in range(runs):
        rates.append(matmul_rate(device, matmul_dtype))
        results.append(one_run())
    rate = statistics.median(rates)
    total = statistics.median(r[0] for r in results)
    decode = statistics.median(r[2] for r in results)
    per_scale = [statistics.median(r[1][si] for r in results) for si in range(len(var.patch_nums))]
    memory = peak_memory_bytes(device)

    total_flops = count_flops(lambda: sample(vae, var, labels, seed=seed, **{**settings, "compile": None}))
    pn = var.patch_nums[-1]
    f_hat = torch.zeros(batch_size, vae.config.z_channels, pn, pn, device=device)
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        decode_flops = count_flops(lambda: vae.fhat_to_img(f_hat))
    steps_flops = total_flops - decode_flops
    phases = [
        Phase("transformer steps", total - decode, steps_flops, steps_flops / rate),
        Phase("decode", decode, decode_flops, decode_flops / rate),
        Phase("whole sample", total, total_flops, total_flops / rate),
    ]
    return BenchResult(
        preset=preset,
        device=str(device),
        machine=machine_name(device),
        precision=precision,
        batch_size=batch_size,
        compile=compile,
        matmul_tflops=rate / 1e12,
        phases=phases,
        per_scale_seconds=per_scale,
        images_per_second=batch_size / total,
        peak_memory_gib=memory / 2**30,
        settings=SAMPLER_DEFAULTS.record(),
        reuse_freed_memory=reusing_freed_memory(),
    )


def _training_step(preset: str, batch_size: int, device: torch.device, precision: str, runs: int, seed: int) -> dict:
    """`bench_train_step` in this process alone (even under torchrun), in the terms of the sampling table."""
    (r,) = bench_train_step(preset, batch_size, device, precision, steps=runs, warmup=1, seed=seed, dist=Distributed())
    return {
        "batch_size": r["batch_size"],
        "seconds": r["step_s"],
        "tokens_per_second": r["tokens_per_s"],
        "flops": r["flops"],
        "floor_seconds": r["floor_s"],
        "ratio": r["ratio"],
        "peak_memory_gib": r["peak_memory_gib"],
    }
