"""CPU peers: SciPy's direct and FFT correlation looped over (n, k, c) as a signal-processing
user would write it, a NumPy im2col, NumPy pooling, and PyTorch (oneDNN) where it imports.
Each handles every spec the API accepts (padding, dilation and flip through ``layout.py``,
stride by a strided crop), so every case has a peer to compare with."""
from __future__ import annotations

import importlib.util

import numpy as np
import scipy.signal

from ..arith import sampled
from ..registry import Algorithm, register
from ..spec import ConvSpec, PoolSpec
from .layout import dilated_kernel, padded, padded_bytes

from . import SCIPY_METHODS


def _scipy_loop(correlate):
    """Build a peer that loops ``correlate(plane, kernel, 'valid')`` over (n, k, c)."""

    def run(x: np.ndarray, w: np.ndarray, spec: ConvSpec) -> np.ndarray:
        xp, wd = padded(x, spec), dilated_kernel(w, spec)
        (sh, sw), (ho, wo) = spec.stride, spec.out_size
        rows, cols = sampled(0, ho, sh), sampled(0, wo, sw)
        out = np.zeros(spec.out_shape, x.dtype)
        for n in range(spec.n):
            for k in range(spec.k):
                c0 = (k // spec.kg) * spec.cg  # the input channels of k's group
                for c in range(spec.cg):
                    out[n, k] += correlate(xp[n, c0 + c], wd[k, c], "valid")[rows, cols]
        return out

    return run


def _fft_correlate(a, b, mode):
    return scipy.signal.fftconvolve(a, b[::-1, ::-1], mode)


def _oa_correlate(a, b, mode):
    return scipy.signal.oaconvolve(a, b[::-1, ::-1], mode)


def _kernel_copy_bytes(spec: ConvSpec) -> int:
    """A rotated or dilated kernel is a strided view that reshaping copies."""
    if not spec.flip and spec.dilation == (1, 1):
        return 0
    ekh, ekw = spec.effective_kernel
    return spec.k * spec.c * ekh * ekw * spec.itemsize


def numpy_im2col(x: np.ndarray, w: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """sliding_window_view, one reshape into the im2col matrix, one matmul: what a NumPy user
    writes for a conv layer."""
    xp, wd = padded(x, spec), dilated_kernel(w, spec)
    (sh, sw), (ho, wo) = spec.stride, spec.out_size
    ekh, ekw = spec.effective_kernel
    win = np.lib.stride_tricks.sliding_window_view(xp, (ekh, ekw), axis=(2, 3))
    win = win[:, :, sampled(0, ho, sh), sampled(0, wo, sw)]  # (N, C, Ho, Wo, ekh, ekw)
    cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(spec.n * ho * wo, -1)  # copies
    if spec.groups == 1:
        y = cols @ wd.reshape(spec.k, -1).T  # (N*Ho*Wo, K)
    else:  # each group's block of the matrix against its kernels
        depth = spec.cg * ekh * ekw
        y = np.concatenate([cols[:, g * depth:(g + 1) * depth]
                            @ wd[g * spec.kg:(g + 1) * spec.kg].reshape(spec.kg, -1).T
                            for g in range(spec.groups)], axis=1)
    return np.ascontiguousarray(y.reshape(spec.n, ho, wo, spec.k).transpose(0, 3, 1, 2))


def numpy_im2col_workspace(spec: ConvSpec) -> int:
    """The padded input, the im2col matrix, the (N*Ho*Wo, K) product and a kernel copy (with
    groups, the groups' products before they are joined)."""
    ho, wo = spec.out_size
    ekh, ekw = spec.effective_kernel
    rows = spec.n * ho * wo
    products = rows * spec.k * spec.itemsize * (2 if spec.groups > 1 else 1)
    return (padded_bytes(spec) + _kernel_copy_bytes(spec)
            + rows * spec.c * ekh * ekw * spec.itemsize + products)


for _name, _fn, _desc, _model, _family in (
    (SCIPY_METHODS["direct"], _scipy_loop(scipy.signal.correlate2d),
     "scipy.signal.correlate2d looped over (n, k, c)", "sum", "direct"),
    (SCIPY_METHODS["fft"], _scipy_loop(_fft_correlate),
     "scipy.signal.fftconvolve looped over (n, k, c)", "fft", "fft"),
    ("scipy_oa", _scipy_loop(_oa_correlate),
     "scipy.signal.oaconvolve (overlap-add) looped over (n, k, c)", "fft", "fft_tiled"),
):
    register(Algorithm(name=_name, op="conv2d", device="cpu", run=_fn, is_peer=True, compiles=False,
                       library="scipy", workspace_bytes=padded_bytes, description=_desc,
                       error_model=_model, bound_by="fft" if _model == "fft" else "numba",
                       family=_family))
register(Algorithm(name="numpy_im2col", op="conv2d", device="cpu", run=numpy_im2col,
                   is_peer=True, compiles=False, library="numpy", description="sliding_window_view + matmul",
                   workspace_bytes=numpy_im2col_workspace, bound_by="blas", family="im2col"))


def numpy_pool(x: np.ndarray, spec: PoolSpec) -> np.ndarray:
    """Pooling with sliding_window_view: the NumPy idiom."""
    ph, pw = spec.pad
    fill = -np.inf if spec.kind == "max" else 0.0
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=fill) if ph or pw else x
    (sh, sw), (ho, wo) = spec.stride, spec.out_size
    win = np.lib.stride_tricks.sliding_window_view(xp, spec.size, axis=(2, 3))
    win = win[:, :, sampled(0, ho, sh), sampled(0, wo, sw)]
    if spec.kind == "max":
        return np.ascontiguousarray(win.max(axis=(4, 5)))
    if spec.count_include_pad or not (ph or pw):
        return np.ascontiguousarray(win.mean(axis=(4, 5)))
    from ..reference import pool_reference  # the rare exclude-padding case: count valid cells

    return pool_reference(x, spec).astype(x.dtype)


for _op in ("max_pool2d", "avg_pool2d"):
    register(Algorithm(name="numpy", op=_op, device="cpu", run=numpy_pool, is_peer=True, compiles=False,
                       library="numpy", description="sliding_window_view + max/mean",
                       bound_by="memory", family="direct"))


if importlib.util.find_spec("torch") is not None:
    from . import torch_peer  # noqa: F401  registers the PyTorch peers
