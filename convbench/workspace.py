"""Workspace allocation through one helper, and the memory limit every algorithm respects.

Algorithms allocate their scratch arrays with :func:`empty` / :func:`zeros` (NumPy, so
tracemalloc sees them) rather than inside Numba, where the allocation would be invisible to
the harness's memory measurement.

Large arrays start on a cache line. NumPy only promises 16 bytes (an mmapped block starts 16
bytes past its page), so the same call's scratch landed on or off a 64-byte boundary from one
call to the next; every AVX-512 load and store of a misaligned array spans two lines, and on
the project's machine Winograd's input transform ran twice as slow into such a block.
Small arrays keep NumPy's own allocation: finding an address costs about a microsecond.
"""
from __future__ import annotations

import os
import time

import numpy as np

from . import settings

ENV_LIMIT = "CONVBENCH_MAX_WORKSPACE"
_AVAILABLE_TTL_S = 0.25  # how long one reading of the available memory is reused
_available: tuple[float, int] = (-1.0, 0)


ALIGN_BYTES = 64  # a cache line, and one AVX-512 vector
ALIGN_FROM_BYTES = 1 << 16  # arrays this large or larger start on a cache line


def _placed(arr: np.ndarray) -> bool:
    """Whether NumPy's own allocation will do: small, or already on a cache line."""
    return arr.nbytes < ALIGN_FROM_BYTES or arr.ctypes.data % ALIGN_BYTES == 0


def empty(shape, dtype) -> np.ndarray:
    """Uninitialised workspace array (counted by tracemalloc), on a cache line if large."""
    arr = np.empty(shape, dtype=dtype)
    if _placed(arr):
        return arr
    shape = arr.shape
    del arr  # before the padded block, so the peak does not hold both
    return aligned_empty(shape, dtype)


def aligned_empty(shape, dtype) -> np.ndarray:
    """Uninitialised C-contiguous array whose first element starts on a cache line."""
    dtype = np.dtype(dtype)
    size = nbytes(shape, dtype)
    raw = np.empty(size + ALIGN_BYTES, dtype=np.uint8)
    start = -raw.ctypes.data % ALIGN_BYTES
    return raw[start:start + size].view(dtype).reshape(shape)


def zeros(shape, dtype) -> np.ndarray:
    """Zero-filled workspace array (counted by tracemalloc), on a cache line if large."""
    arr = np.zeros(shape, dtype=dtype)  # calloc: pages zeroed by the system as first touched
    if _placed(arr):
        return arr
    shape = arr.shape
    del arr
    arr = aligned_empty(shape, dtype)
    arr.fill(0)
    return arr


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
