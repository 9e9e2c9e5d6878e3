"""Adding a (K,) bias to an (N, K, Ho, Wo) device array in place (one launch)."""
from __future__ import annotations

import numpy as np
from numba import cuda

from . import launch
from .arrays import grid_2d, to_device
from .indexing import split_row


@cuda.jit
def _add_bias(out, b):
    ow, row = cuda.grid(2)
    n_img, k_out, ho, wo = out.shape
    if ow >= wo or row >= n_img * k_out * ho:  # the grid is rounded up to whole blocks
        return
    n, k, oh = split_row(row, ho, k_out)
    out[n, k, oh, ow] += b[k]


_ZERO: dict = {}


def device_bias(b, dtype):
    """``b`` on the device, or (no bias) a one-element zero array made once per dtype, for
    kernels that take a bias argument and a flag either way."""
    if b is not None:
        return to_device(b)
    dtype = np.dtype(dtype)
    if dtype not in _ZERO:
        _ZERO[dtype] = cuda.to_device(np.zeros(1, dtype))
    return _ZERO[dtype]


def add_bias(out, b):
    """out[:, k] += b[k] on the device; returns ``out``."""
    n, k, ho, wo = out.shape
    _add_bias[grid_2d(n * k * ho, wo, launch.current().pool_block)](out, to_device(b))
    return out
