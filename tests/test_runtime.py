"""`runtime.py`: the CPU allocator keeps freed memory for reuse, and peak memory is measured from its reset."""

import os
import subprocess
import sys

import pytest


def numbers_printed_by(script: str) -> list[int]:
    """Runs `script` in a fresh interpreter: memory settings and peaks are per process."""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    return [int(word) for word in out.split()]


FAULTS_SCRIPT = """
import resource, torch
from nextscale.runtime import freed_memory_reused, reuse_freed_memory
def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        torch.ones(64 * 2**20 // 4)  # 64 MiB: above glibc's mmap threshold, touched by the fill
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults()
default = faults()
with freed_memory_reused():
    faults()
    scoped = min(faults() for _ in range(3))
after = faults()  # the scope has ended: large blocks are unmapped again
available = reuse_freed_memory() and reuse_freed_memory()
print(int(available), default, scoped, after, min(faults() for _ in range(3)))  # first rounds may grow the heap
"""


@pytest.mark.cpu_only
def test_reuse_freed_memory_stops_page_faults_on_large_blocks():
    available, default, scoped, after, reused = numbers_printed_by(FAULTS_SCRIPT)
    if not available:
        pytest.skip("this C library has no mallopt (not glibc): freed memory cannot be kept for reuse")
    assert default >= 5 * 32  # at least every 2 MiB (huge) page of every block faulted; 16,000 with 4 KiB pages
    assert reused < default / 20 and scoped < default / 20
    assert after > 10 * max(scoped, 1)  # after the block, the kept memory went back: touching it faults again


@pytest.mark.cpu_only
@pytest.mark.skipif(
    not os.access("/proc/self/clear_refs", os.W_OK), reason="no /proc/self/clear_refs to reset the peak"
)
@pytest.mark.slow
def test_peak_memory_is_measured_from_the_reset():
    script = """
import torch
from nextscale.bench import peak_memory_bytes, reset_peak_memory
cpu = torch.device("cpu")
block = torch.ones(512 * 2**20 // 4)
del block
before = peak_memory_bytes(cpu)
reset_peak_memory(cpu)
low = peak_memory_bytes(cpu)  # the 512 MiB block was unmapped when freed: not in the new peak
block = torch.ones(256 * 2**20 // 4)
print(before, low, peak_memory_bytes(cpu))
"""
    before, low, high = numbers_printed_by(script)
    assert before >= low + 400 * 2**20 and high >= low + 200 * 2**20
