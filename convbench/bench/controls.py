"""Fixed workloads the regression gate times beside each algorithm, one per kind of resource
an algorithm is bound by (``Algorithm.bound_by``): a ratio of an algorithm's time to a control
of its own kind carries from run to run better than an absolute time, because the machine's
mood moves both alike."""
from __future__ import annotations

from typing import Callable

import numpy as np
import scipy.fft
from numba import njit, prange

GEMM = 384  # float32 GEMM edge (BLAS)
STENCIL = 512  # image edge of the Numba control: a 5x5 stencil on 4 planes
FFT_PLANES, FFT_EDGE = 16, 128  # real 2-D transforms of the FFT control
COPY_BYTES = 32 << 20  # the memory control copies this much


@njit(parallel=True, cache=True)
def _stencil(x, out):
    planes, h, w = x.shape
    for task in prange(planes * (h - 4)):
        p, r = task // (h - 4), task % (h - 4)
        for c in range(w - 4):
            acc = 0.0
            for i in range(5):
                for j in range(5):
                    acc += x[p, r + i, c + j] * (0.04 * (i + j + 1))
            out[p, r, c] = acc


def _blas() -> Callable[[], object]:
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((GEMM, GEMM), dtype=np.float32) for _ in range(2))
    c = np.empty_like(a)
    return lambda: np.dot(a, b, out=c)


def _numba() -> Callable[[], object]:
    x = np.random.default_rng(0).standard_normal((4, STENCIL, STENCIL), dtype=np.float32)
    out = np.empty((4, STENCIL - 4, STENCIL - 4), np.float32)
    return lambda: _stencil(x, out)


def _fft() -> Callable[[], object]:
    x = np.random.default_rng(0).standard_normal((FFT_PLANES, FFT_EDGE, FFT_EDGE),
                                                 dtype=np.float32)
    return lambda: scipy.fft.rfft2(x, workers=1)


def _memory() -> Callable[[], object]:
    src = np.random.default_rng(0).standard_normal(COPY_BYTES // 4, dtype=np.float32)
    dst = np.empty_like(src)
    return lambda: np.copyto(dst, src)


CONTROLS = {
    "blas": (_blas, f"float32 GEMM {GEMM}^3 (numpy.dot)"),
    "numba": (_numba, f"parallel Numba 5x5 stencil on 4 x {STENCIL}^2 float32"),
    "fft": (_fft, f"scipy.fft.rfft2 of {FFT_PLANES} x {FFT_EDGE}^2 float32, one worker"),
    "memory": (_memory, f"numpy.copyto of {COPY_BYTES >> 20} MiB"),
}


def control(kind: str) -> Callable[[], object]:
    """A ready (compiled, warmed) control call for a ``bound_by`` kind."""
    fn = CONTROLS[kind][0]()
    fn()
    return fn


def describe() -> dict[str, str]:
    return {kind: text for kind, (_, text) in CONTROLS.items()}
