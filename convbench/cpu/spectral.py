"""Pieces shared by the FFT algorithms: transform sizes, staging kernels into transform
buffers, the spectral multiply-accumulate over input channels (ours, in Numba), and the cost
features of an FFT convolution.

Transforms use ``scipy.fft`` (pocketfft), by default on one thread (``CONVBENCH_FFT_WORKERS``
sets more): on two cores pocketfft's own thread pool beside Numba's made the FFT algorithms
slower and erratic, while the spectral multiply-accumulate runs on all cores in Numba. All
buffers are NumPy arrays, so tracemalloc sees them and the declared workspace can be checked.
"""
from __future__ import annotations

import math

import numpy as np
import scipy.fft
from numba import njit, prange

from .. import settings, workspace
from ..arith import ceil_div

F_BLOCK = 512  # frequencies per task: 4 output spectra + 1 input spectrum of this block stay in L1


def ungrouped(spec) -> bool:
    """The spectral multiply-accumulate sums over every input channel: no channel groups."""
    return spec.groups == 1


def workers() -> int:
    """Threads of each scipy.fft call (``CONVBENCH_FFT_WORKERS``, default 1)."""
    return settings.positive_int("CONVBENCH_FFT_WORKERS", 1)


def rfft2(a: np.ndarray) -> np.ndarray:
    """Real 2-D FFT over the last two axes."""
    return scipy.fft.rfft2(a, workers=workers())


def rfft_rows(a: np.ndarray) -> np.ndarray:
    """Real FFT along the last axis (the row pass of a 2-D transform)."""
    return scipy.fft.rfft(a, axis=-1, workers=workers())


def fft_columns(rows: np.ndarray, p: int) -> np.ndarray:
    """Column pass: FFT along axis -2, zero-extended to ``p`` rows, in place when possible.

    Together with :func:`rfft_rows` this is a 2-D real FFT of planes whose rows past
    ``rows.shape[-2]`` are zero, with row transforms only where the data is: for a kh-row
    kernel in a P-row transform this halves the work. Callers free the real buffer between the
    two passes, which is what :func:`rfft2_rows_peak` accounts for.
    """
    return scipy.fft.fft(rows, n=p, axis=-2, workers=workers(), overwrite_x=True)


def rfft2_rows_peak(lead: tuple[int, ...], rows: int, p: int, q: int, dtype) -> int:
    """Peak extra bytes of the two passes on a (*lead, rows, q) real buffer freed between them:
    the buffer with its row spectra, then the row spectra with the zero-extended copy that the
    column pass works in (none when rows == p: it works in place)."""
    qh = q // 2 + 1
    real = workspace.nbytes(lead + (rows, q), dtype)
    row_spec = workspace.nbytes(lead + (rows, qh), complex_dtype(dtype))
    full = workspace.nbytes(lead + (p, qh), complex_dtype(dtype)) if rows != p else 0
    return max(real + row_spec, row_spec + full)


