"""Benchmarks: sampling and training against the hardware's floor (`sampling`), and loading (`loading`)."""

from .sampling import (
    BenchResult,
    Phase,
    bench_sampling,
    bench_training,
    count_flops,
    matmul_rate,
    peak_memory_bytes,
    reset_peak_memory,
)

__all__ = [
    "BenchResult",
    "Phase",
    "bench_sampling",
    "bench_training",
    "count_flops",
    "matmul_rate",
    "peak_memory_bytes",
    "reset_peak_memory",
]
