"""Measured device memory: live and peak bytes allocated through Numba on the GPU.

Two sources feed one tracker. On a real GPU, :class:`CountingMemoryManager` is a Numba External
Memory Management (EMM) plugin: every device allocation Numba makes goes through its
``memalloc`` and every free through the finalizer it attaches, so the counts include allocations
our code never sees (for example temporaries of ``cuda.to_device``). The simulator has no EMM
hook, so there :func:`convbench.cuda.arrays.device_empty` reports its allocations directly.
"""
from __future__ import annotations

import threading

from ..devices import simulator_enabled


class DeviceMemoryTracker:
    """Live and peak device bytes; ``reset_peak`` starts a new measurement window."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.live = 0
        self.peak = 0

    def allocated(self, nbytes: int) -> None:
        with self._lock:
            self.live += nbytes
            self.peak = max(self.peak, self.live)

    def freed(self, nbytes: int) -> None:
        with self._lock:
            self.live -= nbytes

    def reset_peak(self) -> None:
        with self._lock:
            self.peak = self.live


TRACKER = DeviceMemoryTracker()
_installed = False


def _plugin_class():
    """Build the EMM plugin class (only importable where numba.cuda's driver is)."""
    import weakref
    from collections import defaultdict

    from numba.cuda.cudadrv import driver

    class CountingMemoryManager(driver.NumbaCUDAMemoryManager):
        """Numba's own manager, counting every byte, and caching freed blocks by exact size.

        A cuMemAlloc costs ~60 us on an H100 (measured with tools/gpu_overhead.py), more than
        a small convolution; like PyTorch's caching allocator, a freed block goes back to a
        per-size free list and the next allocation of that size reuses it. Reuse is safe
        because all our work is ordered on the default stream. The tracker counts blocks in
        use (handed out and not yet freed), not the cache; out of memory, the cache is
        returned to the driver and the allocation retried.
        """

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            # here, not in initialize(): Numba calls that again on every prepare_for_use
            # (seen on the H100: a fresh cache each time orphaned the freed blocks, which
            # were neither reused nor freed, until cuMemAlloc ran out of memory)
            self.cached = defaultdict(list)

        def memalloc(self, size):
            free_list = self.cached.get(size)
            if free_list:
                ptr = free_list.pop()
            else:
                try:
                    ptr = driver.driver.cuMemAlloc(size)
                except driver.CudaAPIError:
                    self.release_cached()
                    ptr = self._attempt_allocation(lambda: driver.driver.cuMemAlloc(size))
            TRACKER.allocated(size)
            cached, allocations = self.cached, self.allocations

            def finalizer():
                TRACKER.freed(size)
                allocations.pop(ptr, None)
                cached[size].append(ptr)

            mem = driver.AutoFreePointer(weakref.proxy(self.context), ptr, size,
                                         finalizer=finalizer)
            allocations[ptr] = mem  # the owner of ``mem`` until its last user lets go
            return mem.own()

        def release_cached(self) -> None:
            """Return every cached block to the driver."""
            for ptrs in self.cached.values():
                for ptr in ptrs:
                    driver.driver.cuMemFree(ptr)
            self.cached.clear()

        def reset(self) -> None:
            self.release_cached()
            super().reset()

    return CountingMemoryManager


def install() -> bool:
    """Make Numba allocate through the counting plugin (real GPU only, before any allocation).

    Returns True when device memory is counted by the plugin, False in the simulator (where
    ``device_empty`` counts instead).
    """
    global _installed
    if simulator_enabled():
        return False
    if not _installed:
        from numba import cuda

        cuda.set_memory_manager(_plugin_class())
        _installed = True
    return True


def plugin_installed() -> bool:
    return _installed