def irfft2(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Inverse of :func:`rfft2` for real outputs of ``shape`` (the spectrum may be overwritten)."""
    return scipy.fft.irfft2(a, s=shape, workers=workers(), overwrite_x=True)


def complex_dtype(dtype) -> np.dtype:
    return np.dtype(np.complex64 if np.dtype(dtype) == np.float32 else np.complex128)


@njit(parallel=True, cache=True)
def stage_kernels(w, buf, dh, dw, flip):
    """buf[k, c] = the (dilated, optionally rotated) kernel at the origin, zeros elsewhere.

    Flipping here, once per kernel, is what turns the correlation below into true convolution.
    """
    k_out, c_in, kh, kw = w.shape
    for kc in prange(k_out * c_in):
        k, c = kc // c_in, kc % c_in
        buf[k, c, :, :] = 0.0
        for i in range(kh):
            for j in range(kw):
                wi, wj = (kh - 1 - i, kw - 1 - j) if flip else (i, j)
                buf[k, c, i * dh, j * dw] = w[k, c, wi, wj]


def kernel_spectra(w: np.ndarray, spec, p: int, q: int) -> np.ndarray:
    """Spectra (K, C, P, Q//2+1) of the staged kernels: only their ekh rows are row-transformed."""
    ekh = spec.effective_kernel[0]
    buf = workspace.empty((spec.k, spec.c, ekh, q), w.dtype)
    stage_kernels(w, buf, spec.dilation[0], spec.dilation[1], spec.flip)
    rows = rfft_rows(buf)
    del buf
    return fft_columns(rows, p)


def kernel_spectra_peak(spec, p: int, q: int) -> int:
    """Peak extra bytes of :func:`kernel_spectra` (its result included)."""
    return rfft2_rows_peak((spec.k, spec.c), spec.effective_kernel[0], p, q, spec.dtype)


@njit(parallel=True, cache=True)
def _spectral_mac(xf, wf, yf):
    """The multiply-accumulate on spectra viewed as interleaved (re, im) floats.

    Written on real views because LLVM vectorises this interleaved real arithmetic (stride-2
    access groups) but leaves Numba's complex multiply scalar.
    """
    n_img, c_in, n_tiles, n_flt = xf.shape
    k_out = wf.shape[0]
    k_blocks = ceil_div(k_out, 4)
    f_blocks = ceil_div(n_flt, 2 * F_BLOCK)
    for task in prange(n_img * k_blocks * n_tiles * f_blocks):
        fb = task % f_blocks
        t = (task // f_blocks) % n_tiles
        k0 = ((task // (f_blocks * n_tiles)) % k_blocks) * 4
        n = task // (f_blocks * n_tiles * k_blocks)
        f0, f1 = fb * 2 * F_BLOCK, min(n_flt, (fb + 1) * 2 * F_BLOCK)
        nk = min(4, k_out - k0)
        for kk in range(nk):
            yf[n, k0 + kk, t, f0:f1] = 0.0
        for c in range(c_in):
            for kk in range(nk):
                _mac_conj(xf[n, c, t, f0:f1], wf[k0 + kk, c, f0:f1], yf[n, k0 + kk, t, f0:f1])


@njit(cache=True)
def _mac_conj(x, w, y):
    """y += x * conj(w) on interleaved complex numbers (a separate function so LLVM vectorises
    it: inside the prange body the same loop stays scalar)."""
    for f in range(x.shape[0] // 2):
        xr, xi = x[2 * f], x[2 * f + 1]
        wr, wi = w[2 * f], w[2 * f + 1]
        y[2 * f] += xr * wr + xi * wi
        y[2 * f + 1] += xi * wr - xr * wi


def spectral_mac(xf: np.ndarray, wf: np.ndarray, yf: np.ndarray) -> None:
    """yf[n, k, t, f] = sum_c xf[n, c, t, f] * conj(wf[k, c, f]): correlation in frequency.

    Parallel over (image, 4 output channels, tile, frequency block); each input spectrum block
    is reused for 4 output channels while in L1, and every kernel spectrum is shared by all
    images and tiles: this reuse is why FFT wins for layers.
    """
    real = xf.real.dtype
    _spectral_mac(xf.view(real), wf.view(real), yf.view(real))


def fast_len(n: int) -> int:
    """Smallest length >= n that pocketfft transforms quickly (factors 2, 3, 5, 7, 11)."""
    return scipy.fft.next_fast_len(int(n), real=True)


def _log2(n: float) -> float:
    return math.log2(max(2.0, n))


def fft_cost_features(spec, p: int, q: int, tiles: int = 1, chunks: int = 1,
                      read_out: int = 1) -> list[float]:
    """An FFT convolution's work: a fixed cost; the transforms (planes x P*Q*log2(P*Q)) and
    their number of 1-D lines (each has a fixed cost too); the spectral multiply-accumulates;
    the outputs read out (``read_out`` passes each); and the chunks of tiles processed."""
    n, c, k = spec.n, spec.c, spec.k
    ho, wo = spec.out_size
    plane = p * q
    planes = n * c * tiles + k * c + n * k * tiles
    transforms = planes * plane * _log2(plane)
    lines = planes * (p + q // 2 + 1)
    mac = n * k * c * tiles * p * (q // 2 + 1)
    return [1.0, transforms, lines, mac, n * k * ho * wo * read_out, chunks]


def fft_rough_cost(spec, p: int, q: int, tiles: int = 1) -> float:
    """Uncalibrated FLOP-equivalents of an FFT convolution: ~2.5 P*Q*log2(P*Q) per real
    transform plane, 8 per complex multiply-add."""
    n, c, k = spec.n, spec.c, spec.k
    planes = n * c * tiles + k * c + n * k * tiles
    return 2.5 * planes * p * q * _log2(p * q) + 4.0 * n * k * c * tiles * p * q


def fft_growth(spec) -> float:
    """How much larger than a direct sum an intermediate of an FFT convolution can be: a
    spectrum sums a whole padded plane, so its magnitude bound is the plane's size times
    larger."""
    hp, wp = spec.padded_size
    return float(hp * wp)
