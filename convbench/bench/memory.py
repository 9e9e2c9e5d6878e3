"""Measured memory: the peak of extra host bytes during one call, seen by tracemalloc.

NumPy reports its allocations to tracemalloc, and convbench's algorithms allocate all workspace
through NumPy (``convbench.workspace``), so the peak minus the returned output is the real
workspace. Allocations inside compiled libraries (pocketfft's, OpenBLAS's or oneDNN's internal
scratch, Numba's runtime) are not seen: a peer's measured figure is a lower bound.
"""
from __future__ import annotations

import tracemalloc
from typing import Callable

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
