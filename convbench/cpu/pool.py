"""Max and average pooling on the CPU: one pass over the input, parallel over (image, channel)
planes, separable.

v2 (registered as ``direct``): for each output row, the window's input rows are first reduced
into one row (contiguous vector passes: the first two rows in one pass), then the columns of
that row are reduced window by window with the stride. The column pass has vector-friendly
forms for stride 1 (tap by tap along the row) and for 2x2 and 3x3 windows at stride 2 (each
window's taps in one iteration, which the compiler turns into interleaved vector loads); other
windows reduce each window in turn. Column padding lives in the row buffer as -inf (max) or 0
(average), so no tap is bounds-checked; row padding is simply skipped.

Max pooling treats padding as -inf and propagates NaN (as PyTorch does); average pooling
divides by the full window when ``count_include_pad`` (PyTorch's default), else by the number
of in-range taps.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import get_thread_id, njit, prange

from .. import workspace
from ..registry import Algorithm, register
from ..spec import PoolSpec


@njit(inline="always")
def _nanmax(a, b):
    """The larger of two values, NaN if either is NaN (branch-free: it vectorises)."""
    return a if ((a > b) | (a != a)) else b


@njit(inline="always")
def _add(a, b):
    return a + b


@njit(inline="always")
def _reduce_rows(xp, row, first, last, wid, combine):
    """row[q] = combine over input rows first..last-1 of xp[., q] (the first two in one pass)."""
    if last - first >= 2:
        a, b = xp[first], xp[first + 1]
        for q in range(wid):
            row[q] = combine(a[q], b[q])
        first += 2
    else:
        a = xp[first]
        for q in range(wid):
            row[q] = a[q]
        first += 1
    for ih in range(first, last):
        a = xp[ih]
        for q in range(wid):
            row[q] = combine(row[q], a[q])


@njit(inline="always")
def _reduce_columns(row, orow, sw, kw, wo, combine):
    """orow[ow] = combine over the window of row starting at ow * sw."""
    if sw == 1:
        for ow in range(wo):
            orow[ow] = row[ow]
        for j in range(1, kw):
            for ow in range(wo):
                orow[ow] = combine(orow[ow], row[ow + j])
    elif sw == 2 and kw == 2:
        for ow in range(wo):
            orow[ow] = combine(row[2 * ow], row[2 * ow + 1])
    elif sw == 2 and kw == 3:
        for ow in range(wo):
            orow[ow] = combine(combine(row[2 * ow], row[2 * ow + 1]), row[2 * ow + 2])
    else:  # unsigned indices: provably non-negative, so no negative-index wrap per read
        step = np.uint64(sw)
        for ow in range(wo):
            q = np.uint64(ow) * step
            acc = row[q]
            for j in range(1, kw):
                acc = combine(acc, row[q + np.uint64(j)])
            orow[ow] = acc


@njit(parallel=True, cache=True)
def _max_pool(x, out, sh, sw, ph, pw, kh, kw, ws):
    n_img, c_in, h, wid = x.shape
    ho, wo = out.shape[2], out.shape[3]
    for plane in prange(n_img * c_in):
        n, c = plane // c_in, plane % c_in
        buf = ws[get_thread_id()]
        buf[:pw] = -np.inf  # padded columns never win
        buf[pw + wid:] = -np.inf
        row = buf[pw:pw + wid]
        xp = x[n, c]
        for oh in range(ho):
            first = max(oh * sh - ph, 0)
            last = min(oh * sh - ph + kh, h)
            _reduce_rows(xp, row, first, last, wid, _nanmax)
            _reduce_columns(buf, out[n, c, oh], sw, kw, wo, _nanmax)


@njit(parallel=True, cache=True)
def _avg_pool(x, out, sh, sw, ph, pw, kh, kw, count_include_pad, ws):
    n_img, c_in, h, wid = x.shape
    ho, wo = out.shape[2], out.shape[3]
    for plane in prange(n_img * c_in):
        n, c = plane // c_in, plane % c_in
        buf = ws[get_thread_id()]
        buf[:pw] = 0.0  # padded columns add nothing
        buf[pw + wid:] = 0.0
        row = buf[pw:pw + wid]
        xp = x[n, c]
        for oh in range(ho):
            first = max(oh * sh - ph, 0)
            last = min(oh * sh - ph + kh, h)
            rows = last - first
            _reduce_rows(xp, row, first, last, wid, _add)
            orow = out[n, c, oh]
            _reduce_columns(buf, orow, sw, kw, wo, _add)
            if count_include_pad:
                scale = 1.0 / (kh * kw)
                for ow in range(wo):
                    orow[ow] *= scale
            else:
                for ow in range(wo):
                    start = ow * sw - pw
                    cols = min(start + kw, wid) - max(start, 0)
                    orow[ow] /= rows * cols


def _row_buffer(spec: PoolSpec) -> tuple[int, int]:
    """Per-thread row buffer: the input width with the column padding on both sides (and
    room for the last window's overhang)."""
    sw, kw = spec.stride[1], spec.size[1]
    length = max(spec.w + 2 * spec.pad[1], (spec.out_size[1] - 1) * sw + kw)
    return (numba.config.NUMBA_NUM_THREADS, length)


def pool_workspace_bytes(spec: PoolSpec) -> int:
    return workspace.nbytes(_row_buffer(spec), spec.dtype)


def max_pool(x: np.ndarray, spec: PoolSpec) -> np.ndarray:
    """Max pooling, any size, stride and padding (padding at most half the window)."""
    out = np.empty(spec.out_shape, dtype=x.dtype)
    ws = workspace.empty(_row_buffer(spec), x.dtype)
    _max_pool(x, out, *spec.stride, *spec.pad, *spec.size, ws)
    return out


def avg_pool(x: np.ndarray, spec: PoolSpec) -> np.ndarray:
    """Average pooling; the divisor follows ``spec.count_include_pad``."""
    out = np.empty(spec.out_shape, dtype=x.dtype)
    ws = workspace.empty(_row_buffer(spec), x.dtype)
    _avg_pool(x, out, *spec.stride, *spec.pad, *spec.size, spec.count_include_pad, ws)
    return out


register(Algorithm(name="direct", op="max_pool2d", device="cpu", run=max_pool,
                   workspace_bytes=pool_workspace_bytes, bound_by="memory",
                   description="separable: rows reduced, then columns; parallel over planes"))
register(Algorithm(name="direct", op="avg_pool2d", device="cpu", run=avg_pool,
                   workspace_bytes=pool_workspace_bytes, bound_by="memory",
                   description="separable row and column sums; parallel over planes"))
