"""FFT convolution on the CPU: the convolution theorem, done the way a layer needs it.

Each input plane is transformed once per call (convbench's own FFT for power-of-two sizes, else
pocketfft) and each kernel's spectrum made once, as a DFT over its taps (see ``spectra``); the
spectra are multiplied and summed over input channels by our register-blocked kernel, and only
the N x K output planes are transformed back. Input spectra serve all K output channels and
kernel spectra all N images.

Sizes: P x Q >= the padded image (:func:`transform_shape`), so the circular correlation of the
unpadded image equals the linear one on every output we keep. Cross-correlation is the product with the
conjugate kernel spectrum; true convolution rotates the kernel first. Padding is a cyclic shift
of the read-out (out[t] = z[(t*s - pad) mod P]), so the input is never padded; dilation places
the taps d apart in the kernel's DFT; stride reads every s-th output (the stride-1 result is
computed in full, then sampled).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..registry import Algorithm, register
from ..spec import ConvSpec
from .fourier import real_fft2
from .fourier.spectra import (Layout, image_spectra, kernel_spectra, kernel_spectra_bytes, layout,
                      output_planes, pipeline_peak, spectral_products)
from .fourier.sizes import (fast_len, fft_cost_features, fft_growth, fft_rough_cost, power_of_two,
                       ungrouped)


POWER_OF_TWO_AREA = 2.0  # the own FFT's sizes are taken up to this many times pocketfft's area


def transform_shape(spec: ConvSpec) -> tuple[int, int]:
    """FFT size (P, Q), at least the padded image (so no output wraps): powers of two, which
    convbench's own FFT transforms, unless that is more than POWER_OF_TWO_AREA times the area
    of pocketfft's fast lengths: past that the products over the extra frequencies cost more
    than the own FFT saves (the measurements behind the limit are in results/README.md)."""
    hp, wp = spec.padded_size
    fast = fast_len(hp), fast_len(wp)
    even = power_of_two(hp), power_of_two(wp)
    if real_fft2.applies(*even, spec.dtype) and (
            even[0] * even[1] <= POWER_OF_TWO_AREA * fast[0] * fast[1]):
        return even
    return fast


def _layout(spec: ConvSpec) -> Layout:
    return layout(*transform_shape(spec), spec.dtype)


@njit(parallel=True, cache=True)
def _read_out(z, out, sh, sw, pt, pl):
    """out[n, k, oh, ow] = z[n, k, 0, (oh*sh - pt) mod P, (ow*sw - pl) mod Q]."""
    n_img, k_out, ho, wo = out.shape
    p, q = z.shape[3], z.shape[4]
    for task in prange(n_img * k_out * ho):
        oh = task % ho
        k = (task // ho) % k_out
        n = task // (ho * k_out)
        source, target = z[n, k, 0, (oh * sh - pt) % p], out[n, k, oh]
        col = (-pl) % q
        if col + (wo - 1) * sw < q:  # the row does not wrap around: one vector loop
            _take(source, col, sw, target)
            continue
        for ow in range(wo):  # walk the columns without a modulo per element
            target[ow] = source[col]
            col += sw
            if col >= q:
                col -= q


@njit(cache=True)
def _take(source, first, step, target):
    """target[i] = source[first + i*step]."""
    for i in range(target.shape[0]):
        target[i] = source[first + i * step]


def fft_workspace_bytes(spec: ConvSpec) -> int:
    """Peak of the buffers alive together, step by step as in :func:`fft_conv2d`: the kernel
    spectra's factors are made first and kept throughout."""
    lay = _layout(spec)
    making, kept = kernel_spectra_bytes(spec, lay)
    return max(making, kept + pipeline_peak(spec, lay))


def fft_conv2d(x: np.ndarray, w: np.ndarray, spec: ConvSpec, ws=None) -> np.ndarray:
    """Whole-image FFT convolution; see the module docstring for how each parameter maps.
    ``ws``: the kernel spectra, when prepared beforehand."""
    out = np.empty(spec.out_shape, dtype=x.dtype)  # first, so the measured peak is out + workspace
    lay = _layout(spec)
    if ws is None:
        ws = kernel_spectra(w, spec, lay)
    xs = image_spectra(x.reshape(spec.n, spec.c, 1, spec.h, spec.w), lay)
    ys = spectral_products(xs, ws, spec.k, lay)
    del xs
    z = output_planes(ys, lay)
    del ys
    _read_out(z, out, spec.stride[0], spec.stride[1], spec.pad[0], spec.pad[2])
    return out


def prepare_fft(w: np.ndarray, spec: ConvSpec):
    """The kernel spectra computed and stored once; the call transforms only the input."""
    ws = kernel_spectra(w, spec, _layout(spec), store=True)
    return lambda x: fft_conv2d(x, w, spec, ws)


register(Algorithm(
    name="fft", op="conv2d", device="cpu", run=fft_conv2d, workspace_bytes=fft_workspace_bytes,
    prepare=prepare_fft, supports=ungrouped, limits="groups = 1 only",
    cost_features=lambda spec: fft_cost_features(spec, _layout(spec)),
    rough_cost=lambda spec: fft_rough_cost(spec, *transform_shape(spec)),
    # bound by Numba: its transforms (own FFT), kernel DFT and products are Numba kernels
    transform_growth=fft_growth, error_model="fft", bound_by="numba",
    description="convolution theorem: spectra once per plane and kernel, register-blocked products",
))
