"""Benchmarks: sampling and training against the hardware's floor (`sampling`, `training`), and loading
(`loading`); `measure` holds what they measure with."""

from ..runtime import count_flops, peak_memory_bytes
from .measure import matmul_rate, reset_peak_memory
from .sampling import BenchResult, Phase, bench_sampling
from .training import bench_train_step

__all__ = [
    "BenchResult",
    "Phase",
    "bench_sampling",
    "bench_train_step",
    "count_flops",
    "matmul_rate",
    "peak_memory_bytes",
    "reset_peak_memory",
]
