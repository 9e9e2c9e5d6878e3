"""Direct 2-D convolution on the CPU: nested loops over the output, the reference algorithm.

v1 (kept, teaching and float64 reference): one output element at a time, every bound checked.
v2 (any stride): parallel over (image, block of 4 output channels, output row);
each staged input value is multiplied into 4 output rows held in L1 (register blocking), the
inner loop runs over the output width with precomputed bounds so LLVM vectorises it, and zero
padding is staged per thread: each padded input row is copied once into a small buffer.
v3 (stride 1, registered as ``direct`` with v2 for strides): a band of output rows is one
long row of pitch Wp, so each tap is a single vectorised multiply-add hundreds of elements long;
taps are taken three at a time so each accumulator load/store serves three multiply-adds.
"""
from __future__ import annotations

import numpy as np
import numba
from numba import get_thread_id, njit, prange

from .. import workspace
from ..arith import ceil_div
from ..registry import Algorithm, register
from ..spec import ConvSpec

K_BLOCK = 4  # output channels per task: 4 rows of accumulators stay in L1 and reuse each x load


@njit(cache=True)
def _direct_v1(x, w, out, sh, sw, pt, pl, dh, dw, flip):
    """v1: the textbook loop, one output element at a time (slow, obviously right)."""
    n_img, c_in, h, wid = x.shape
    k_out, _, kh, kw = w.shape
    ho, wo = out.shape[2], out.shape[3]
    for n in range(n_img):
        for k in range(k_out):
            for oh in range(ho):
                for ow in range(wo):
                    acc = 0.0
                    for c in range(c_in):
                        for i in range(kh):
                            ih = oh * sh - pt + i * dh
                            if ih < 0 or ih >= h:  # tap falls in the zero padding
                                continue
                            for j in range(kw):
                                iw = ow * sw - pl + j * dw
                                if iw < 0 or iw >= wid:
                                    continue
                                wi, wj = (kh - 1 - i, kw - 1 - j) if flip else (i, j)
                                acc += x[n, c, ih, iw] * w[k, c, wi, wj]
                    out[n, k, oh, ow] = acc


