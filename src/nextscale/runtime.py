"""Process-wide settings for fast CPU inference (opt-in for library users; the `nextscale` command sets them)."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_INT_MAX = 2**31 - 1  # mallopt takes a C int
_reusing = False


def reuse_freed_memory() -> bool:
    """Lets glibc keep freed blocks for the next allocation instead of handing them back to the kernel.

    By default glibc maps every block above 32 MiB afresh and unmaps it when freed, so each new activation of
    that size (the decoder's, the finest scales') pays a page fault for every 4 KiB page it touches: about
    1.8 million faults and 4 s of a 29.6 s var-d16 sample (batch 4, 2 cores) in our measurements. The price is
    memory: the process stays at its peak instead of shrinking between calls, and in the same measurement the
    peak itself rose from 4.16 to 4.64 GiB (kept blocks do not always fit the next request).
    Returns whether the setting is in effect (only glibc's allocator has it).
    """
    global _reusing
    if _reusing:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other allocators have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    _reusing = bool(mallopt(_M_MMAP_THRESHOLD, _INT_MAX)) and bool(mallopt(_M_TRIM_THRESHOLD, _INT_MAX))
    return _reusing


def reusing_freed_memory() -> bool:
    """Whether `reuse_freed_memory` is in effect in this process."""
    return _reusing
