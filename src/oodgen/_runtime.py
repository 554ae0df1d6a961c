"""Process-level performance settings applied by the command-line entry points.

glibc's malloc returns every large block (> 128 KiB by default) to the kernel with munmap and
maps fresh zeroed pages for the next one.  PyTorch on the CPU allocates and frees activation
buffers of several MB every step, so a training loop spends a large share of its time in page
faults (seen as ~50 % system time).  Raising the mmap and trim thresholds keeps those blocks in
the heap; measured 1.5x faster classifier steps and 2.6x faster Type I generation on 2 cores
(benchmarks/RESULTS.md).  Set OODGEN_NO_MALLOPT=1 to leave malloc alone.
"""
from __future__ import annotations

import ctypes
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_applied = False


def tune_allocator() -> bool:
    """Apply the malloc thresholds once per process; returns whether they are in effect."""
    global _applied
    if _applied:
        return True
    if os.environ.get("OODGEN_NO_MALLOPT") or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, 1 << 31) == 1
    except (OSError, AttributeError):
        return False
    _applied = ok
    return ok
