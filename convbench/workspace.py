"""Workspace allocation through one helper, and the memory limit every algorithm respects.

Algorithms allocate their scratch arrays with :func:`empty` / :func:`zeros` (NumPy, so
tracemalloc sees them) rather than inside Numba, where the allocation would be invisible to
the harness's memory measurement.
"""
from __future__ import annotations

import os
import time

import numpy as np

from . import settings

ENV_LIMIT = "CONVBENCH_MAX_WORKSPACE"
_AVAILABLE_TTL_S = 0.25  # how long one reading of the available memory is reused
_available: tuple[float, int] = (-1.0, 0)


def empty(shape, dtype) -> np.ndarray:
    """Uninitialised workspace array (counted by tracemalloc)."""
    return np.empty(shape, dtype=dtype)


def zeros(shape, dtype) -> np.ndarray:
    """Zero-filled workspace array (counted by tracemalloc)."""
    return np.zeros(shape, dtype=dtype)


def nbytes(shape, dtype) -> int:
    """Bytes of an array of this shape and dtype."""
    count = 1
    for extent in shape:
        count *= int(extent)
    return count * np.dtype(dtype).itemsize


def available_memory() -> int:
    """Available physical memory in bytes (MemAvailable on Linux, else total pages); one
    reading serves calls within a quarter of a second (reading it costs more than a small
    convolution)."""
    global _available
    now = time.monotonic()
    if now - _available[0] < _AVAILABLE_TTL_S:
        return _available[1]
    value = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    value = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if value is None:
        value = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    _available = (now, value)
    return value


def max_workspace_bytes() -> int:
    """The workspace limit: ``CONVBENCH_MAX_WORKSPACE`` (bytes, or with K/M/G suffix), else
    half of the memory available now."""
    explicit = settings.byte_count(ENV_LIMIT)
    return available_memory() // 2 if explicit is None else explicit
