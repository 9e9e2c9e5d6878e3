"""convbench's own 2-D real FFT for power-of-two transforms: vectorised across lines, it writes
the packed spectra of ``spectra`` directly and reads the packed products back.

pocketfft (``scipy.fft``) transforms one line at a time with SSE vectors; on the 16-channel
64x64 layers it took ~12 us a plane and the repacking into the vector layout of the products
another ~6. Here a vector holds ``lanes`` (16 float32 on AVX-512) image rows at once:

1. **Rows** (one task per plane and block of ``lanes`` rows): the block is transposed in
   registers (``transpose.block``) so that a vector holds one column of ``lanes`` rows; the Q
   samples of those rows are transformed as Q/2 complex samples (even + i odd) by a radix-2
   FFT whose butterflies are whole vectors (``lane_ops.butterfly_dif``; decimation in
   frequency, its bit-reversed result read through a table rather than reordered), and split
   into the rows' Q/2 + 1 frequencies (``real_split``).
2. **Columns** (one task per plane and row frequency v): the P = M * lanes values of column v
   are M vectors. A P-point DFT is, with u = u1 + M*u2 and row i = lanes*b + l, an M-point
   FFT across the vectors (b -> u1, the same butterflies), a twiddle W_P^(l u1), and a
   lanes-point DFT across each vector's lanes (``lane_dft``: shuffles, l -> u2). That leaves
   frequency u = u1 + M * bitrev(lane) in lane ``lane`` of vector u1: the packed layout's own
   order (:func:`frequency_order`), which the kernel spectra follow; the products are
   pointwise and never need the natural order.

The inverse runs the same steps backwards (``lane_idft``, the FFTs with conjugate twiddles,
``real_merge`` with the 1/(P*Q) normalisation folded in) and transposes each block of rows
back into the real output planes. A transform is taken here when P and Q are powers of two
and whole vectors (:func:`applies`); other sizes stay with pocketfft.
"""
from __future__ import annotations

from functools import lru_cache

import numba
import numpy as np
from numba import get_thread_id, njit, prange

from ... import workspace
from ...arith import plane_index
from .lane_ops import butterfly_dif, butterfly_dit, lane_dft, lane_idft, real_merge, real_split
from .sizes import power_of_two
from ..vector.ir import TARGET
from ..vector.transpose import block

TASKS_PER_THREAD = 8  # column tasks per thread at least, for load balance


def applies(p: int, q: int, dtype) -> bool:
    """Whether this P x Q transform runs here: powers of two, each at least a vector."""
    lanes = TARGET.lanes(dtype)
    return p == power_of_two(p) and q == power_of_two(q) and p >= lanes and q >= lanes


def frequency_order(p: int, lanes: int) -> np.ndarray:
    """The row frequency u held by each of the P slots (vector j, lane l) = j*lanes + l:
    u = j + (P/lanes) * bitrev(l)."""
    vectors = p // lanes
    return (np.arange(vectors)[:, None] + vectors * bit_reversal(lanes)[None, :]).reshape(-1)


def _circle(count: int, length: int) -> np.ndarray:
    """(count, 2): cos and sin of -2 pi k / length for k < count, in float64."""
    angle = -2.0 * np.pi * np.arange(count) / length
    return np.stack([np.cos(angle), np.sin(angle)], axis=1)


