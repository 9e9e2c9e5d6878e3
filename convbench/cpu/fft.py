"""FFT convolution on the CPU: the convolution theorem, done the way a layer needs it.

Each padded input plane and each kernel is transformed once per call (real FFTs); the spectra
are multiplied and summed over input channels in frequency (``spectral_mac``, Numba), and only
the N x K output planes are transformed back. Input spectra serve all K output channels and
kernel spectra all N images.

Sizes: P x Q = fast lengths >= the padded image, so the circular correlation of the unpadded
image equals the linear one on every output we keep. Cross-correlation is the product with the
conjugate kernel spectrum; true convolution rotates the kernel once while staging it. Padding
is a cyclic shift of the read-out (out[t] = z[(t*s - pad) mod P]), so the input is never padded
twice; dilation places the taps d apart in the kernel buffer; stride reads every s-th output
(the stride-1 result is computed in full, then sampled).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .. import workspace
from ..registry import Algorithm, register
from ..spec import ConvSpec
from .spectral import (complex_dtype, fast_len, fft_columns, fft_cost_features, fft_growth,
                       fft_rough_cost, irfft2, kernel_spectra, rfft2_rows_peak, rfft_rows,
                       spectral_mac, ungrouped)


def transform_shape(spec: ConvSpec) -> tuple[int, int]:
    """FFT size (P, Q): fast lengths at least the padded image (so no output wraps)."""
    hp, wp = spec.padded_size
    return fast_len(hp), fast_len(wp)


@njit(parallel=True, cache=True)
def _stage_images(x, buf):
    """buf[n, c, :H, :W] = x[n, c], zero columns up to Q (the rows past H are implicit zeros)."""
    n_img, c_in, h, wid = x.shape
    for nc in prange(n_img * c_in):
        n, c = nc // c_in, nc % c_in
        buf[n, c, :, wid:] = 0.0
        buf[n, c, :, :wid] = x[n, c]


@njit(parallel=True, cache=True)
def _read_out(z, out, sh, sw, pt, pl):
    """out[n, k, oh, ow] = z[n, k, (oh*sh - pt) mod P, (ow*sw - pl) mod Q]."""
    n_img, k_out, ho, wo = out.shape
    p, q = z.shape[2], z.shape[3]
    for task in prange(n_img * k_out * ho):
        oh = task % ho
        k = (task // ho) % k_out
        n = task // (ho * k_out)
        r = (oh * sh - pt) % p
        col = (-pl) % q  # walk the columns without a modulo per element
        for ow in range(wo):
            out[n, k, oh, ow] = z[n, k, r, col]
            col += sw
            if col >= q:
                col -= q


def fft_workspace_bytes(spec: ConvSpec) -> int:
    """Peak of the buffers alive together, step by step as in :func:`fft_conv2d`."""
    p, q = transform_shape(spec)
    qh = q // 2 + 1
    ekh = spec.effective_kernel[0]
    n, c, k = spec.n, spec.c, spec.k
    cplx = lambda *shape: workspace.nbytes(shape, complex_dtype(spec.dtype))  # noqa: E731
    real = lambda *shape: workspace.nbytes(shape, spec.dtype)  # noqa: E731
    images = rfft2_rows_peak((n, c), spec.h, p, q, spec.dtype)
    kernels = cplx(n, c, p, qh) + rfft2_rows_peak((k, c), ekh, p, q, spec.dtype)
    product = cplx(n, c, p, qh) + cplx(k, c, p, qh) + cplx(n, k, p, qh)
    inverse = cplx(n, k, p, qh) + real(n, k, p, q)
    return max(images, kernels, product, inverse)


def fft_conv2d(x: np.ndarray, w: np.ndarray, spec: ConvSpec,
               wf: np.ndarray | None = None) -> np.ndarray:
    """Whole-image FFT convolution; see the module docstring for how each parameter maps.
    ``wf``: the kernel spectra, when prepared beforehand."""
    out = np.empty(spec.out_shape, dtype=x.dtype)  # first, so the measured peak is out + workspace
    p, q = transform_shape(spec)
    qh = q // 2 + 1
    buf = workspace.empty((spec.n, spec.c, spec.h, q), x.dtype)
    _stage_images(x, buf)
    rows = rfft_rows(buf)
    del buf
    xf = fft_columns(rows, p)
    del rows
    if wf is None:
        wf = kernel_spectra(w, spec, p, q)
    yf = workspace.empty((spec.n, spec.k, 1, p * qh), xf.dtype)
    spectral_mac(xf.reshape(spec.n, spec.c, 1, p * qh), wf.reshape(spec.k, spec.c, p * qh), yf)
    del xf, wf
    z = irfft2(yf.reshape(spec.n, spec.k, p, qh), (p, q))
    del yf
    _read_out(z, out, spec.stride[0], spec.stride[1], spec.pad[0], spec.pad[2])
    return out


def prepare_fft(w: np.ndarray, spec: ConvSpec):
    """The kernel spectra computed once; the call transforms only the input."""
    wf = kernel_spectra(w, spec, *transform_shape(spec))
    return lambda x: fft_conv2d(x, w, spec, wf)


register(Algorithm(
    name="fft", op="conv2d", device="cpu", run=fft_conv2d, workspace_bytes=fft_workspace_bytes,
    prepare=prepare_fft, supports=ungrouped, limits="groups = 1 only",
    cost_features=lambda spec: fft_cost_features(spec, *transform_shape(spec)),
    rough_cost=lambda spec: fft_rough_cost(spec, *transform_shape(spec)),
    transform_growth=fft_growth, error_model="fft", bound_by="fft",
    description="convolution theorem: rFFT once per plane and kernel, Numba spectral MAC",
))
