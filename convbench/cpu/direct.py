"""Direct 2-D convolution on the CPU: nested loops over the output, the reference algorithm.

Every version handles channel groups natively (a task's block of output channels lies inside
one group and reads only that group's input channels) and adds the bias in its output write.

v1 (kept, teaching and float64 reference): one output element at a time, every bound checked.
v2 (any stride): parallel over (image, block of 4 output channels, output row);
each staged input value is multiplied into 4 output rows held in L1 (register blocking), the
inner loop runs over the output width with precomputed bounds so LLVM vectorises it, and zero
padding is staged per thread: each padded input row is copied once into a small buffer.
v3 (stride 1, registered as ``direct``): a band of output rows is one long row of pitch Wp,
so each tap is a single vectorised multiply-add hundreds of elements long; taps are taken five
(then three) at a time so each accumulator load/store serves five multiply-adds.
Strided layers (dilation 1) run v3 too, on their space-to-depth form: the padded input split
into its stride x stride phases as channels, the kernel's taps distributed over them, which
turns the strided convolution into a stride-1 one with a ceil(k/s) kernel (one copy of the
input, then long vector rows instead of short strided ones). v2 remains for strided, dilated
layers.
"""
from __future__ import annotations

import numpy as np
import numba
from numba import get_thread_id, njit, prange

from .. import workspace
from ..bias import kernel_bias
from ..arith import ceil_div
from ..registry import Algorithm, register
from ..spec import ConvSpec
from .staging.phases import phase_spec, phase_weights, phased, split_phases
from .staging.rows import stage_row

K_BLOCK = 4  # output channels per task: 4 rows of accumulators stay in L1 and reuse each x load


