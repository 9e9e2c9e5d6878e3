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

    from numba.cuda.cudadrv import driver

    class CountingMemoryManager(driver.NumbaCUDAMemoryManager):
        """Numba's own manager (cuMemAlloc, frees deferred and batched), counting every byte.

        Frees go through Numba's pending-deallocation queue as in the default manager: an
        immediate cuMemFree synchronises the device and would be timed as part of each call.
        """

        def memalloc(self, size):
            ptr = self._attempt_allocation(lambda: driver.driver.cuMemAlloc(size))
            TRACKER.allocated(size)
            allocations, deallocations = self.allocations, self.deallocations

            def finalizer():
                TRACKER.freed(size)
                allocations.pop(ptr, None)
                deallocations.add_item(driver.driver.cuMemFree, ptr, size)

            mem = driver.AutoFreePointer(weakref.proxy(self.context), ptr, size,
                                         finalizer=finalizer)
            allocations[ptr] = mem
            return mem.own()

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
