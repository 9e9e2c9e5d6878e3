"""The spectra of the CPU FFT algorithms: transforms, their layout, and the products.

A layer's FFT convolution is three groups of transforms and one product:

* **Images.** A 2-D real FFT, zero-extended to P x Q: convbench's own (``real_fft2``,
  vectorised across lines, writing the packed layout below directly) where P and Q are powers
  of two of at least a vector, else pocketfft's (``scipy.fft``) and a repacking. With the own
  FFT a spectrum row's frequencies sit in the packed vectors in its own order
  (``real_fft2.frequency_order``); the kernel spectra follow the layout's order, and the
  products never need the natural one. (A row transform by GEMM, as for the kernels below,
  measured no faster than pocketfft inside the whole call: an image plane is not mostly
  zeros, and every change between Numba's, OpenBLAS's and pocketfft's threads costs tens of
  microseconds on two cores.)
* **Kernels.** A kh x kw kernel in a P x Q transform is almost all zeros, so its spectrum is a
  DFT over its taps: W = E_p w E_q^T, the row factor one small GEMM per call
  (``KernelSpectra.row``), the column factor a cached constant (``KernelSpectra.column``).
  The product of the two is never stored per call: each
  task of the products makes the block of kernel spectra it needs (all K*C kernels at a few
  vectors of frequencies) with the GEMM micro-kernel into a per-thread scratch that stays in
  L2, and uses it at once for every image. (The kernel spectra of a K=C=16 layer are 4.3 MB:
  writing and reading them back cost more than the DFT.) A prepared layer stores them.
* **Products.** Y[n, k, f] = sum_c X[n, c, f] conj(W[k, c, f]) on the register-blocked
  ``vector.spectral_mac`` kernel, per task one vector of frequencies for every image and channel.
  For that the image spectra are repacked once into ``(vector, v, image, tile, channel,
  re/im, lane)`` order, so a task reads one contiguous block.
* **Outputs.** The packed products are transformed back by the own inverse FFT, or unpacked
  to complex planes and transformed back by pocketfft.

The transforms run on ``workers()`` threads: pocketfft's own threads, between the Numba
kernels' parallel regions.
"""
from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numba
import numpy as np
import scipy.fft
from numba import get_thread_id, njit, prange

from ... import settings, workspace
from ...arith import ceil_div, plane_index
from . import real_fft2
from ..vector.microkernel import MR, gemm, nr
from ..vector.spectral_mac import mac_channels
from ..vector.ir import TARGET


def workers() -> int:
    """Threads of each scipy.fft call (``CONVBENCH_FFT_WORKERS``; default: Numba's threads)."""
    return settings.positive_int("CONVBENCH_FFT_WORKERS", numba.get_num_threads())


def complex_dtype(dtype) -> np.dtype:
    return np.dtype(np.complex64 if np.dtype(dtype) == np.float32 else np.complex128)


class Layout(NamedTuple):
    """How one P x Q transform's spectra are stored.

    ``lanes``: values per vector; ``group``: spectrum vectors per block of kernel spectra (one
    micro-kernel block is ``group`` vectors of real and imaginary parts); ``blocks``: blocks
    per spectrum row, so a row holds ``pitch`` = blocks * group * lanes >= P frequencies (the
    padding frequencies are zero in the images and never read out); ``native``: transformed
    by ``real_fft2`` (slot s of a row holds frequency :meth:`order` [s]), else by pocketfft
    (slot s holds frequency s).
    """
    p: int
    q: int
    dtype: np.dtype
    lanes: int
    group: int
    blocks: int
    native: bool

    @property
    def qh(self) -> int:
        return self.q // 2 + 1

    @property
    def vectors(self) -> int:
        return self.blocks * self.group

    @property
    def pitch(self) -> int:
        return self.vectors * self.lanes

    @property
    def block_cols(self) -> int:
        """Columns of one block of kernel spectra: ``group`` x (re, im) x lanes."""
        return self.group * 2 * self.lanes

    def order(self) -> np.ndarray:
        """The row frequency in each of the first P slots of a spectrum row."""
        return real_fft2.frequency_order(self.p, self.lanes) if self.native else np.arange(
            self.p)


