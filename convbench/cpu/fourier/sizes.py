"""What the CPU FFT algorithms share besides their spectra (``spectra``): which layers they
take, the transform sizes, and the cost features of an FFT convolution.
"""
from __future__ import annotations

import math

import scipy.fft


def ungrouped(spec) -> bool:
    """The spectral multiply-accumulate sums over every input channel: no channel groups."""
    return spec.groups == 1


def fast_len(n: int) -> int:
    """Smallest length >= n that pocketfft transforms quickly (factors 2, 3, 5, 7, 11)."""
    return scipy.fft.next_fast_len(int(n), real=True)


def power_of_two(n: int) -> int:
    """Smallest power of two >= n."""
    return 1 << max(0, int(n) - 1).bit_length()


def _log2(n: float) -> float:
    return math.log2(max(2.0, n))


def fft_cost_features(spec, lay, tiles: int = 1, chunks: int = 1,
                      read_out: int = 1) -> list[float]:
    """An FFT convolution's work (``lay``: its ``spectra.Layout``, ``tiles`` planes per
    image): a fixed cost; the FFTs of the image and output planes (P*Q*log2(P*Q) each) and
    their number of 1-D lines (each has a fixed cost too) when pocketfft makes them, or the
    same P*Q*log2(P*Q) as a feature of its own when convbench's FFT does (``lay.native``: a
    different speed, and no per-line cost); the kernels' spectra, a DFT over their taps made
    block by block (multiply-adds); the spectral multiply-accumulates; the outputs read out
    (``read_out`` passes each); and the chunks of tiles processed."""
    n, c, k = spec.n, spec.c, spec.k
    p, q, qh = lay.p, lay.q, lay.qh
    ho, wo = spec.out_size
    planes = (n * c + n * k) * tiles
    ffts = planes * p * q * _log2(p * q)
    lines = planes * (p + qh)
    kernels = k * c * qh * lay.pitch * 2 * spec.kh * chunks
    mac = n * k * c * tiles * qh * lay.pitch
    own = 1.0 if lay.native else 0.0
    return [1.0, ffts * (1.0 - own), lines * (1.0 - own), ffts * own, kernels, mac,
            n * k * ho * wo * read_out, chunks]


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
