"""Adding a (K,) bias to an (N, K, Ho, Wo) output in place, for algorithms that do not add it
in their own output write: one parallel pass on the host, one kernel launch on the GPU."""
from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True)
def _add_bias(out, b):
    n_img, k_out, ho, wo = out.shape
    for plane in prange(n_img * k_out):
        n, k = plane // k_out, plane % k_out
        value = b[k]
        for oh in range(ho):
            for ow in range(wo):
                out[n, k, oh, ow] += value


# An empty bias for kernels that take one argument either way (a length-0 bias: none to add).
NO_BIAS = {np.dtype(np.float32): np.empty(0, np.float32),
           np.dtype(np.float64): np.empty(0, np.float64)}


def kernel_bias(b, dtype):
    """``b``, or the empty bias of ``dtype`` when there is none."""
    return NO_BIAS[np.dtype(dtype)] if b is None else b


PARALLEL_FROM = 1 << 16  # outputs from which the parallel pass beats NumPy's (a region costs ~10 us)


def add_bias(out, b):
    """out[:, k] += b[k]; returns ``out`` (a NumPy array, or a device array on the GPU). Small
    outputs take NumPy's broadcast add: starting a parallel region costs more than they do."""
    if isinstance(out, np.ndarray):
        b = np.asarray(b, dtype=out.dtype)
        if out.size < PARALLEL_FROM:
            np.add(out, b[None, :, None, None], out=out)
        else:
            _add_bias(out, b)
        return out
    from .cuda.bias import add_bias as add_on_device

    return add_on_device(out, b)