class _Tables:
    """The constant twiddles of one P x Q transform (cached, never written)."""

    def __init__(self, p: int, q: int, dtype) -> None:
        lanes = TARGET.lanes(dtype)
        n, vectors = q // 2, p // lanes
        self.lines = _circle(max(1, n // 2), n).astype(dtype).reshape(-1)  # n-point FFT
        self.split = _circle(n + 1, q).astype(dtype).reshape(-1)  # W_Q^v, v <= n
        self.columns = _circle(max(1, vectors // 2), vectors).astype(dtype).reshape(-1)
        angle = -2.0 * np.pi * np.outer(np.arange(vectors), np.arange(lanes)) / p
        self.lanes = np.stack([np.cos(angle), np.sin(angle)], axis=1).astype(dtype).reshape(-1)
        self.lines_order, self.columns_order = bit_reversal(n), bit_reversal(vectors)
        for table in (self.lines, self.split, self.columns, self.lanes, self.lines_order,
                      self.columns_order):
            table.setflags(write=False)


@lru_cache(maxsize=16)
def _tables(p: int, q: int, dtype: np.dtype) -> _Tables:
    return _Tables(p, q, dtype)


@njit(cache=True)
def _line_fft(x, off, n, tw, lanes):
    """In place, the n-point FFT (n a power of two) of the complex vectors x[off + r*2*lanes]
    (real parts, then imaginary parts) by decimation in frequency: natural order in,
    bit-reversed out (never reordered: the callers read through the reversal); ``tw``: cos, sin
    of -2 pi k / n for k < n/2."""
    pair = 2 * lanes
    size = n
    while size >= 2:
        half, step = size >> 1, n // size
        for start in range(0, n, size):
            for k in range(half):
                butterfly_dif(x, off + (start + k) * pair, off + (start + k + half) * pair,
                              tw[2 * k * step], tw[2 * k * step + 1])
        size >>= 1


@njit(cache=True)
def _line_ifft(x, off, n, tw, lanes):
    """The inverse of :func:`_line_fft`, unnormalised: decimation in time with conjugate
    twiddles, bit-reversed order in, natural out."""
    pair = 2 * lanes
    size = 2
    while size <= n:
        half, step = size >> 1, n // size
        for start in range(0, n, size):
            for k in range(half):
                butterfly_dit(x, off + (start + k) * pair, off + (start + k + half) * pair,
                              tw[2 * k * step], -tw[2 * k * step + 1])
        size <<= 1


def bit_reversal(n: int) -> np.ndarray:
    """r[i] = i with its log2(n) bits reversed: where a decimation-in-frequency FFT leaves
    frequency i (and where a decimation-in-time one wants it)."""
    bits = max(0, n.bit_length() - 1)
    return np.array([int(format(i, f"0{bits}b")[::-1], 2) if bits else 0 for i in range(n)],
                    dtype=np.int64)


@njit(parallel=True, cache=True)
def _forward_rows(src, rows, cols, p, q, spectra, scratch, lines, reverse, split, lanes):
    """spectra[plane, v, b] (complex vectors): the row spectra of rows lanes*b... of each
    plane of src (planes of rows x cols, zero-extended to P x Q)."""
    count = src.shape[0] // (rows * cols)
    vectors, n = p // lanes, q // 2
    qh, pair = n + 1, 2 * lanes
    for task in prange(count * vectors):
        plane, b = task // vectors, task % vectors
        s = scratch[get_thread_id()]
        r0, at = b * lanes, plane * rows * cols
        for t0 in range(0, q, lanes):
            if r0 + lanes <= rows and t0 + lanes <= cols:
                block(src, at + r0 * cols + t0, cols, s, t0 * lanes, lanes)
                continue
            for t in range(t0, t0 + lanes):  # an edge: element by element, zeros outside
                for lane in range(lanes):
                    inside = r0 + lane < rows and t < cols
                    s[t * lanes + lane] = src[at + (r0 + lane) * cols + t] if inside else 0.0
        _line_fft(s, 0, n, lines, lanes)
        for v in range(qh):
            real_split(s, reverse[v % n] * pair, reverse[(n - v) % n] * pair, split[2 * v],
                       split[2 * v + 1], 0.5, spectra, ((plane * qh + v) * vectors + b) * pair)


@njit(inline="always")
def _column_task(task, chunks, chunk, qh, n_b, n_t):
    """A column task's plane (in (a, b, t) order), that plane's place in the packed (a, t, b)
    order, and its range of row frequencies."""
    plane, part = task // chunks, task % chunks
    a, b, t = plane_index(plane, n_b, n_t)
    return plane, (a * n_t + t) * n_b + b, part * chunk, min(qh, (part + 1) * chunk)


@njit(parallel=True, cache=True)
def _forward_columns(spectra, packed, n_a, n_b, n_t, qh, vectors, slots, chunk, columns,
                     reverse, twiddles, lanes):
    """packed[j, v, a, t, b] for j < slots: the column DFTs of spectra[plane, v] (planes in
    (a, b, t) order; see the module docstring), zero for j >= vectors; ``chunk`` row
    frequencies per task."""
    count, pair = n_a * n_b * n_t, 2 * lanes
    chunks = (qh + chunk - 1) // chunk
    for task in prange(count * chunks):
        plane, packed_plane, first, stop = _column_task(task, chunks, chunk, qh, n_b, n_t)
        for v in range(first, stop):
            at = (plane * qh + v) * vectors * pair
            _line_fft(spectra, at, vectors, columns, lanes)
            for j in range(slots):
                dst = ((j * qh + v) * count + packed_plane) * pair
                if j < vectors:
                    lane_dft(spectra, at + reverse[j] * pair, twiddles, j * pair, packed, dst)
                else:
                    packed[dst:dst + pair] = 0.0


@njit(parallel=True, cache=True)
def _inverse_columns(packed, spectra, n_a, n_t, n_b, qh, vectors, chunk, columns, reverse,
                     twiddles, lanes):
    """spectra[plane, v, b] from packed[j, v, a, t, b]: the inverse column DFTs (unnormalised),
    planes in (a, b, t) order, ``chunk`` row frequencies per task."""
    count, pair = n_a * n_b * n_t, 2 * lanes
    chunks = (qh + chunk - 1) // chunk
    for task in prange(count * chunks):
        plane, packed_plane, first, stop = _column_task(task, chunks, chunk, qh, n_b, n_t)
        for v in range(first, stop):
            at = (plane * qh + v) * vectors * pair
            for j in range(vectors):
                lane_idft(packed, ((j * qh + v) * count + packed_plane) * pair, twiddles,
                          j * pair, spectra, at + reverse[j] * pair)
            _line_ifft(spectra, at, vectors, columns, lanes)


@njit(parallel=True, cache=True)
def _inverse_rows(spectra, out, p, q, scratch, lines, reverse, split, scale, lanes):
    """out[plane] (P x Q, real) from its row spectra spectra[plane, v, b], times ``scale``."""
    vectors, n = p // lanes, q // 2
    qh, pair = n + 1, 2 * lanes
    count = out.shape[0] // (p * q)
    for task in prange(count * vectors):
        plane, b = task // vectors, task % vectors
        s = scratch[get_thread_id()]
        for v in range(n):
            real_merge(spectra, ((plane * qh + v) * vectors + b) * pair,
                       ((plane * qh + n - v) * vectors + b) * pair, split[2 * v],
                       split[2 * v + 1], scale, s, reverse[v] * pair)
        _line_ifft(s, 0, n, lines, lanes)
        for t0 in range(0, q, lanes):
            block(s, t0 * lanes, lanes, out, (plane * p + b * lanes) * q + t0, q)


def _chunk(count: int, qh: int) -> int:
    """Row frequencies per column task: all of a plane's where there are planes enough to
    share, fewer for a few large planes (at least TASKS_PER_THREAD tasks per thread)."""
    want = TASKS_PER_THREAD * numba.config.NUMBA_NUM_THREADS
    return max(1, min(qh, qh * count // want))


def _scratch(q: int, dtype) -> np.ndarray:
    """One line block per thread: Q samples of ``lanes`` rows."""
    return workspace.empty((numba.config.NUMBA_NUM_THREADS, q * TARGET.lanes(dtype)), dtype)


def forward(planes: np.ndarray, p: int, q: int, packed: np.ndarray) -> None:
    """Fill ``packed`` (slots, qh, A, T, B, 2, lanes) with the spectra of the real planes
    (A, B, T, rows, cols), zero-extended to P x Q (rows <= P, cols <= Q)."""
    n_a, n_b, n_t, rows, cols = planes.shape
    lanes, dtype = TARGET.lanes(planes.dtype), planes.dtype
    tab = _tables(p, q, np.dtype(dtype))
    vectors, qh = p // lanes, q // 2 + 1
    spectra = workspace.empty((n_a * n_b * n_t, qh, vectors, 2, lanes), dtype)
    src = np.ascontiguousarray(planes).reshape(-1)
    _forward_rows(src, rows, cols, p, q, spectra.reshape(-1), _scratch(q, dtype), tab.lines,
                  tab.lines_order, tab.split, lanes)
    _forward_columns(spectra.reshape(-1), packed.reshape(-1), n_a, n_b, n_t, qh, vectors,
                     packed.shape[0], _chunk(n_a * n_b * n_t, qh), tab.columns,
                     tab.columns_order, tab.lanes, lanes)


def inverse(packed: np.ndarray, p: int, q: int) -> np.ndarray:
    """Real planes (A, B, T, P, Q) of packed spectra (slots, qh, A, T, B, 2, lanes)."""
    _, qh, n_a, n_t, n_b, _, lanes = packed.shape
    dtype = packed.dtype
    tab = _tables(p, q, np.dtype(dtype))
    vectors = p // lanes
    spectra = workspace.empty((n_a * n_b * n_t, qh, vectors, 2, lanes), dtype)
    _inverse_columns(packed.reshape(-1), spectra.reshape(-1), n_a, n_t, n_b, qh, vectors,
                     _chunk(n_a * n_b * n_t, qh), tab.columns, tab.columns_order, tab.lanes,
                     lanes)
    out = workspace.empty((n_a, n_b, n_t, p, q), dtype)
    _inverse_rows(spectra.reshape(-1), out.reshape(-1), p, q, _scratch(q, dtype), tab.lines,
                  tab.lines_order, tab.split, 1.0 / (p * q), lanes)
    return out


def forward_peak(count: int, p: int, q: int, dtype) -> int:
    """Bytes :func:`forward` allocates beside ``packed``: the row spectra, the line blocks."""
    return (workspace.nbytes((count, q // 2 + 1, p, 2), dtype)
            + workspace.nbytes((numba.config.NUMBA_NUM_THREADS, q * TARGET.lanes(dtype)), dtype))


def inverse_peak(count: int, p: int, q: int, dtype) -> int:
    """Bytes :func:`inverse` allocates beside its input, its result included."""
    return forward_peak(count, p, q, dtype) + workspace.nbytes((count, p, q), dtype)
