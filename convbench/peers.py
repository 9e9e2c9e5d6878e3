"""Well-known baselines registered as peers (``is_peer=True``), only where the package imports.

They answer "is ours any good?": SciPy's direct and FFT correlation looped over (n, k, c) as a
signal-processing user would write it, a NumPy im2col, and PyTorch (oneDNN on the CPU).
Each handles every spec the API accepts (padding by np.pad, dilation by a dilated kernel,
stride by a strided crop), so every case has a peer to compare with.
"""
from __future__ import annotations

import importlib.util

import numpy as np
import scipy.signal

from .registry import Algorithm, register
from .spec import ConvSpec, PoolSpec


def _padded(x: np.ndarray, spec: ConvSpec) -> np.ndarray:
    pt, pb, pl, pr = spec.pad
    return np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr))) if any(spec.pad) else x


def _dilated(w: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """The kernel with dilation-1 zeros between taps, and rotated when ``spec.flip``."""
    w = w[:, :, ::-1, ::-1] if spec.flip else w
    if spec.dilation == (1, 1):
        return w
    ekh, ekw = spec.effective_kernel
    out = np.zeros(w.shape[:2] + (ekh, ekw), w.dtype)
    out[:, :, ::spec.dilation[0], ::spec.dilation[1]] = w
    return out


def _scipy_loop(correlate):
    """Build a peer that loops ``correlate(plane, kernel, 'valid')`` over (n, k, c)."""

    def run(x: np.ndarray, w: np.ndarray, spec: ConvSpec) -> np.ndarray:
        xp, wd = _padded(x, spec), _dilated(w, spec)
        (sh, sw), (ho, wo) = spec.stride, spec.out_size
        out = np.zeros(spec.out_shape, x.dtype)
        for n in range(spec.n):
            for k in range(spec.k):
                for c in range(spec.c):
                    full = correlate(xp[n, c], wd[k, c], "valid")
                    out[n, k] += full[: (ho - 1) * sh + 1: sh, : (wo - 1) * sw + 1: sw]
        return out

    return run


def _fft_correlate(a, b, mode):
    return scipy.signal.fftconvolve(a, b[::-1, ::-1], mode)


def _oa_correlate(a, b, mode):
    return scipy.signal.oaconvolve(a, b[::-1, ::-1], mode)


def numpy_im2col(x: np.ndarray, w: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """sliding_window_view + tensordot: what a NumPy user writes for a conv layer."""
    xp, wd = _padded(x, spec), _dilated(w, spec)
    (sh, sw), (ho, wo) = spec.stride, spec.out_size
    win = np.lib.stride_tricks.sliding_window_view(xp, wd.shape[2:], axis=(2, 3))
    win = win[:, :, : (ho - 1) * sh + 1: sh, : (wo - 1) * sw + 1: sw]
    return np.ascontiguousarray(np.einsum("nchwij,kcij->nkhw", win, wd, optimize=True))


def _peer_padding_bytes(spec: ConvSpec) -> int:
    """What the peers' own NumPy code allocates: the padded input (SciPy's internals not counted)."""
    if not any(spec.pad):
        return 0
    hp, wp = spec.padded_size
    return spec.n * spec.c * hp * wp * spec.itemsize


for _name, _fn, _desc, _model in (
    ("scipy_direct", _scipy_loop(scipy.signal.correlate2d),
     "scipy.signal.correlate2d looped over (n, k, c)", "sum"),
    ("scipy_fft", _scipy_loop(_fft_correlate),
     "scipy.signal.fftconvolve looped over (n, k, c)", "fft"),
    ("scipy_oa", _scipy_loop(_oa_correlate),
     "scipy.signal.oaconvolve (overlap-add) looped over (n, k, c)", "fft"),
):
    register(Algorithm(name=_name, op="conv2d", device="cpu", run=_fn, is_peer=True,
                       workspace_bytes=_peer_padding_bytes, description=_desc,
                       error_model=_model))
register(Algorithm(name="numpy_im2col", op="conv2d", device="cpu", run=numpy_im2col,
                   is_peer=True, description="sliding_window_view + einsum",
                   workspace_bytes=_peer_padding_bytes))


def numpy_pool(x: np.ndarray, spec: PoolSpec) -> np.ndarray:
    """Pooling with sliding_window_view: the NumPy idiom."""
    ph, pw = spec.pad
    fill = -np.inf if spec.kind == "max" else 0.0
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=fill) if ph or pw else x
    (sh, sw), (ho, wo) = spec.stride, spec.out_size
    win = np.lib.stride_tricks.sliding_window_view(xp, spec.size, axis=(2, 3))
    win = win[:, :, : (ho - 1) * sh + 1: sh, : (wo - 1) * sw + 1: sw]
    if spec.kind == "max":
        return np.ascontiguousarray(win.max(axis=(4, 5)))
    if spec.count_include_pad or not (ph or pw):
        return np.ascontiguousarray(win.mean(axis=(4, 5)))
    from .reference import pool_reference  # the rare exclude-padding case: count valid cells

    return pool_reference(x, spec).astype(x.dtype)


for _op in ("max_pool2d", "avg_pool2d"):
    register(Algorithm(name="numpy", op=_op, device="cpu", run=numpy_pool, is_peer=True,
                       description="sliding_window_view + max/mean"))


if importlib.util.find_spec("torch") is not None:
    from . import peers_torch  # noqa: F401  registers the PyTorch peers
