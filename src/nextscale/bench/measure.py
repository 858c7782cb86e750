"""What every benchmark measures with: the matrix-multiply rate (the yardstick of each FLOP floor), device
synchronisation, the peak-memory reset and the machine's name. (FLOPs are counted by `runtime.count_flops`.)"""

from __future__ import annotations

import platform
import time

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rate(device: torch.device, dtype: torch.dtype, size: int = 2048, seconds: float = 1.0) -> float:
    """Sustained FLOP/s of a large square matmul: the yardstick of every floor."""
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


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # Linux: writing 5 resets the resident-set high-water mark (VmHWM)
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def machine_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def cpu_times() -> tuple[int, int] | None:
    """(stolen, total) jiffies of all CPUs so far, from Linux's /proc/stat (None elsewhere). On a virtual machine
    the host may run other guests on our cores; "steal" is the time it took, which slows every timing alike."""
    try:
        with open("/proc/stat") as fh:
            fields = [int(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return (fields[7] if len(fields) > 7 else 0), sum(fields[:8])


def steal_fraction(start: tuple[int, int] | None, end: tuple[int, int] | None) -> float | None:
    """The share of CPU time the host took between two `cpu_times()` readings."""
    if start is None or end is None or end[1] <= start[1]:
        return None
    return (end[0] - start[0]) / (end[1] - start[1])
