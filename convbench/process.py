"""The one module through which convbench changes its process; nothing else does.

A library call (``cb.conv2d`` and friends) leaves environment variables, allocator settings and
third-party flags as it found them, with one exception made on purpose, :func:`prefer_tbb`:

* ``prefer_tbb()`` runs when the CPU kernels are first imported. Numba's default threading
  layer on Linux is GNU OpenMP, which cannot survive ``fork()``: a child process forked after
  any parallel kernel ran (a ``multiprocessing`` pool, data-loader workers) is terminated by
  Numba the moment it calls one. Numba prefers Intel TBB when it can load it, and TBB is both
  fork- and thread-safe, but pip installs ``libtbb.so.12`` into ``<prefix>/lib``, where the
  dynamic loader does not look. So, only when Numba has not chosen a layer yet and the user
  has not named one (``NUMBA_THREADING_LAYER``), the library is loaded from there; Numba's own
  default order then picks it. Without TBB nothing is changed.

What fair timing needs is applied by :func:`configure_for_benchmarks`: the command line calls
it before anything else, and a library user who times convbench against other libraries may
call it too (``convbench.configure_for_benchmarks()``, ideally before importing NumPy):

* ``GOMP_SPINCOUNT=30000`` (unless set, or ``OMP_WAIT_POLICY`` is): OpenMP workers (torch's)
  otherwise spin long after each parallel region and take the cores from whatever runs next,
  which made interleaved timings unfair by 2-4x on 2 cores;
* ``OPENBLAS_THREAD_TIMEOUT=4`` (unless set): OpenBLAS's idle threads sleep after 2^4 cycles
  instead of polling for ~0.1 s; OpenBLAS raises any smaller value to 4. Read when NumPy loads
  OpenBLAS, so effective only before NumPy is imported. ``GOMP_SPINCOUNT`` stays above 0
  because torch's calls of several parallel regions ran 2-5x slower when its workers slept
  between them;
* glibc's malloc thresholds fixed (unless ``CONVBENCH_STEADY_MALLOC=0``): by default glibc
  returns large freed blocks to the kernel and moves its thresholds as the process runs, so the
  same call page-faulted its workspace in anew or not depending on what ran before it.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from pathlib import Path

from . import settings

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed value on 64-bit: blocks up to 32 MiB from the heap
TRIM_THRESHOLD = 256 << 20  # freed heap kept mapped up to 256 MiB


def steady_malloc() -> bool:
    """Fix glibc's mmap and trim thresholds; True when set (False off glibc, or when
    CONVBENCH_STEADY_MALLOC is off)."""
    if not settings.flag("CONVBENCH_STEADY_MALLOC", True):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl without mallopt)
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def configure_for_benchmarks() -> dict[str, object]:
    """Apply the settings fair interleaved timing needs (see the module docstring); returns
    what is now in effect, for the run's environment record."""
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", "30000")
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
    return {"GOMP_SPINCOUNT": os.environ.get("GOMP_SPINCOUNT"),
            "OPENBLAS_THREAD_TIMEOUT": os.environ.get("OPENBLAS_THREAD_TIMEOUT"),
            "numpy_loaded_before": "numpy" in sys.modules,
            "steady_malloc": steady_malloc()}


_tbb_tried = False


def prefer_tbb() -> bool:
    """Load pip's libtbb so that Numba's default threading layer is the fork-safe TBB one
    (see the module docstring). True when TBB was loaded here."""
    global _tbb_tried
    if _tbb_tried or os.environ.get("NUMBA_THREADING_LAYER") or not sys.platform.startswith(
            "linux"):
        return False
    _tbb_tried = True
    from numba.np.ufunc import parallel

    if parallel._is_initialized:  # Numba already chose a layer for this process
        return False
    for folder in {Path(sys.prefix) / "lib", Path(sys.base_prefix) / "lib"}:
        candidate = folder / "libtbb.so.12"
        if candidate.exists():
            try:
                ctypes.CDLL(str(candidate), mode=ctypes.RTLD_GLOBAL)
                return True
            except OSError:
                return False
    return False