def layout(p: int, q: int, dtype) -> Layout:
    """The layout of a P x Q transform: a block of kernel spectra is one micro-kernel block
    (``nr`` columns), so it holds nr / (2 * lanes) spectrum vectors."""
    dtype = np.dtype(dtype)
    lanes = TARGET.lanes(dtype)
    group = max(1, nr(dtype) // (2 * lanes))
    return Layout(p, q, dtype, lanes, group, ceil_div(p, group * lanes),
                  real_fft2.applies(p, q, dtype))


def _twiddles(n_out: int, taps: int, step: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of -2 pi u (t * step) / length for u < n_out, t < taps (float64)."""
    angle = -2.0 * np.pi * np.outer(np.arange(n_out), np.arange(taps) * step) / length
    return np.cos(angle), np.sin(angle)


@lru_cache(maxsize=16)
def _row_dft(taps: int, step: int, lay: Layout) -> np.ndarray:
    """(taps, 2*qh): a kernel row's taps (``step`` apart) to its interleaved row spectrum. A
    cached constant, never written."""
    cos, sin = _twiddles(lay.qh, taps, step, lay.q)
    matrix = np.empty((taps, lay.qh, 2), lay.dtype)
    matrix[:, :, 0], matrix[:, :, 1] = cos.T, sin.T
    return matrix.reshape(taps, 2 * lay.qh)


# ---- images ---------------------------------------------------------------------------------

def image_spectra(planes: np.ndarray, lay: Layout) -> np.ndarray:
    """Packed spectra (vectors, qh, A, T, B, 2, lanes) of real planes (A, B, T, rows, cols),
    rows <= P and cols <= Q, zero-extended to the transform."""
    n_a, n_b, n_t = planes.shape[:3]
    if lay.native:
        packed = workspace.empty((lay.vectors, lay.qh, n_a, n_t, n_b, 2, lay.lanes), lay.dtype)
        real_fft2.forward(planes, lay.p, lay.q, packed)
        return packed
    spectra = scipy.fft.rfft2(planes, s=(lay.p, lay.q), workers=workers())
    packed = workspace.empty((lay.vectors, lay.qh, n_a, n_t, n_b, 2, lay.lanes), lay.dtype)
    _pack(spectra, packed)
    return packed


def image_spectra_peak(n_a: int, n_b: int, n_t: int, lay: Layout) -> int:
    """Peak bytes of :func:`image_spectra`, its result included: the zero-extended planes
    beside their spectra, then the spectra beside the packed copy."""
    planes = n_a * n_b * n_t
    packed = workspace.nbytes((lay.vectors, lay.qh, planes, 2, lay.lanes), lay.dtype)
    if lay.native:
        return packed + real_fft2.forward_peak(planes, lay.p, lay.q, lay.dtype)
    spectra = workspace.nbytes((planes, lay.p, lay.qh), complex_dtype(lay.dtype))
    extended = workspace.nbytes((planes, lay.p, lay.q), lay.dtype)
    return max(extended + spectra, spectra + packed)


@njit(parallel=True, cache=True)
def _pack(src, dst):
    """dst[j, v, a, t, b, :, l] = (re, im) of src[a, b, t, j*lanes + l, v] (zero past P)."""
    n_a, n_b, n_t, p, qh = src.shape
    vectors, lanes = dst.shape[0], dst.shape[6]
    for task in prange(n_a * n_b * n_t * vectors):
        j = task % vectors
        a, b, t = plane_index(task // vectors, n_b, n_t)
        i0 = j * lanes
        filled = min(lanes, p - i0) if i0 < p else 0
        for v in range(qh):
            out = dst[j, v, a, t, b]
            for lane in range(filled):
                value = src[a, b, t, i0 + lane, v]
                out[0, lane] = value.real
                out[1, lane] = value.imag
            for lane in range(filled, lanes):
                out[0, lane] = 0.0
                out[1, lane] = 0.0


@njit(parallel=True, cache=True)
def _unpack(src, dst):
    """dst[a, b, t, i, v] = src[i // lanes, v, a, t, b, :, i % lanes] as a complex number."""
    n_a, n_b, n_t, p, qh = dst.shape
    lanes = src.shape[6]
    vectors = ceil_div(p, lanes)  # those holding frequencies below P (the rest are padding)
    for task in prange(n_a * n_b * n_t * vectors):
        j = task % vectors
        a, b, t = plane_index(task // vectors, n_b, n_t)
        i0 = j * lanes
        for v in range(qh):
            part = src[j, v, a, t, b]
            for lane in range(min(lanes, p - i0)):
                dst[a, b, t, i0 + lane, v] = complex(part[0, lane], part[1, lane])


# ---- kernels --------------------------------------------------------------------------------

class KernelSpectra(NamedTuple):
    """The kernel spectra's two factors, and (prepared) their product.

    ``row``: (qh, KCp, 2*kh) the row spectra of every kernel row, real parts then imaginary,
    KC padded to whole micro-kernel blocks (MR); ``column``: (blocks, 2*kh, block_cols) the
    column DFT, so that row[v] @ column[j] is the block (KCp, block_cols) of spectra at row v,
    vectors j*group...; ``full``: every block, (blocks, qh, KCp, block_cols), or empty.
    """
    row: np.ndarray
    column: np.ndarray
    full: np.ndarray


def padded_kernels(spec) -> int:
    """K*C rounded up to whole micro-kernel blocks."""
    return ceil_div(spec.k * spec.c, MR) * MR


@lru_cache(maxsize=16)
def _column_dft(kh: int, dh: int, lay: Layout) -> np.ndarray:
    """(blocks, 2*kh, block_cols): the column DFT of kh taps ``dh`` apart, from a kernel
    row's (real parts; imaginary parts) to each block's (real; imaginary) spectrum vectors.
    A cached constant, never written."""
    cos, sin = _twiddles(lay.p, kh, dh, lay.p)
    order = lay.order()  # the layout's order of frequencies
    cos, sin = cos[order], sin[order]
    column = np.zeros((2, kh, 2, lay.pitch), lay.dtype)
    column[0, :, 0, :lay.p], column[0, :, 1, :lay.p] = cos.T, sin.T
    column[1, :, 0, :lay.p], column[1, :, 1, :lay.p] = -sin.T, cos.T
    blocked = np.ascontiguousarray(column.reshape(2 * kh, 2, lay.blocks, lay.group, lay.lanes)
                                   .transpose(2, 0, 3, 1, 4)).reshape(lay.blocks, 2 * kh, -1)
    return blocked


def kernel_spectra(w: np.ndarray, spec, lay: Layout, store: bool = False) -> KernelSpectra:
    """The factors of the (dilated, for true convolution rotated) kernels' spectra; with
    ``store`` their product too (a prepared layer)."""
    k_out, c_in, kh, kw = w.shape
    kcp = padded_kernels(spec)
    taps = w[:, :, ::-1, ::-1] if spec.flip else w
    dh, dw = spec.dilation
    rows = np.ascontiguousarray(taps).reshape(-1, kw) @ _row_dft(kw, dw, lay)
    row = workspace.empty((lay.qh, kcp, 2 * kh), lay.dtype)
    _row_factor(rows.reshape(k_out * c_in, kh, lay.qh * 2), row)
    del rows
    column = _column_dft(kh, dh, lay)
    if not store:
        return KernelSpectra(row, column, workspace.empty(0, lay.dtype))
    full = workspace.empty((lay.blocks, lay.qh, kcp, lay.block_cols), lay.dtype)
    _all_blocks(row, column, full)
    return KernelSpectra(row, column, full)


@njit(parallel=True, cache=True)
def _row_factor(rows, row):
    """row[v, kc, s*kh + i] = part s of rows[kc, i, v] (interleaved), zero past K*C."""
    n_kc, kh, qh2 = rows.shape
    qh, kcp = row.shape[0], row.shape[1]
    for v in prange(qh):
        for kc in range(kcp):
            for i in range(kh):
                if kc < n_kc:
                    row[v, kc, i] = rows[kc, i, 2 * v]
                    row[v, kc, kh + i] = rows[kc, i, 2 * v + 1]
                else:
                    row[v, kc, i] = 0.0
                    row[v, kc, kh + i] = 0.0


def kernel_spectra_bytes(spec, lay: Layout) -> tuple[int, int]:
    """(peak bytes while the row factor is made, bytes of it kept for the products; the
    column factor is a cached constant)."""
    kcp = padded_kernels(spec)
    real = lambda *shape: workspace.nbytes(shape, lay.dtype)  # noqa: E731
    row = real(lay.qh, kcp, 2 * spec.kh)
    flipped = real(spec.k, spec.c, spec.kh, spec.kw) if spec.flip else 0
    rows = real(spec.k * spec.c * spec.kh, 2 * lay.qh)
    return max(flipped + rows, rows + row), row


@njit(parallel=True, cache=True)
def _all_blocks(row, column, full):
    """full[j, v] = row[v] @ column[j]: every block of kernel spectra (a prepared layer)."""
    qh, kcp, taps2 = row.shape
    blocks, _, cols = column.shape
    a, b, c = row.reshape(-1), column.reshape(-1), full.reshape(-1)
    for task in prange(blocks * qh):
        j, v = task // qh, task % qh
        gemm(a, v * kcp * taps2, taps2, 1, b, j * taps2 * cols, cols, c, task * kcp * cols, cols,
             kcp, cols, taps2, cols)


# ---- products and outputs -------------------------------------------------------------------

def scratch_bytes(spec, lay: Layout) -> int:
    """Per-thread blocks of kernel spectra made during the products (none when prepared)."""
    return workspace.nbytes((numba.config.NUMBA_NUM_THREADS, padded_kernels(spec),
                             lay.block_cols), lay.dtype)


def spectral_products(xs: np.ndarray, ws: KernelSpectra, k_out: int, lay: Layout) -> np.ndarray:
    """Packed Y (vectors, qh, N, T, K, 2, lanes) = sum over channels of X conj(W)."""
    vectors, qh, n_img, tiles, c_in = xs.shape[:5]
    ys = workspace.empty((vectors, qh, n_img, tiles, k_out, 2, lay.lanes), lay.dtype)
    prepared = ws.full.size > 0
    scratch = workspace.empty((1, 0) if prepared else (
        numba.config.NUMBA_NUM_THREADS, ws.row.shape[1] * lay.block_cols), lay.dtype)
    _products(xs.reshape(-1), ws.row, ws.column, ws.full.reshape(-1), prepared,
              scratch, ys.reshape(-1), n_img * tiles, c_in, k_out, lay.group, lay.lanes)
    return ys


@njit(parallel=True, cache=True)
def _products(x, row, column, full, prepared, scratch, y, planes, c_in, k_out, group, lanes):
    """One task per (block j of spectrum vectors, spectrum row v): that block of kernel spectra
    (made now into the thread's scratch, or the stored one), then for each of its ``group``
    vectors the products of every image plane (``planes`` = images x tiles)."""
    qh, kcp, taps2 = row.shape
    blocks, _, cols = column.shape
    a, b = row.reshape(-1), column.reshape(-1)
    width = 2 * lanes  # one vector of frequencies, real and imaginary parts
    for task in prange(blocks * qh):
        j, v = task // qh, task % qh
        if prepared:
            w, w0 = full, task * kcp * cols
        else:
            me = get_thread_id()
            w, w0 = scratch[me], 0
            gemm(a, v * kcp * taps2, taps2, 1, b, j * taps2 * cols, cols, w, 0, cols, kcp, cols,
                 taps2, cols)
        for g in range(group):
            vector = (j * group + g) * qh + v
            x0, y0 = vector * planes * c_in * width, vector * planes * k_out * width
            for i in range(planes):
                mac_channels(x, x0 + i * c_in * width, width, w, w0 + g * width, cols,
                             c_in * cols, lanes, y, y0 + i * k_out * width, width, c_in,
                             lanes, k_out)


def output_planes(ys: np.ndarray, lay: Layout) -> np.ndarray:
    """Real planes (N, K, T, P, Q) of the packed products (N, T, K order)."""
    _, _, n_img, tiles, k_out = ys.shape[:5]
    if lay.native:
        return real_fft2.inverse(ys, lay.p, lay.q)
    spectra = workspace.empty((n_img, k_out, tiles, lay.p, lay.qh), complex_dtype(lay.dtype))
    _unpack(ys, spectra)
    return scipy.fft.irfft2(spectra, s=(lay.p, lay.q), workers=workers(), overwrite_x=True)


def pipeline_peak(spec, lay: Layout, tiles: int = 1, staged: int = 0) -> int:
    """Peak bytes of one pass over ``tiles`` planes per image, beside the kernel spectra's
    kept factor: the ``staged`` bytes of real planes with :func:`image_spectra`'s peak, then
    the packed image and output spectra with the products' scratch, then the packed output
    spectra with :func:`output_planes`' peak."""
    n, c, k = spec.n, spec.c, spec.k
    packed = lambda planes: planes * lay.qh * lay.pitch * 2 * lay.dtype.itemsize  # noqa: E731
    return max(staged + image_spectra_peak(n, c, tiles, lay),
               packed(n * c * tiles) + packed(n * k * tiles) + scratch_bytes(spec, lay),
               packed(n * k * tiles) + output_planes_peak(n, k, tiles, lay))


def output_planes_peak(n_img: int, k_out: int, tiles: int, lay: Layout) -> int:
    """Peak bytes of :func:`output_planes` past its input: the complex planes beside the
    real result (the own inverse: its row spectra and line blocks beside the result)."""
    if lay.native:
        return real_fft2.inverse_peak(n_img * k_out * tiles, lay.p, lay.q, lay.dtype)
    return (workspace.nbytes((n_img, k_out, tiles, lay.p, lay.qh), complex_dtype(lay.dtype))
            + workspace.nbytes((n_img, k_out, tiles, lay.p, lay.q), lay.dtype))
