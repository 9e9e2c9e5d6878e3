"""How far an algorithm's output may be from the float64 reference: one place, with reasons.

Two error models, chosen per algorithm by ``Algorithm.error_model``:

* ``"sum"`` (direct loops, im2col + GEMM, pooling): any order of m = C*kh*kw products summed in
  precision eps has |error| <= m * eps * (|x| * |w|) elementwise (Higham, "Accuracy and
  Stability of Numerical Algorithms", eq. 3.5, with gamma_m ~ m*eps). This is a worst-case bound,
  so a correct kernel never fails it, while an indexing bug (an O(1) error) always does.
* ``"fft"`` (convolution theorem, and peers that may use Winograd or FFT internally): an FFT of
  length L in precision eps has error ~ eps * log2(L) times the 2-norm of its input
  (Higham ch. 24), so one output plane has |error| <= c * eps * log2(P*Q) * sum_c
  ||x_nc||_2 ||w_kc||_2. c = 8 covers the forward and inverse transforms and the spectral
  multiply-accumulate; it was checked on the hypothesis-drawn shapes of tests/test_algorithms.py
  (observed errors stay below 1/10 of the bound). The CPU algorithms make a kernel's spectrum
  as a DFT over its kh*kw taps rather than an FFT of the zero-padded plane: a sum of kh*kw
  terms per frequency, accurate to the same order (on layers up to 25x25 kernels, float32 and
  float64, their largest error was 1% of this bound).
* ``"winograd_f2"``, ``"winograd_f4"`` (F(m x m, 3x3)): Y = A^T [sum_c U_c * V_c] A with
  U = G g G^T and V = B^T d B is a chain of sums, so the same argument as for "sum" applies to
  the whole chain: |error| <= 2 * n * eps * (|A^T| [sum_c (|G||g||G^T|) * (|B^T||d||B|)] |A|)
  elementwise, with n = C + 4a + 2 rounded operations in sequence (a = m + 2: two a-term
  transform passes each side, the product, the sum over channels). The absolute transforms are
  what grow with the tile: their entries reach 5 and 8 for F(4x4) against 1 for F(2x2), so
  F(4x4)'s bound (and its error) is about two orders of magnitude above F(2x2)'s and direct's.
"""
from __future__ import annotations

import numpy as np

from .arith import ceil_div
from .reference import conv2d_reference
from .spec import ConvSpec, PoolSpec
from .winograd_transforms import matrices

FFT_SAFETY = 8.0  # c in the "fft" bound above
ABS_FLOOR = 1e-30  # keeps an all-zero bound from rejecting exact zeros compared with -0.0


def _eps(dtype) -> float:
    return float(np.finfo(np.dtype(dtype)).eps)


def conv_error_bound(x: np.ndarray, w: np.ndarray, spec: ConvSpec, model: str = "sum",
                     b: np.ndarray | None = None):
    """Elementwise (or broadcastable) absolute error bound for a conv2d output (with the bias
    ``b`` added: one more rounding of a term of size |b|)."""
    eps = _eps(spec.dtype)
    abs_b = 0.0 if b is None else np.abs(np.asarray(b, np.float64))[None, :, None, None]
    if model == "sum":  # the bias is one more term of the sum
        m = spec.cg * spec.kh * spec.kw + (b is not None)
        # |x| * |w| in float64: the magnitude the rounding errors scale with, per output
        magnitude = conv2d_reference(np.abs(x), np.abs(w), spec) + abs_b
        return 2.0 * m * eps * magnitude + ABS_FLOOR
    bias = 2.0 * eps * abs_b
    if model == "fft":
        hp, wp = spec.padded_size
        log_len = np.log2(max(4, 4 * hp * wp))  # transform sizes up to ~2x the padded image
        x_norm = np.sqrt((np.asarray(x, np.float64) ** 2).sum(axis=(2, 3)))  # (N, C)
        w_norm = np.sqrt((np.asarray(w, np.float64) ** 2).sum(axis=(2, 3)))  # (K, C/groups)
        plane = np.zeros((spec.n, spec.k))  # sum over k's group of ||x_nc|| ||w_kc||
        cg, kg = spec.cg, spec.kg
        for g in range(spec.groups):
            plane[:, g * kg:(g + 1) * kg] = x_norm[:, g * cg:(g + 1) * cg] @ w_norm[
                g * kg:(g + 1) * kg].T
        return (FFT_SAFETY * eps * log_len * plane)[:, :, None, None] + bias + ABS_FLOOR
    if model in ("winograd_f2", "winograd_f4"):
        return winograd_error_bound(x, w, spec, int(model[-1])) + bias + ABS_FLOOR
    raise ValueError(f"model must be 'sum', 'fft', 'winograd_f2' or 'winograd_f4', got {model!r}")


