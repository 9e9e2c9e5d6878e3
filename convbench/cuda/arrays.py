"""Moving data to and from the GPU, and allocating device workspace through one helper."""
from __future__ import annotations

import weakref

import numpy as np
from numba import cuda

from ..arith import ceil_div
from . import memory


def device_empty(shape, dtype):
    """Uninitialised device array; counted by the memory tracker in the simulator (on a real
    GPU the EMM plugin counts every allocation)."""
    arr = cuda.device_array(shape, dtype=dtype)
    if not memory.plugin_installed():
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        memory.TRACKER.allocated(nbytes)
        weakref.finalize(arr, memory.TRACKER.freed, nbytes)
    return arr


def is_device_array(a) -> bool:
    """A Numba device array, or anything exposing __cuda_array_interface__ (CuPy, PyTorch)."""
    if hasattr(a, "__cuda_array_interface__"):
        return True
    return bool(cuda.is_cuda_array(a)) if hasattr(cuda, "is_cuda_array") else (
        cuda.devicearray.is_cuda_ndarray(a) if hasattr(cuda, "devicearray") else
        type(a).__name__ == "FakeCUDAArray")  # the simulator's device array


def to_device(a):
    """A C-contiguous device array for ``a`` (a device array is used as it is)."""
    if getattr(a, "__cuda_ndarray__", False):
        return a  # already Numba's: a fresh view through the interface costs ~20 us per call
    if is_device_array(a):
        return cuda.as_cuda_array(a) if hasattr(a, "__cuda_array_interface__") else a
    return cuda.to_device(np.ascontiguousarray(a))


def grid_1d(n: int, threads: int) -> tuple[int, int]:
    """(blocks, threads) covering n elements."""
    return (max(1, ceil_div(n, threads)), threads)


def grid_2d(rows: int, cols: int, block: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """Blocks covering a rows x cols grid with ``block`` = (threads along cols, along rows)."""
    bx, by = block
    return ((max(1, ceil_div(cols, bx)), max(1, ceil_div(rows, by))), block)


def host_or_device(kernel_fn):
    """Wrap ``kernel_fn(device inputs..., spec[, bias]) -> device output`` as a registry
    ``run``: host inputs come back as a host array, device inputs as a device array."""
    from ..spec import ConvSpec, PoolSpec

    def run(*args):
        at = next(i for i, a in enumerate(args) if isinstance(a, (ConvSpec, PoolSpec)))
        arrays, spec, extra = args[:at], args[at], args[at + 1:]
        on_device = is_device_array(arrays[0])
        out = kernel_fn(*[to_device(a) for a in arrays], spec, *extra)
        return out if on_device else out.copy_to_host()

    run.__name__ = kernel_fn.__name__
    run.__doc__ = kernel_fn.__doc__
    return run


def numba_type(dtype):
    """The Numba scalar type of a NumPy float or complex dtype (for shared and local arrays)."""
    from numba import complex64, complex128, float32, float64

    return {"float32": float32, "float64": float64, "complex64": complex64,
            "complex128": complex128}[np.dtype(dtype).name]
