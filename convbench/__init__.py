"""convbench: which convolution or pooling algorithm is fastest for this layer, and why.

Public API (see DESIGN.md section 1): re-exports only.
"""
import os

# Numba's OpenMP workers spin after each parallel region; by default long enough to steal the
# cores from the OpenBLAS and pocketfft threads that im2col and the FFT algorithms call next
# (measured on 2 cores: im2col 8.8 -> 5.2 ms, fft 1.6 -> 1.3 ms; torch's small layers unchanged).
# A short spin keeps back-to-back kernels fast. Set before Numba starts its pool; a value the
# user chose wins.
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "30000")
# OpenBLAS's idle threads likewise keep polling for ~2^28 cycles after a GEMM; interleaved with
# torch or Numba kernels that cost them 2x (measured: torch 2.7 -> 6.5 ms right after im2col).
# 2^4 cycles makes them sleep at once. Only effective when convbench is imported before NumPy
# loads OpenBLAS, as `python -m convbench` does.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
from .allocator import steady_malloc  # noqa: E402

# Workspace from an already-mapped heap, not fresh pages each call (allocator.py: up to 3x on
# the FFT algorithms); CONVBENCH_STEADY_MALLOC=0 leaves glibc's defaults alone.
steady_malloc()
from .auto import choose, explain  # noqa: E402  (after the thread setting above)
from .ops import (
    algorithms,
    avg_pool2d,
    conv2d,
    convolve2d,
    correlate2d,
    max_pool2d,
    workspace_bytes,
)
from ._version import __version__
from .spec import ConvSpec, PoolSpec, conv_spec, pool_spec


__all__ = [
    "ConvSpec", "PoolSpec", "algorithms", "avg_pool2d", "choose", "conv2d", "conv_spec", "explain",
    "convolve2d", "correlate2d", "max_pool2d", "pool_spec", "workspace_bytes", "__version__",
]