@njit(inline="always")
def _ow_range(off, sw, wid, wo):
    """Output columns ow whose input column ow*sw + off lies inside [0, wid)."""
    lo = 0 if off >= 0 else (-off + sw - 1) // sw
    last = wid - 1 - off
    hi = 0 if last < 0 else min(wo, last // sw + 1)
    return lo, max(lo, hi)


@njit(cache=True)
def _axpy4(acc, xp, base, sw, w0, w1, w2, w3, length):
    """acc[r, ow] += w_r * xp[ow*sw + base] for 4 rows: one load of x feeds 4 multiply-adds.

    A separate function on purpose: compiled on its own, this loop is vectorised by LLVM;
    written inline in the prange body it stays scalar (aliasing of the captured arrays).
    """
    if sw == 1:  # unit stride: contiguous loads, the case LLVM turns into vector FMAs
        for ow in range(length):
            xv = xp[ow + base]
            acc[0, ow] += w0 * xv
            acc[1, ow] += w1 * xv
            acc[2, ow] += w2 * xv
            acc[3, ow] += w3 * xv
        return
    for ow in range(length):
        xv = xp[ow * sw + base]
        acc[0, ow] += w0 * xv
        acc[1, ow] += w1 * xv
        acc[2, ow] += w2 * xv
        acc[3, ow] += w3 * xv


@njit(cache=True)
def _axpy1(acc, row, xp, base, sw, w0, length):
    if sw == 1:
        for ow in range(length):
            acc[row, ow] += w0 * xp[ow + base]
        return
    for ow in range(length):
        acc[row, ow] += w0 * xp[ow * sw + base]


@njit(parallel=True, cache=True)
def _direct_v2(x, w, out, sh, sw, pt, pl, dh, dw, flip, acc_ws, row_ws):
    """v2: register-blocked over 4 output channels, vectorised over the output width.

    Each thread owns ``acc_ws[thread]`` (4 accumulator rows of width Wo) and ``row_ws[thread]``
    (one zero-padded input row): the inner loops then index both from 0 with no bounds
    clipping, the shape LLVM vectorises (clipped ranges or offset stores stay scalar).
    """
    n_img, c_in, h, wid = x.shape
    k_out, _, kh, kw = w.shape
    ho, wo = out.shape[2], out.shape[3]
    row_len = row_ws.shape[1]
    k_blocks = ceil_div(k_out, K_BLOCK)
    for task in prange(n_img * k_blocks * ho):
        oh = task % ho
        n = task // (ho * k_blocks)
        k0 = ((task // ho) % k_blocks) * K_BLOCK
        nk = min(K_BLOCK, k_out - k0)
        tid = get_thread_id()
        acc = acc_ws[tid]
        xp = row_ws[tid]
        acc[:, :] = 0.0
        for c in range(c_in):
            for i in range(kh):
                ih = oh * sh - pt + i * dh
                if ih < 0 or ih >= h:  # whole kernel row lies in the zero padding
                    continue
                # stage the padded input row once; all kw taps of this row read it
                for q in range(row_len):
                    iw = q - pl
                    xp[q] = x[n, c, ih, iw] if 0 <= iw < wid else 0.0
                wi = kh - 1 - i if flip else i
                for j in range(kw):
                    wj = kw - 1 - j if flip else j
                    base = j * dw
                    if nk == K_BLOCK:
                        _axpy4(acc, xp, base, sw, w[k0, c, wi, wj], w[k0 + 1, c, wi, wj],
                               w[k0 + 2, c, wi, wj], w[k0 + 3, c, wi, wj], wo)
                    else:  # the last, partial block of output channels
                        for kk in range(nk):
                            _axpy1(acc, kk, xp, base, sw, w[k0 + kk, c, wi, wj], wo)
        for kk in range(nk):
            for ow in range(wo):
                out[n, k0 + kk, oh, ow] = acc[kk, ow]


@njit(inline="always")
def _tap(j, kw, flip):
    """Kernel column read for tap j (rotated for true convolution)."""
    return kw - 1 - j if flip else j


@njit(cache=True, fastmath={"contract"})
def _taps3_k4(acc, xp, base, dw, length, a0, a1, a2, b0, b1, b2, c0, c1, c2, d0, d1, d2):
    """Three neighbouring taps for four output channels in one pass over the wide row: each
    accumulator is loaded and stored once per 3 multiply-adds instead of once per 1.
    (fastmath "contract" only lets LLVM fuse multiply and add; no other IEEE rule is relaxed.)"""
    for t in range(length):
        x0 = xp[base + t]
        x1 = xp[base + dw + t]
        x2 = xp[base + 2 * dw + t]
        acc[0, t] += a0 * x0 + a1 * x1 + a2 * x2
        acc[1, t] += b0 * x0 + b1 * x1 + b2 * x2
        acc[2, t] += c0 * x0 + c1 * x1 + c2 * x2
        acc[3, t] += d0 * x0 + d1 * x1 + d2 * x2


@njit(cache=True, fastmath={"contract"})
def _taps3_k1(acc, row, xp, base, dw, length, a0, a1, a2):
    for t in range(length):
        acc[row, t] += a0 * xp[base + t] + a1 * xp[base + dw + t] + a2 * xp[base + 2 * dw + t]


@njit(parallel=True, cache=True)
def _direct_v3(x, w, out, pt, pl, dh, dw, flip, band, acc_ws, stage_ws):
    """v3 (stride 1): a band of output rows computed as one long "wide" row of pitch Wp.

    With stride 1, output (oh, ow) of the band reads staged input (oh + i*dh)*Wp + ow + j*dw,
    so each tap is one contiguous multiply-add of length band*Wp (Wp - Wo garbage columns per
    row are computed and dropped). Long vector loops instead of Wo-long ones is what makes small
    images (14x14, 32x32) fast.
    """
    n_img, c_in, h, wid = x.shape
    k_out, _, kh, kw = w.shape
    ho, wo = out.shape[2], out.shape[3]
    pitch = wo + dw * (kw - 1)  # Wp: the padded input width, = Wo + ekw - 1 at stride 1
    stage_rows = band + dh * (kh - 1)
    k_blocks = ceil_div(k_out, K_BLOCK)
    n_bands = ceil_div(ho, band)
    for task in prange(n_img * k_blocks * n_bands):
        oh0 = (task % n_bands) * band
        n = task // (n_bands * k_blocks)
        k0 = ((task // n_bands) % k_blocks) * K_BLOCK
        nk = min(K_BLOCK, k_out - k0)
        rows = min(band, ho - oh0)
        length = rows * pitch
        tid = get_thread_id()
        acc = acc_ws[tid]
        xp = stage_ws[tid]
        acc[:, :length] = 0.0
        for c in range(c_in):
            # stage the zero-padded input rows of this band once; every tap reads them
            for r in range(rows + dh * (kh - 1)):
                ih = oh0 + r - pt
                for q in range(pitch):
                    iw = q - pl
                    inside = 0 <= ih < h and 0 <= iw < wid
                    xp[r * pitch + q] = x[n, c, ih, iw] if inside else 0.0
            # the last taps of the last row read up to dw*(kw-1) cells past the rows: zeros
            for q in range((rows + dh * (kh - 1)) * pitch, stage_rows * pitch + dw * (kw - 1)):
                xp[q] = 0.0
            for i in range(kh):
                wi = kh - 1 - i if flip else i
                j = 0
                while j < kw:
                    base = i * dh * pitch + j * dw
                    if kw - j >= 3:  # three taps per pass: 3 loads of x feed 12 multiply-adds
                        j0, j1, j2 = _tap(j, kw, flip), _tap(j + 1, kw, flip), _tap(j + 2, kw, flip)
                        if nk == K_BLOCK:
                            _taps3_k4(acc, xp, base, dw, length,
                                      w[k0, c, wi, j0], w[k0, c, wi, j1], w[k0, c, wi, j2],
                                      w[k0 + 1, c, wi, j0], w[k0 + 1, c, wi, j1],
                                      w[k0 + 1, c, wi, j2], w[k0 + 2, c, wi, j0],
                                      w[k0 + 2, c, wi, j1], w[k0 + 2, c, wi, j2],
                                      w[k0 + 3, c, wi, j0], w[k0 + 3, c, wi, j1],
                                      w[k0 + 3, c, wi, j2])
                        else:
                            for kk in range(nk):
                                _taps3_k1(acc, kk, xp, base, dw, length, w[k0 + kk, c, wi, j0],
                                          w[k0 + kk, c, wi, j1], w[k0 + kk, c, wi, j2])
                        j += 3
                        continue
                    wj = _tap(j, kw, flip)
                    if nk == K_BLOCK:
                        _axpy4(acc, xp, base, 1, w[k0, c, wi, wj], w[k0 + 1, c, wi, wj],
                               w[k0 + 2, c, wi, wj], w[k0 + 3, c, wi, wj], length)
                    else:
                        for kk in range(nk):
                            _axpy1(acc, kk, xp, base, 1, w[k0 + kk, c, wi, wj], length)
                    j += 1
        for kk in range(nk):
            for r in range(rows):
                for ow in range(wo):
                    out[n, k0 + kk, oh0 + r, ow] = acc[kk, r * pitch + ow]


WIDE_ROW_TARGET = 2048  # elements per wide row: 4 accumulator rows of float32 fill ~32 KiB (L1)


def band_rows(spec: ConvSpec, threads: int) -> int:
    """Output rows per v3 task: about WIDE_ROW_TARGET elements, but enough tasks for all threads."""
    ho = spec.out_size[0]
    pitch = spec.padded_size[1]
    band = max(1, min(ho, WIDE_ROW_TARGET // pitch))
    tasks_per_band = spec.n * ceil_div(spec.k, K_BLOCK)
    while band > 1 and tasks_per_band * ceil_div(ho, band) < 4 * threads:
        band = (band + 1) // 2
    return band


def _scratch_shapes(spec: ConvSpec) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Per-thread scratch: accumulator rows and the staged (zero-padded) input."""
    threads = numba.config.NUMBA_NUM_THREADS
    ekh, ekw = spec.effective_kernel
    if spec.stride == (1, 1):
        band, pitch = band_rows(spec, threads), spec.padded_size[1]
        return (threads, K_BLOCK, band * pitch), (threads, (band + ekh - 1) * pitch + ekw - 1)
    wo = spec.out_size[1]
    return (threads, K_BLOCK, wo), (threads, (wo - 1) * spec.stride[1] + ekw)


def direct_workspace_bytes(spec: ConvSpec) -> int:
    """Per-thread scratch: 4 accumulator rows and the staged padded input, per thread."""
    acc, stage = _scratch_shapes(spec)
    return workspace.nbytes(acc, spec.dtype) + workspace.nbytes(stage, spec.dtype)


def direct_conv2d(x: np.ndarray, w: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """Direct convolution: v3 for stride 1, v2 otherwise; any padding, dilation and flip."""
    out = np.empty(spec.out_shape, dtype=x.dtype)
    acc_shape, stage_shape = _scratch_shapes(spec)
    acc = workspace.empty(acc_shape, x.dtype)
    stage = workspace.empty(stage_shape, x.dtype)
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    pt, pl = spec.pad[0], spec.pad[2]
    if spec.stride == (1, 1):
        band = band_rows(spec, numba.config.NUMBA_NUM_THREADS)
        _direct_v3(x, w, out, pt, pl, dh, dw, spec.flip, band, acc, stage)
    else:
        _direct_v2(x, w, out, sh, sw, pt, pl, dh, dw, spec.flip, acc, stage)
    return out


def direct_conv2d_v1(x: np.ndarray, w: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """The one-element-at-a-time loop (v1), kept as a readable reference."""
    out = np.empty(spec.out_shape, dtype=x.dtype)
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    _direct_v1(x, w, out, sh, sw, spec.pad[0], spec.pad[2], dh, dw, spec.flip)
    return out


def direct_cost_features(spec: ConvSpec) -> list[float]:
    """v3 (stride 1) and v2 (strided) are different loops, so each has its own terms:
    multiply-adds in blocks of 4 output channels and in the remainder (3 loads feed 12
    multiply-adds, or 3), staged input values (each band restages its kernel-height halo),
    calls of the inner vector loop (a fixed cost each, which dominates on small images), and
    outputs written."""
    n, c, k = spec.n, spec.c, spec.k
    ho, wo = spec.out_size
    ekh, ekw = spec.effective_kernel
    k_blocks = ceil_div(k, K_BLOCK)
    taps = c * spec.kh * spec.kw
    v3 = [0.0] * 4
    v2 = [0.0] * 3
    if spec.stride == (1, 1):  # wide rows of pitch Wp
        pitch = spec.padded_size[1]
        band = band_rows(spec, numba.config.NUMBA_NUM_THREADS)
        n_bands = ceil_div(ho, band)
        v3 = [n * (k // K_BLOCK) * K_BLOCK * taps * ho * pitch,
              n * (k % K_BLOCK) * taps * ho * pitch,
              n * k_blocks * n_bands * c * (band + ekh - 1) * pitch,
              n * k_blocks * n_bands * c * spec.kh * ceil_div(spec.kw, 3)]
    else:
        row_len = (wo - 1) * spec.stride[1] + ekw
        v2 = [n * k * taps * ho * wo, n * k_blocks * ho * c * spec.kh * row_len,
              n * k_blocks * ho * taps]
    return [1.0, *v3, *v2, n * k * ho * wo]


register(Algorithm(
    name="direct", op="conv2d", device="cpu", run=direct_conv2d,
    workspace_bytes=direct_workspace_bytes, cost_features=direct_cost_features,
    rough_cost=lambda spec: float(spec.flops),
    description="nested loops, parallel over image x 4-channel block x row, vectorised rows",
))
