"""Staging one row of zero-padded input, the step every wide-row kernel (``direct`` v3,
``implicit_gemm``, the space-to-depth phases) takes before its taps run.

Indexed on flat arrays at unsigned offsets: a view or a slice assignment per row costs
reference counting and generic slicing, and a signed index a wrap-around test per element;
written this way each piece is a plain loop that LLVM vectorises (the copy, once inlined with
a unit step).
"""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(inline="always")
def stage_row(dst, row, length, lo, hi, src, first, step):
    """dst[row + q] for q < length: src[first + (q - lo)*step] for lo <= q < hi, zero
    elsewhere (lo = hi = length: a row of padding)."""
    at = np.uint64(row)
    for q in range(lo):
        dst[at + np.uint64(q)] = 0.0
    for q in range(hi, length):
        dst[at + np.uint64(q)] = 0.0
    to, origin, stride = at + np.uint64(lo), np.uint64(first), np.uint64(step)
    for q in range(hi - lo):
        dst[to + np.uint64(q)] = src[origin + np.uint64(q) * stride]
