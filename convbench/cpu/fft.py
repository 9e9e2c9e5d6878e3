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
from .spectral import complex_dtype, fast_len, irfft2, rfft2, spectral_mac, stage_kernels


def transform_shape(spec: ConvSpec) -> tuple[int, int]:
    """FFT size (P, Q): fast lengths at least the padded image (so no output wraps)."""
    hp, wp = spec.padded_size
    return fast_len(hp), fast_len(wp)


@njit(parallel=True, cache=True)
def _stage_images(x, buf):
    """buf[n, c] = x[n, c] at the origin, zeros elsewhere (the zero tail absorbs the padding)."""
    n_img, c_in, h, wid = x.shape
    for nc in prange(n_img * c_in):
        n, c = nc // c_in, nc % c_in
        buf[n, c, :, :] = 0.0
        buf[n, c, :h, :wid] = x[n, c]


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
        for ow in range(wo):
            out[n, k, oh, ow] = z[n, k, r, (ow * sw - pl) % q]


def fft_workspace_bytes(spec: ConvSpec) -> int:
    """Peak of the buffers alive together (see the sequence in :func:`fft_conv2d`)."""
    p, q = transform_shape(spec)
    qh = q // 2 + 1
    real = lambda *shape: workspace.nbytes(shape, spec.dtype)  # noqa: E731
    cplx = lambda *shape: workspace.nbytes(shape, complex_dtype(spec.dtype))  # noqa: E731
    n, c, k = spec.n, spec.c, spec.k
    return max(
        real(n, c, p, q) + cplx(n, c, p, qh),  # staged images and their spectra
        cplx(n, c, p, qh) + real(k, c, p, q) + cplx(k, c, p, qh),  # + staged kernels, spectra
        cplx(n, c, p, qh) + cplx(k, c, p, qh) + cplx(n, k, p, qh),  # + output spectra
        cplx(n, k, p, qh) + real(n, k, p, q),  # output spectra and the inverse transform
    )


def fft_conv2d(x: np.ndarray, w: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """Whole-image FFT convolution; see the module docstring for how each parameter maps."""
    out = np.empty(spec.out_shape, dtype=x.dtype)  # first, so the measured peak is out + workspace
    p, q = transform_shape(spec)
    buf = workspace.empty((spec.n, spec.c, p, q), x.dtype)
    _stage_images(x, buf)
    xf = rfft2(buf)
    del buf
    buf = workspace.empty((spec.k, spec.c, p, q), x.dtype)
    stage_kernels(w, buf, spec.dilation[0], spec.dilation[1], spec.flip)
    wf = rfft2(buf)
    del buf
    qh = q // 2 + 1
    yf = workspace.empty((spec.n, spec.k, 1, p * qh), xf.dtype)
    spectral_mac(xf.reshape(spec.n, spec.c, 1, p * qh), wf.reshape(spec.k, spec.c, p * qh), yf)
    del xf, wf
    z = irfft2(yf.reshape(spec.n, spec.k, p, qh), (p, q))
    del yf
    _read_out(z, out, spec.stride[0], spec.stride[1], spec.pad[0], spec.pad[2])
    return out


register(Algorithm(
    name="fft", op="conv2d", device="cpu", run=fft_conv2d, workspace_bytes=fft_workspace_bytes,
    description="convolution theorem: rFFT once per plane and kernel, Numba spectral MAC",
    error_model="fft", tags=("fft",),
))
