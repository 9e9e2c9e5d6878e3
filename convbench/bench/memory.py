"""Measured memory: the peak of extra host bytes during one call, seen by tracemalloc, and the
page faults one call takes.

NumPy reports its allocations to tracemalloc, and convbench's algorithms allocate all workspace
through NumPy (``convbench.workspace``), so the peak minus the returned output is the real
workspace. Allocations inside compiled libraries (pocketfft's, OpenBLAS's or oneDNN's internal
scratch, Numba's runtime) are not seen: a peer's measured figure is a lower bound.

Page faults are counted for every algorithm, peers included: a block above glibc's 32 MiB
mmap ceiling is mapped afresh on every call, so a call whose output or scratch is that large
pays the kernel for zeroing its pages each time. NumPy asks for huge pages on large arrays and
torch's CPU allocator does not: on N8 C16 112x112 K96 1x1 (a 38.5 MB output) torch took
18 818 faults per call and ours 0-211, and torch's time for that layer read 5.4 to 25 ms
between runs (2-core AVX2 EPYC). The count says when a time is that.
"""
from __future__ import annotations

import tracemalloc
from typing import Callable

try:
    import resource
except ImportError:  # not on Windows
    resource = None

import numpy as np


def peak_extra_host_bytes(fn: Callable[[], object]) -> int:
    """Peak traced bytes during ``fn()`` beyond what was live before, minus its output array."""
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    out = fn()
    peak = tracemalloc.get_traced_memory()[1] - before
    if not was_tracing:
        tracemalloc.stop()
    out_bytes = out.nbytes if isinstance(out, np.ndarray) else 0
    return max(0, peak - out_bytes)


def page_faults(fn: Callable[[], object]) -> int | None:
    """Page faults (minor and major) of this process during one call of ``fn``; None where
    the platform does not count them. A warm call of a kernel that reuses its memory takes
    none."""
    if resource is None:
        return None
    before = resource.getrusage(resource.RUSAGE_SELF)
    fn()
    after = resource.getrusage(resource.RUSAGE_SELF)
    return (after.ru_minflt - before.ru_minflt) + (after.ru_majflt - before.ru_majflt)
