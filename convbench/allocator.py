"""Keep glibc from handing workspace back to the kernel between calls.

By default glibc serves large allocations with fresh mmap'd pages and trims freed heap, and it
moves both thresholds as the process runs, so whether a call's workspace arrives already mapped
or page-faults in anew depends on what ran before it. Measured on the project's 2-core machine:
the FFT convolution of one 512x512 channel took 4.1 ms in one state and 1.3 ms in the other,
and N8 C3 28x28 K32 21x21 1.4 vs 0.7 ms, flipping between runs of the same sweep. Fixing the
thresholds (blocks up to 32 MiB from the heap; freed heap kept up to 256 MiB) makes repeated
calls as fast as their steady state, for our algorithms and the peers alike.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed value on 64-bit
TRIM_THRESHOLD = 256 << 20
ENV = "CONVBENCH_STEADY_MALLOC"


def steady_malloc() -> bool:
    """Fix glibc's mmap and trim thresholds (once; a no-op off glibc, or with
    CONVBENCH_STEADY_MALLOC=0). True when they were set."""
    if os.environ.get(ENV, "1") in ("0", ""):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl without mallopt)
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
