"""CPU kernels in Numba: one module per algorithm, each registering itself.

Importing them first lets Numba pick its fork- and thread-safe TBB threading layer where pip
installed TBB (``convbench.process.prefer_tbb`` says why and when).
"""
from numba import njit, prange

from ..process import prefer_tbb

prefer_tbb()


@njit(parallel=True, cache=True)
def _count(n):
    total = 0
    for i in prange(n):
        total += i
    return total


def probe_threads() -> None:
    """Run one trivial parallel loop, so that Numba settles its threading layer (the
    environment record reports which)."""
    _count(4)
