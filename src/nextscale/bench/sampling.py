"""`nextscale bench`: how close sampling and training come to what the hardware allows.

For each phase it reports the measured time, the FLOPs it performed (torch's FlopCounterMode), the floor
(FLOPs ÷ the machine's matrix-multiply rate, measured in the same run: fp32 on CPU, bf16 on GPU) and the
ratio time ÷ floor. Warm-up runs come first; medians of the timed runs are reported.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from ..registry import SAMPLER, build
from ..runtime import peak_memory_bytes, reuse_freed_memory, reusing_freed_memory
from ..sampling import sample


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rate(device: torch.device, dtype: torch.dtype, size: int = 2048, seconds: float = 1.0) -> float:
    """Sustained FLOP/s of a large square matmul: the yardstick for every floor below."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    synchronize(device)
    n, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        a @ b
        n += 1
        if n % 8 == 0:
            synchronize(device)
    synchronize(device)
    return 2 * size**3 * n / (time.perf_counter() - started)


def _cpu_flash_attention_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def _cpu_flash_attention_backward_flops(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


# torch's counter knows the CUDA attention kernels only; on CPU, attention would count as free.
_UNCOUNTED_BY_TORCH = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_attention_flops,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_flash_attention_backward_flops,
}


def count_flops(fn) -> int:
    with FlopCounterMode(display=False, custom_mapping=_UNCOUNTED_BY_TORCH) as counter:
        fn()
    return counter.get_total_flops()


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # Linux: writing 5 resets the resident-set high-water mark (VmHWM)
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


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
                f"tokens/s, {t['flops'] / 1e9:.1f} GFLOP, floor {t['floor_seconds']:.3f} s, ratio {t['ratio']:.2f}"
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
    itself; the result says which was measured).
    """
    device = torch.device(device)
    precision = precision or ("bf16" if device.type == "cuda" else "fp32")
    if reuse_memory:
        reuse_freed_memory()
    torch.manual_seed(seed)
    vae, var = build(preset, device=device)
    vae.eval()
    var.eval()
    settings = dict(cfg=SAMPLER.cfg, top_k=SAMPLER.top_k, top_p=SAMPLER.top_p, precision=precision, compile=compile)
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
    training = bench_training(var, train_batch_size, device, precision, rate) if train_batch_size else None
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
        settings={k: v for k, v in settings.items() if k not in ("precision", "compile")},
        training=training,
        reuse_freed_memory=reusing_freed_memory(),
    )


def bench_training(var, batch_size: int, device: torch.device, precision: str, rate: float, runs: int = 3) -> dict:
    """One optimizer step (forward, cross-entropy, backward, AdamW) on random tokens."""
    cfg = var.config
    var.train()
    opt = torch.optim.AdamW(var.parameters(), lr=1e-4, betas=(0.9, 0.95), fused=device.type == "cuda")
    labels = torch.randint(cfg.num_classes, (batch_size,), device=device)
    x = torch.randn(batch_size, cfg.num_tokens - 1, cfg.latent_channels, device=device)
    target = torch.randint(cfg.vocab_size, (batch_size, cfg.num_tokens), device=device)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits = var(labels, x)
        loss = torch.nn.functional.cross_entropy(logits.float().view(-1, cfg.vocab_size), target.view(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    times = []
    for _ in range(runs):
        synchronize(device)
        started = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - started)
    flops = count_flops(step)
    var.eval()
    seconds = statistics.median(times)
    return {
        "batch_size": batch_size,
        "seconds": seconds,
        "tokens_per_second": batch_size * cfg.num_tokens / seconds,
        "flops": flops,
        "floor_seconds": flops / rate,
        "ratio": seconds / (flops / rate),
    }


def machine_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
