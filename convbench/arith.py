"""Integer index arithmetic shared by the Python wrappers and the compiled kernels.

``register_jitable`` functions run as plain Python and are also callable from ``@njit`` and
``@cuda.jit`` code, so every kernel and wrapper spells these the same way.
"""
from __future__ import annotations

from numba.extending import register_jitable


@register_jitable
def ceil_div(a, b):
    """Smallest integer >= a / b, for any integer a and b > 0."""
    return (a + b - 1) // b


@register_jitable
def plane_index(plane, n_b, n_t):
    """(a, b, t) of plane number ``plane`` in an (A, B, T) stack of planes, t fastest."""
    return plane // (n_b * n_t), plane // n_t % n_b, plane % n_t


def sampled(start: int, count: int, step: int) -> slice:
    """The slice picking ``count`` elements ``step`` apart from ``start`` (a strided output's
    rows or columns in a stride-1 result): ``start, start + step, ..., start + (count-1)*step``."""
    return slice(start, start + (count - 1) * step + 1, step)
