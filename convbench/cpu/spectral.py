"""Pieces shared by the FFT algorithms: transform sizes, staging kernels into transform
buffers, and the spectral multiply-accumulate over input channels (ours, in Numba).

Transforms use ``scipy.fft`` (pocketfft) with one worker per core. rocket-fft (FFTs inside
``@njit``) was not adopted: its buffers come from Numba's allocator, invisible to the
tracemalloc measurement that checks every declared workspace.
"""
from __future__ import annotations

import os

import numpy as np
import scipy.fft
from numba import njit, prange

F_BLOCK = 512  # frequencies per task: 4 output spectra + 1 input spectrum of this block stay in L1

WORKERS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def rfft2(a: np.ndarray) -> np.ndarray:
    """Real 2-D FFT over the last two axes, threaded."""
    return scipy.fft.rfft2(a, workers=WORKERS)


def irfft2(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Inverse of :func:`rfft2` for real outputs of ``shape`` (the spectrum may be overwritten)."""
    return scipy.fft.irfft2(a, s=shape, workers=WORKERS, overwrite_x=True)


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


@njit(parallel=True, cache=True)
def spectral_mac(xf, wf, yf):
    """yf[n, k, t, f] = sum_c xf[n, c, t, f] * conj(wf[k, c, f]): correlation in frequency.

    Parallel over (image, 4 output channels, tile, frequency block); each input spectrum block
    is loaded once per 4 output channels (register blocking, as in direct v2), and every kernel
    spectrum is shared by all images and tiles: this reuse is why FFT wins for layers.
    """
    n_img, c_in, n_tiles, n_freq = xf.shape
    k_out = wf.shape[0]
    k_blocks = (k_out + 3) // 4
    f_blocks = (n_freq + F_BLOCK - 1) // F_BLOCK
    for task in prange(n_img * k_blocks * n_tiles * f_blocks):
        fb = task % f_blocks
        t = (task // f_blocks) % n_tiles
        k0 = ((task // (f_blocks * n_tiles)) % k_blocks) * 4
        n = task // (f_blocks * n_tiles * k_blocks)
        f0, f1 = fb * F_BLOCK, min(n_freq, (fb + 1) * F_BLOCK)
        nk = min(4, k_out - k0)
        for kk in range(nk):
            yf[n, k0 + kk, t, f0:f1] = 0.0
        for c in range(c_in):
            for kk in range(nk):
                for f in range(f0, f1):
                    yf[n, k0 + kk, t, f] += xf[n, c, t, f] * np.conj(wf[k0 + kk, c, f])


def fast_len(n: int) -> int:
    """Smallest length >= n that pocketfft transforms quickly (factors 2, 3, 5, 7, 11)."""
    return scipy.fft.next_fast_len(int(n), real=True)