@njit(cache=True)
def _direct_v1(x, w, out, sh, sw, pt, pl, dh, dw, flip, groups, b):
    """v1: the textbook loop, one output element at a time (slow, obviously right)."""
    n_img, _, h, wid = x.shape
    k_out, cg, kh, kw = w.shape
    kg = k_out // groups
    ho, wo = out.shape[2], out.shape[3]
    for n in range(n_img):
        for k in range(k_out):
            c0 = (k // kg) * cg  # the first input channel of k's group
            for oh in range(ho):
                for ow in range(wo):
                    acc = b[k] if b.shape[0] else 0.0
                    for c in range(cg):
                        for i in range(kh):
                            ih = oh * sh - pt + i * dh
                            if ih < 0 or ih >= h:  # tap falls in the zero padding
                                continue
                            for j in range(kw):
                                iw = ow * sw - pl + j * dw
                                if iw < 0 or iw >= wid:
                                    continue
                                wi, wj = (kh - 1 - i, kw - 1 - j) if flip else (i, j)
                                acc += x[n, c0 + c, ih, iw] * w[k, c, wi, wj]
                    out[n, k, oh, ow] = acc


@njit(cache=True)
def _axpy4(acc, xp, base, sw, w0, w1, w2, w3, length):
    """acc[r, ow] += w_r * xp[ow*sw + base] for 4 rows: one load of x feeds 4 multiply-adds.

    A separate function on purpose: compiled on its own, this loop is vectorised by LLVM;
    written inline in the prange body it stays scalar (aliasing of the captured arrays).
    The input is read through a view starting at ``base``: Numba wraps negative indices, and
    only an index the compiler can prove non-negative lets it vectorise the loop (an index
    base + t, with base a run-time value, cost 8x).
    """
    xb = xp[base:]
    if sw == 1:  # unit stride: contiguous loads, the case LLVM turns into vector FMAs
        for ow in range(length):
            xv = xb[ow]
            acc[0, ow] += w0 * xv
            acc[1, ow] += w1 * xv
            acc[2, ow] += w2 * xv
            acc[3, ow] += w3 * xv
        return
    step = np.uint64(sw)  # unsigned: no negative-index wrap to rule out
    for ow in range(length):
        xv = xb[np.uint64(ow) * step]
        acc[0, ow] += w0 * xv
        acc[1, ow] += w1 * xv
        acc[2, ow] += w2 * xv
        acc[3, ow] += w3 * xv


@njit(cache=True)
def _axpy1(acc, row, xp, base, sw, w0, length):
    a, xb = acc[row], xp[base:]  # views: provably non-negative indices (see _axpy4)
    if sw == 1:
        for ow in range(length):
            a[ow] += w0 * xb[ow]
        return
    step = np.uint64(sw)
    for ow in range(length):
        a[ow] += w0 * xb[np.uint64(ow) * step]


@njit(inline="always")
def _block(kb, kbpg, kg, cg):
    """(first output channel, channel count, first input channel) of block ``kb``: blocks of
    K_BLOCK output channels never straddle a group (kbpg blocks per group)."""
    g = kb // kbpg
    k0 = g * kg + (kb % kbpg) * K_BLOCK
    return k0, min(K_BLOCK, (g + 1) * kg - k0), g * cg


@njit(inline="always")
def _write(out, acc, n, k0, nk, oh, wo, col0, b):
    """out[n, k0 + kk, oh, ow] = acc[kk, col0 + ow] (+ the bias)."""
    for kk in range(nk):
        if b.shape[0]:  # (a 0.0 default would make the sum float64, converted per element)
            bias = b[k0 + kk]
            for ow in range(wo):
                out[n, k0 + kk, oh, ow] = acc[kk, col0 + ow] + bias
        else:
            for ow in range(wo):
                out[n, k0 + kk, oh, ow] = acc[kk, col0 + ow]


@njit(parallel=True, cache=True)
def _direct_v2(x, w, out, sh, sw, pt, pl, dh, dw, flip, groups, b, acc_ws, row_ws):
    """v2: register-blocked over 4 output channels, vectorised over the output width.

    Each thread owns ``acc_ws[thread]`` (4 accumulator rows of width Wo) and ``row_ws[thread]``
    (one zero-padded input row): the inner loops then index both from 0 with no bounds
    clipping, the shape LLVM vectorises (clipped ranges or offset stores stay scalar).
    """
    n_img, _, h, wid = x.shape
    k_out, cg, kh, kw = w.shape
    ho, wo = out.shape[2], out.shape[3]
    row_len = row_ws.shape[1]
    kg = k_out // groups
    kbpg = ceil_div(kg, K_BLOCK)
    k_blocks = groups * kbpg
    for task in prange(n_img * k_blocks * ho):
        oh = task % ho
        n = task // (ho * k_blocks)
        k0, nk, c0 = _block((task // ho) % k_blocks, kbpg, kg, cg)
        tid = get_thread_id()
        acc = acc_ws[tid]
        xp = row_ws[tid]
        acc[:, :] = 0.0
        for c in range(cg):
            for i in range(kh):
                ih = oh * sh - pt + i * dh
                if ih < 0 or ih >= h:  # whole kernel row lies in the zero padding
                    continue
                # stage the padded input row once; all kw taps of this row read it
                for q in range(row_len):
                    iw = q - pl
                    xp[q] = x[n, c0 + c, ih, iw] if 0 <= iw < wid else 0.0
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
        _write(out, acc, n, k0, nk, oh, wo, 0, b)


@njit(inline="always")
def _tap(j, kw, flip):
    """Kernel column read for tap j (rotated for true convolution)."""
    return kw - 1 - j if flip else j


@njit(cache=True, fastmath={"contract"})
def _taps3_k4(acc, xp, base, dw, length, a0, a1, a2, b0, b1, b2, c0, c1, c2, d0, d1, d2):
    """Three neighbouring taps for four output channels in one pass over the wide row: each
    accumulator is loaded and stored once per 3 multiply-adds instead of once per 1.
    (fastmath "contract" only lets LLVM fuse multiply and add; no other IEEE rule is relaxed.)"""
    p0, p1, p2 = xp[base:], xp[base + dw:], xp[base + 2 * dw:]  # views: see _axpy4
    for t in range(length):
        x0 = p0[t]
        x1 = p1[t]
        x2 = p2[t]
        acc[0, t] += a0 * x0 + a1 * x1 + a2 * x2
        acc[1, t] += b0 * x0 + b1 * x1 + b2 * x2
        acc[2, t] += c0 * x0 + c1 * x1 + c2 * x2
        acc[3, t] += d0 * x0 + d1 * x1 + d2 * x2


@njit(cache=True, fastmath={"contract"})
def _taps5_k4(acc, xp, base, dw, length, a0, a1, a2, a3, a4, b0, b1, b2, b3, b4,
              c0, c1, c2, c3, c4, d0, d1, d2, d3, d4):
    """Five neighbouring taps for four output channels in one pass: 5 loads of x feed 20
    multiply-adds per accumulator load and store (a 5x5 kernel row in one pass instead of
    three). One view read at unsigned offsets: five views would be five more pointers for LLVM
    to check for overlap before it vectorises."""
    xb = xp[base:]
    s1 = np.uint64(dw)
    s2, s3, s4 = s1 + s1, s1 + s1 + s1, s1 + s1 + s1 + s1
    for i in range(length):
        t = np.uint64(i)
        x0, x1, x2, x3, x4 = xb[t], xb[t + s1], xb[t + s2], xb[t + s3], xb[t + s4]
        acc[0, t] += a0 * x0 + a1 * x1 + a2 * x2 + a3 * x3 + a4 * x4
        acc[1, t] += b0 * x0 + b1 * x1 + b2 * x2 + b3 * x3 + b4 * x4
        acc[2, t] += c0 * x0 + c1 * x1 + c2 * x2 + c3 * x3 + c4 * x4
        acc[3, t] += d0 * x0 + d1 * x1 + d2 * x2 + d3 * x3 + d4 * x4


@njit(cache=True, fastmath={"contract"})
def _taps5_k1(acc, row, xp, base, dw, length, a0, a1, a2, a3, a4):
    a, xb = acc[row], xp[base:]
    s1 = np.uint64(dw)
    s2, s3, s4 = s1 + s1, s1 + s1 + s1, s1 + s1 + s1 + s1
    for i in range(length):
        t = np.uint64(i)
        a[t] += (a0 * xb[t] + a1 * xb[t + s1] + a2 * xb[t + s2] + a3 * xb[t + s3]
                 + a4 * xb[t + s4])


@njit(cache=True, fastmath={"contract"})
def _taps3_k1(acc, row, xp, base, dw, length, a0, a1, a2):
    a, p0, p1, p2 = acc[row], xp[base:], xp[base + dw:], xp[base + 2 * dw:]  # see _axpy4
    for t in range(length):
        a[t] += a0 * p0[t] + a1 * p1[t] + a2 * p2[t]


@njit(cache=True)
def _stage_rows(xp, src, h, wid, ih0, count, pitch, pl):
    """xp[r*pitch + q] = image row ih0 + r at column q - pl (zero outside the image), for
    ``count`` rows of the flat plane ``src``."""
    first = max(0, pl)  # staged columns before the image are padding
    cols = max(0, min(wid, pitch - pl))  # image columns that land in the row
    for r in range(count):
        ih = ih0 + r
        if ih < 0 or ih >= h:
            stage_row(xp, r * pitch, pitch, pitch, pitch, src, 0, 1)
        else:
            stage_row(xp, r * pitch, pitch, first, first + cols, src, ih * wid, 1)


@njit(cache=True)
def _taps5(acc, xp, w, base, dw, length, k0, nk, c, wi, j, kw, flip):
    """Taps j..j+4 of kernel row wi (rotated for true convolution) into a block's rows."""
    j0, j1, j2 = _tap(j, kw, flip), _tap(j + 1, kw, flip), _tap(j + 2, kw, flip)
    j3, j4 = _tap(j + 3, kw, flip), _tap(j + 4, kw, flip)
    if nk == K_BLOCK:
        _taps5_k4(acc, xp, base, dw, length,
                  w[k0, c, wi, j0], w[k0, c, wi, j1], w[k0, c, wi, j2], w[k0, c, wi, j3],
                  w[k0, c, wi, j4], w[k0 + 1, c, wi, j0], w[k0 + 1, c, wi, j1],
                  w[k0 + 1, c, wi, j2], w[k0 + 1, c, wi, j3], w[k0 + 1, c, wi, j4],
                  w[k0 + 2, c, wi, j0], w[k0 + 2, c, wi, j1], w[k0 + 2, c, wi, j2],
                  w[k0 + 2, c, wi, j3], w[k0 + 2, c, wi, j4], w[k0 + 3, c, wi, j0],
                  w[k0 + 3, c, wi, j1], w[k0 + 3, c, wi, j2], w[k0 + 3, c, wi, j3],
                  w[k0 + 3, c, wi, j4])
        return
    for kk in range(nk):
        _taps5_k1(acc, kk, xp, base, dw, length, w[k0 + kk, c, wi, j0], w[k0 + kk, c, wi, j1],
                  w[k0 + kk, c, wi, j2], w[k0 + kk, c, wi, j3], w[k0 + kk, c, wi, j4])


@njit(parallel=True, cache=True)
def _direct_v3(x, w, out, pt, pl, dh, dw, flip, groups, b, band, acc_ws, stage_ws):
    """v3 (stride 1): a band of output rows computed as one long "wide" row of pitch Wp.

    With stride 1, output (oh, ow) of the band reads staged input (oh + i*dh)*Wp + ow + j*dw,
    so each tap is one contiguous multiply-add of length band*Wp (Wp - Wo garbage columns per
    row are computed and dropped). Long vector loops instead of Wo-long ones is what makes small
    images (14x14, 32x32) fast.
    """
    n_img, _, h, wid = x.shape
    k_out, cg, kh, kw = w.shape
    ho, wo = out.shape[2], out.shape[3]
    pitch = wo + dw * (kw - 1)  # Wp: the padded input width, = Wo + ekw - 1 at stride 1
    stage_rows = band + dh * (kh - 1)
    kg = k_out // groups
    kbpg = ceil_div(kg, K_BLOCK)
    k_blocks = groups * kbpg
    n_bands = ceil_div(ho, band)
    for task in prange(n_img * k_blocks * n_bands):
        oh0 = (task % n_bands) * band
        n = task // (n_bands * k_blocks)
        k0, nk, c0 = _block((task // n_bands) % k_blocks, kbpg, kg, cg)
        rows = min(band, ho - oh0)
        length = rows * pitch
        tid = get_thread_id()
        acc = acc_ws[tid]
        xp = stage_ws[tid]
        acc[:, :length] = 0.0
        for c in range(cg):
            # stage the zero-padded input rows of this band once; every tap reads them
            _stage_rows(xp, x[n, c0 + c].reshape(h * wid), h, wid, oh0 - pt,
                        rows + dh * (kh - 1), pitch, pl)
            # the last taps of the last row read up to dw*(kw-1) cells past the rows: zeros
            for q in range((rows + dh * (kh - 1)) * pitch, stage_rows * pitch + dw * (kw - 1)):
                xp[q] = 0.0
            for i in range(kh):
                wi = kh - 1 - i if flip else i
                j = 0
                while j < kw:
                    base = i * dh * pitch + j * dw
                    if kw - j >= 5:  # five taps per pass: 5 loads of x feed 20 multiply-adds
                        _taps5(acc, xp, w, base, dw, length, k0, nk, c, wi, j, kw, flip)
                        j += 5
                        continue
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
        for r in range(rows):
            _write(out, acc, n, k0, nk, oh0 + r, wo, r * pitch, b)


WIDE_ROW_TARGET = 2048  # elements per wide row: 4 accumulator rows of float32 fill ~32 KiB (L1)


def band_rows(spec: ConvSpec, threads: int) -> int:
    """Output rows per v3 task: about WIDE_ROW_TARGET elements, but enough tasks for all threads."""
    ho = spec.out_size[0]
    pitch = spec.padded_size[1]
    band = max(1, min(ho, WIDE_ROW_TARGET // pitch))
    tasks_per_band = spec.n * spec.groups * ceil_div(spec.kg, K_BLOCK)
    while band > 1 and tasks_per_band * ceil_div(ho, band) < 4 * threads:
        band = (band + 1) // 2
    return band


def _scratch_shapes(spec: ConvSpec) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Per-thread scratch: accumulator rows and the staged (zero-padded) input."""
    threads = numba.config.NUMBA_NUM_THREADS
    if phased(spec):
        return _scratch_shapes(phase_spec(spec))
    ekh, ekw = spec.effective_kernel
    if spec.stride == (1, 1):
        band, pitch = band_rows(spec, threads), spec.padded_size[1]
        return (threads, K_BLOCK, band * pitch), (threads, (band + ekh - 1) * pitch + ekw - 1)
    wo = spec.out_size[1]
    return (threads, K_BLOCK, wo), (threads, (wo - 1) * spec.stride[1] + ekw)


def direct_workspace_bytes(spec: ConvSpec) -> int:
    """Per-thread scratch: 4 accumulator rows and the staged padded input, per thread; for a
    strided layer also its phases and phase kernel."""
    acc, stage = _scratch_shapes(spec)
    total = workspace.nbytes(acc, spec.dtype) + workspace.nbytes(stage, spec.dtype)
    if phased(spec):
        target = phase_spec(spec)
        sh, sw = spec.stride
        grown = (spec.k, spec.cg, target.kh * sh, target.kw * sw)
        total += (workspace.nbytes(target.x_shape, spec.dtype)
                  + workspace.nbytes(target.w_shape, spec.dtype)
                  + workspace.nbytes(grown, spec.dtype))
    return total


def direct_conv2d(x: np.ndarray, w: np.ndarray, spec: ConvSpec,
                  b: np.ndarray | None = None) -> np.ndarray:
    """Direct convolution: v3 for stride 1, v2 otherwise; any padding, dilation, flip and
    groups, the bias ``b`` added in the output write."""
    out = np.empty(spec.out_shape, dtype=x.dtype)
    b = kernel_bias(b, x.dtype)
    acc_shape, stage_shape = _scratch_shapes(spec)
    acc = workspace.empty(acc_shape, x.dtype)
    stage = workspace.empty(stage_shape, x.dtype)
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    pt, pl = spec.pad[0], spec.pad[2]
    if phased(spec):
        target = phase_spec(spec)
        xs = workspace.empty(target.x_shape, x.dtype)
        split_phases(x, xs, sh, sw, pt, pl)
        band = band_rows(target, numba.config.NUMBA_NUM_THREADS)
        _direct_v3(xs, phase_weights(w, spec, target), out, 0, 0, 1, 1, False, spec.groups,
                   b, band, acc, stage)
    elif spec.stride == (1, 1):
        band = band_rows(spec, numba.config.NUMBA_NUM_THREADS)
        _direct_v3(x, w, out, pt, pl, dh, dw, spec.flip, spec.groups, b, band, acc, stage)
    else:
        _direct_v2(x, w, out, sh, sw, pt, pl, dh, dw, spec.flip, spec.groups, b, acc, stage)
    return out


def direct_conv2d_v1(x: np.ndarray, w: np.ndarray, spec: ConvSpec,
                     b: np.ndarray | None = None) -> np.ndarray:
    """The one-element-at-a-time loop (v1), kept as a readable reference."""
    out = np.empty(spec.out_shape, dtype=x.dtype)
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    _direct_v1(x, w, out, sh, sw, spec.pad[0], spec.pad[2], dh, dw, spec.flip, spec.groups,
               kernel_bias(b, x.dtype))
    return out


def _v3_terms(spec: ConvSpec, ho: int) -> list[float]:
    """v3's work for ``ho`` output rows of ``spec`` (a stride-1 layer): multiply-adds in
    blocks of 4 output channels and in the remainder (5 loads feed 20 multiply-adds, or 5),
    staged input values (each band restages its kernel-height halo), calls of the inner
    vector loop (a fixed cost each, which dominates on small images)."""
    n, c, k = spec.n, spec.cg, spec.k
    ekh = spec.effective_kernel[0]
    taps = c * spec.kh * spec.kw
    k_blocks = spec.groups * ceil_div(spec.kg, K_BLOCK)
    pitch = spec.padded_size[1]
    band = band_rows(spec, numba.config.NUMBA_NUM_THREADS)
    n_bands = ceil_div(ho, band)
    full = spec.groups * (spec.kg // K_BLOCK) * K_BLOCK  # channels in whole blocks
    return [n * full * taps * ho * pitch, n * (k - full) * taps * ho * pitch,
            n * k_blocks * n_bands * c * (band + ekh - 1) * pitch,
            n * k_blocks * n_bands * c * spec.kh * row_passes(spec.kw)]


def row_passes(kw: int) -> int:
    """Vector passes per kernel row in v3: five taps at a time, then three, then one by one."""
    rest = kw % 5
    return kw // 5 + rest // 3 + rest % 3


def direct_cost_features(spec: ConvSpec) -> list[float]:
    """v3 (stride 1, and strided layers on their phases) and v2 (strided and dilated) are
    different loops, so each has its own terms (see _v3_terms; for v2 multiply-adds, staged
    values and calls), then the values copied into phases, and the outputs written."""
    n, k = spec.n, spec.k
    ho, wo = spec.out_size
    v3, v2, phases = [0.0] * 4, [0.0] * 3, 0.0
    if spec.stride == (1, 1):
        v3 = _v3_terms(spec, ho)
    elif phased(spec):
        target = phase_spec(spec)
        v3 = _v3_terms(target, ho)
        phases = float(spec.n * target.c * target.h * target.w)
    else:
        c = spec.cg
        k_blocks = spec.groups * ceil_div(spec.kg, K_BLOCK)
        taps = c * spec.kh * spec.kw
        row_len = (wo - 1) * spec.stride[1] + spec.effective_kernel[1]
        v2 = [n * k * taps * ho * wo, n * k_blocks * ho * c * spec.kh * row_len,
              n * k_blocks * ho * taps]
    return [1.0, *v3, *v2, phases, n * k * ho * wo]


register(Algorithm(
    name="direct", op="conv2d", device="cpu", run=direct_conv2d,
    workspace_bytes=direct_workspace_bytes, cost_features=direct_cost_features, fused_bias=True,
    rough_cost=lambda spec: float(spec.flops),
    description="nested loops, parallel over image x 4-channel block x row, vectorised rows",
))
