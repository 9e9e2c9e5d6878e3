"""Workspace allocation through one helper, and the memory limit every algorithm respects.

Algorithms allocate their scratch arrays with :func:`empty` / :func:`zeros` (NumPy, so
tracemalloc sees them) rather than inside Numba, where the allocation would be invisible to
the harness's memory measurement.
"""
from __future__ import annotations

import os

import numpy as np

ENV_LIMIT = "CONVBENCH_MAX_WORKSPACE"


def empty(shape, dtype) -> np.ndarray:
    """Uninitialised workspace array (counted by tracemalloc)."""
    return np.empty(shape, dtype=dtype)


def zeros(shape, dtype) -> np.ndarray:
    """Zero-filled workspace array (counted by tracemalloc)."""
    return np.zeros(shape, dtype=dtype)


def nbytes(shape, dtype) -> int:
    """Bytes of an array of this shape and dtype."""
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize


def _available_memory() -> int:
    """Available physical memory in bytes (MemAvailable on Linux, else total pages)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def max_workspace_bytes() -> int:
    """The workspace limit: ``CONVBENCH_MAX_WORKSPACE`` (bytes, or with K/M/G suffix), else
    half of the memory available now."""
    raw = os.environ.get(ENV_LIMIT)
    if raw is None or raw.strip() == "":
        return _available_memory() // 2
    text = raw.strip().upper().removesuffix("B")
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
    number = text[:-1] if scale != 1 else text
    try:
        value = int(float(number) * scale)
    except ValueError:
        raise ValueError(
            f"{ENV_LIMIT} must be a byte count such as 1000000, 512M or 2G, got {raw!r}"
        ) from None
    if value < 0:
        raise ValueError(f"{ENV_LIMIT} must be >= 0, got {raw!r}")
    return value