def winograd_error_bound(x: np.ndarray, w: np.ndarray, spec: ConvSpec, m: int) -> np.ndarray:
    """The "winograd" bound above, computed by running F(m x m, 3x3) on |x| and |w| with the
    absolute transform matrices, in float64."""
    bt, g, at = (np.abs(mat) for mat in matrices(m))
    a = m + 2
    ho, wo = spec.out_size
    th, tw = ceil_div(ho, m), ceil_div(wo, m)
    pt, _, pl, _ = spec.pad
    # the padded input, extended with zeros to whole tiles
    xp = np.zeros((spec.n, spec.c, th * m + 2, tw * m + 2))
    rows, cols = min(spec.h, th * m + 2 - pt), min(spec.w, tw * m + 2 - pl)
    xp[:, :, pt:pt + rows, pl:pl + cols] = np.abs(np.asarray(x, np.float64))[:, :, :rows, :cols]
    tiles = np.lib.stride_tricks.sliding_window_view(xp, (a, a), axis=(2, 3))[:, :, ::m, ::m]
    wk = np.abs(np.asarray(w, np.float64))
    v = np.einsum("xi,nctsij,yj->ntsxyc", bt, tiles, bt, optimize=True)
    u = np.einsum("xi,kcij,yj->xyck", g, wk, g, optimize=True)
    prod = np.einsum("ntsxyc,xyck->ntsxyk", v, u, optimize=True)
    y = np.einsum("ix,ntsxyk,jy->nktisj", at, prod, at, optimize=True)
    y = y.reshape(spec.n, spec.k, th * m, tw * m)[:, :, :ho, :wo]
    depth = spec.c + 4 * a + 2
    return 2.0 * depth * _eps(spec.dtype) * y


def pool_error_bound(x: np.ndarray, spec) -> float | np.ndarray:
    """Max pooling is exact; averaging size_h*size_w values errs by at most that many eps."""
    if spec.kind == "max":
        return ABS_FLOOR
    return 2.0 * spec.size[0] * spec.size[1] * _eps(spec.dtype) * float(np.nanmax(np.abs(x))) + ABS_FLOOR


def error_bound(spec, x: np.ndarray, w: np.ndarray | None = None, model: str = "sum",
                b: np.ndarray | None = None):
    """The bound for any op: pooling's, or the convolution bound of error model ``model``
    (an algorithm's ``error_model``)."""
    if isinstance(spec, PoolSpec):
        return pool_error_bound(x, spec)
    return conv_error_bound(x, w, spec, model, b)


def check_close(result: np.ndarray, expected: np.ndarray, bound) -> tuple[bool, float]:
    """Whether ``result`` is within ``bound`` of ``expected`` (NaNs must match); also the
    worst ratio of error to bound, for reports."""
    result = np.asarray(result, np.float64)
    if result.shape != expected.shape:
        return False, float("inf")
    nan_r, nan_e = np.isnan(result), np.isnan(expected)
    if not np.array_equal(nan_r, nan_e):
        return False, float("inf")
    ok = ~nan_e
    err = np.abs(result - expected)
    bound = np.broadcast_to(bound, err.shape)
    inf_e = np.isinf(expected) & ok
    if not np.array_equal(result[inf_e], expected[inf_e]):
        return False, float("inf")
    finite = ok & ~inf_e
    if not finite.any():
        return True, 0.0
    ratio = float((err[finite] / bound[finite]).max())
    return ratio <= 1.0, ratio
