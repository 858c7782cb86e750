"""The machine: device names, precisions, compile backends, and how the CPU allocator treats freed memory."""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import resource
import sys
import threading
from contextlib import contextmanager

from .errors import NextscaleError, SettingError

PRECISIONS = ("fp32", "bf16")
TRAIN_PRECISIONS = ("fp32", "bf16", "fp16")  # training adds fp16 with a loss scaler, as the reference

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_INT_MAX = 2**31 - 1  # mallopt takes a C int
# Where glibc's own adjustment settles once the program has freed one block of 32 MiB (the largest threshold it
# ever picks on 64-bit systems): what the scoped setting below restores.
_GLIBC_SETTLED_MMAP, _GLIBC_SETTLED_TRIM = 32 * 2**20, 64 * 2**20
_reusing = False
_scoped_depth = 0  # how many `freed_memory_reused` blocks are open, in all threads
_lock = threading.Lock()
_libc = None


def resolve_device(name: str | None = "auto"):
    """ "auto" (CUDA where present), "cpu", "cuda", "cuda:1", "mps" … → a torch.device that exists here."""
    import torch

    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise NextscaleError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise NextscaleError(f"device {name}: CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise NextscaleError(f"device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise NextscaleError(f"device {name}: MPS is not available on this machine")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise NextscaleError(f"device {name}: nextscale runs on cpu, cuda or mps")
    return device


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise NextscaleError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def check_compile_backend(backend: str | None) -> str | None:
    """None, or a `torch.compile` backend this torch knows ("inductor", "cudagraphs", "eager" …)."""
    if backend is None:
        return None
    import torch._dynamo

    known = sorted(set(torch._dynamo.list_backends(exclude_tags=())))
    if backend not in known:
        raise NextscaleError(f"unknown torch.compile backend {backend!r}; this torch has {', '.join(known)}")
    return backend


def is_int(value) -> bool:
    """A Python or numpy integer, and not a bool."""
    import numpy as np

    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def check_finite(value: float, what: str, low: float = -math.inf, high: float = math.inf, *, open_high=False):
    """A finite number within [low, high] (or [low, high) with `open_high`). `what` names the parameter: the
    command line rewords the error with its flag."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SettingError(what, f"must be a finite number, got {value!r}")
    if value < low or value > high or (open_high and value == high):
        upper = f"{high:g})" if open_high else f"{high:g}]"
        raise SettingError(what, f"must lie in [{low:g}, {upper}, got {value:g}")
    return value


def _mallopt():
    global _libc
    if _libc is None:
        if not sys.platform.startswith("linux"):
            return None
        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _libc.mallopt.argtypes, _libc.mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
            _libc.malloc_trim.argtypes, _libc.malloc_trim.restype = (ctypes.c_size_t,), ctypes.c_int
        except (OSError, AttributeError):  # musl and other allocators have no mallopt
            _libc = False
    return _libc or None


def _set_thresholds(mmap: int, trim: int) -> bool:
    libc = _mallopt()
    return (
        libc is not None and bool(libc.mallopt(_M_MMAP_THRESHOLD, mmap)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, trim))
    )


def reuse_freed_memory() -> bool:
    """Lets glibc keep freed blocks for the next allocation instead of handing them back to the kernel, for the
    rest of the process.

    By default glibc maps every block above 32 MiB afresh and unmaps it when freed, so each new activation of
    that size (the decoder's, the finest scales') pays a page fault for every 4 KiB page it touches: about
    1.8 million faults and 4 s of a 29.6 s var-d16 sample (batch 4, 2 cores) in our measurements. The price is
    memory: the process stays at its peak instead of shrinking between calls, and in the same measurement the
    peak itself rose from 4.16 to 4.64 GiB (kept blocks do not always fit the next request). `sample` does the
    same for the length of each call on its own (`freed_memory_reused`). Returns whether the setting is in
    effect (only glibc's allocator has it).
    """
    global _reusing
    _reusing = _reusing or _set_thresholds(_INT_MAX, _INT_MAX)
    return _reusing


def reusing_freed_memory() -> bool:
    """Whether `reuse_freed_memory` is in effect in this process."""
    return _reusing


@contextmanager
def freed_memory_reused():
    """`reuse_freed_memory` for the length of a block; after it, what was kept goes back to the system.

    When the last such block (of any thread) ends, the thresholds are set to where glibc's own adjustment
    settles once a program has freed a 32 MiB block (mmap above 32 MiB, trim above 64 MiB; any var-d16 sample
    frees many), and kept memory is trimmed. Two things do outlast the block: glibc stops adjusting those
    thresholds by itself, and `MALLOC_MMAP_THRESHOLD_` / `MALLOC_TRIM_THRESHOLD_` set in the environment are
    overridden. Does nothing where the process already reuses freed memory, or off glibc.
    """
    global _scoped_depth
    with _lock:
        enter = not _reusing and (_scoped_depth > 0 or _set_thresholds(_INT_MAX, _INT_MAX))
        _scoped_depth += enter
    try:
        yield
    finally:
        if enter:
            with _lock:
                _scoped_depth -= 1
                if _scoped_depth == 0 and not _reusing:
                    _set_thresholds(_GLIBC_SETTLED_MMAP, _GLIBC_SETTLED_TRIM)
                    _mallopt().malloc_trim(0)


def peak_memory_bytes(device) -> int:
    """Peak since `bench.reset_peak_memory` (else the process's life): allocated tensors on GPU, the resident
    set on CPU."""
    if device.type == "cuda":
        import torch

        return torch.cuda.max_memory_allocated(device)
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # the whole life; Linux reports KiB


def versions(*extra: str) -> dict:
    """What a run's record names: nextscale, torch, numpy, Python, and the `extra` packages installed."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    import numpy
    import torch

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:  # run from a source tree that was never installed
            return "unknown"

    found = {
        "nextscale": installed("nextscale"),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }
    return found | {name: installed(name) for name in extra}


def count_flops(fn) -> int:
    """The FLOPs `fn()` runs, by torch's FlopCounterMode, with the CPU flash-attention kernels counted as the CUDA
    ones are (torch's counter knows the CUDA attention kernels only: on CPUs attention would count as free)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

    def forward(query, key, value, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query, key, value)

    def backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
        return sdpa_backward_flop_count(grad_out, query, key, value)

    uncounted = {
        torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: forward,
        torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: backward,
    }
    with FlopCounterMode(display=False, custom_mapping=uncounted) as counter:
        fn()
    return counter.get_total_flops()
