"""Depthwise convolution on the CPU (groups = C: each input channel convolved with its own
K/C kernels), written for what it is: memory-bound, one pass per plane.

Each task computes one output plane as one long "wide row", so each tap is a single
vectorised multiply-add over the whole plane: a 3x3 kernel in one pass (the accumulator stored
once per output), other kernels three taps per pass (one load and store of the accumulator per
three multiply-adds); the bias is the accumulator's starting value. Loops over
one image row (56 values, say) are too short to vectorise well, and every view costs atomic
reference counting, so neither appears per row.

* Same width (stride 1, horizontal padding pl + pr = the kernel's reach, as in 3x3 pad 1, the
  common case): the plane is staged with its padding rows only (one contiguous copy, pitch W)
  and the taps accumulate straight into the output plane, whose pitch is also W. A tap that
  leaves the image sideways wraps into the neighbouring row, so the pl + pr edge columns are
  then recomputed from the valid taps only (strided, but independent iterations).
* Otherwise: the zero-padded plane is staged as rows of pitch Wp = W + pl + pr, the taps run
  over a per-thread accumulator of the stride-1 result's rows up to the last one sampled, and
  every stride-th row and column is read out: more multiply-adds when strided, but no strided
  reads.

Any padding, dilation, stride and flip; K = C * multiplier.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import get_thread_id, njit, prange

from .. import workspace
from ..bias import kernel_bias
from ..registry import Algorithm, register
from ..spec import ConvSpec


@njit(cache=True, fastmath={"contract"})
def _taps3(acc, xp, base, step, w0, w1, w2, length):
    """acc[t] += w0*xp[base + t] + w1*xp[base + step + t] + w2*xp[base + 2*step + t], read
    through views so every index is provably non-negative (Numba wraps negative indices, and
    that check keeps a loop from vectorising)."""
    p0, p1, p2 = xp[base:], xp[base + step:], xp[base + 2 * step:]
    for t in range(length):
        acc[t] += w0 * p0[t] + w1 * p1[t] + w2 * p2[t]


@njit(cache=True, fastmath={"contract"})
def _tap(acc, xp, base, w0, length):
    p0 = xp[base:]
    for t in range(length):
        acc[t] += w0 * p0[t]


@njit(cache=True, fastmath={"contract"})
def _taps9(acc, flat, pitch, dh, dw, wk, flip, bias, length):
    """A 3x3 kernel in one pass: acc[t] = bias + the nine taps, so the accumulator is written
    once instead of loaded and stored per kernel row. The taps index one array at unsigned
    offsets (nine views would be nine pointers: more than LLVM checks for overlap before it
    vectorises a loop, and a signed index adds a wrap-around select per load)."""
    c, r1, r2 = np.uint64(dw), np.uint64(dh * pitch), np.uint64(2 * dh * pitch)
    c2 = c + c
    acc[0] = bias  # read back in the array's type: a float64 bias would widen every sum
    b0 = acc[0]
    k = wk[::-1, ::-1] if flip else wk[:, :]
    w00, w01, w02 = k[0, 0], k[0, 1], k[0, 2]
    w10, w11, w12 = k[1, 0], k[1, 1], k[1, 2]
    w20, w21, w22 = k[2, 0], k[2, 1], k[2, 2]
    for s in range(length):
        t = np.uint64(s)
        acc[t] = (b0 + w00 * flat[t] + w01 * flat[t + c] + w02 * flat[t + c2]
                  + w10 * flat[t + r1] + w11 * flat[t + r1 + c] + w12 * flat[t + r1 + c2]
                  + w20 * flat[t + r2] + w21 * flat[t + r2 + c] + w22 * flat[t + r2 + c2])


@njit(cache=True, fastmath={"contract"})
def _any_taps(acc, flat, wk, pitch, dh, dw, flip, bias, length):
    """Any kernel (kh, kw): 3x3 in one pass, others three taps per pass along each kernel row,
    then the rest one by one."""
    kh, kw = wk.shape
    if kh == 3 and kw == 3:
        _taps9(acc, flat, pitch, dh, dw, wk, flip, bias, length)
        return
    acc[:length] = bias
    for i in range(kh):
        wi = kh - 1 - i if flip else i
        j = 0
        while j < kw:
            base = i * dh * pitch + j * dw
            if kw - j >= 3:
                _taps3(acc, flat, base, dw, wk[wi, kw - 1 - j if flip else j],
                       wk[wi, kw - 2 - j if flip else j + 1],
                       wk[wi, kw - 3 - j if flip else j + 2], length)
                j += 3
            else:
                _tap(acc, flat, base, wk[wi, kw - 1 - j if flip else j], length)
                j += 1


@njit(parallel=True, cache=True)
def _depthwise(x, w, out, sh, sw, pt, pl, dh, dw, flip, b, stage_ws, acc_ws):
    n_img, c_in, h, wid = x.shape
    k_out, _, kh, kw = w.shape
    ho, wo = out.shape[2], out.shape[3]
    mult = k_out // c_in
    hp, pitch = stage_ws.shape[1], stage_ws.shape[2]
    rows1 = acc_ws.shape[1] // pitch  # rows of the stride-1 result the output samples
    for task in prange(n_img * k_out):
        n, k = task // k_out, task % k_out
        c = k // mult  # the one input channel of this output channel's group
        xp = stage_ws[get_thread_id()]
        acc = acc_ws[get_thread_id()]
        # stage the zero-padded plane as rows of pitch Wp; only the padding is zeroed, the
        # image rows are copied over (the last, spare row catches the wide taps' overreach).
        # Flat views and unsigned offsets: no view per row (each costs reference counting)
        # and no negative-index wrap to rule out per element.
        top, bottom = max(0, min(pt, hp)), min(hp, pt + h)
        cols = min(wid, pitch - pl)
        flat = xp.reshape(hp * pitch)
        src = x[n, c].reshape(h * wid)
        flat[:top * pitch] = 0.0
        flat[bottom * pitch:] = 0.0
        for r in range(top, bottom):
            start = np.uint64(r * pitch)
            for q in range(pl):
                flat[start + np.uint64(q)] = 0.0
            for q in range(pl + cols, pitch):
                flat[start + np.uint64(q)] = 0.0
            first = start + np.uint64(pl)
            origin = np.uint64((r - pt) * wid)
            for q in range(cols):
                flat[first + np.uint64(q)] = src[origin + np.uint64(q)]
        length = rows1 * pitch
        _any_taps(acc, flat, w[k, 0], pitch, dh, dw, flip, b[k] if b.shape[0] else 0.0, length)
        # read out: every sh-th row and sw-th column of the stride-1 result
        plane = out[n, k].reshape(ho * wo)
        step = np.uint64(sw)
        for oh in range(ho):
            origin = np.uint64(oh * sh * pitch)
            row = np.uint64(oh * wo)
            for ow in range(wo):
                plane[row + np.uint64(ow)] = acc[origin + np.uint64(ow) * step]


@njit(parallel=True, cache=True)
def _depthwise_same_width(x, w, out, pt, pl, dh, dw, flip, b, stage_ws):
    n_img, c_in, h, wid = x.shape
    k_out, _, kh, kw = w.shape
    ho = out.shape[2]
    mult = k_out // c_in
    length = ho * wid
    image = np.uint64(pl + pt * wid)  # where the image starts in the staged plane
    image_end = image + np.uint64(h * wid)
    pr = (kw - 1) * dw - pl
    for task in prange(n_img * k_out):
        n, k = task // k_out, task % k_out
        c = k // mult
        flat = stage_ws[get_thread_id()]
        src = x[n, c].reshape(h * wid)
        for q in range(image):
            flat[np.uint64(q)] = 0.0
        for q in range(h * wid):
            flat[image + np.uint64(q)] = src[np.uint64(q)]
        for q in range(image_end, flat.shape[0]):
            flat[np.uint64(q)] = 0.0
        plane = out[n, k].reshape(length)
        wk = w[k, 0]
        bias = b[k] if b.shape[0] else 0.0
        _any_taps(plane, flat, wk, wid, dh, dw, flip, bias, length)
        # the edge columns again, from the taps that stay inside the image
        for ow in range(wid):
            if pl <= ow < wid - pr:
                continue
            for oh in range(ho):
                plane[np.uint64(oh * wid + ow)] = bias
            for j in range(kw):
                col = ow + j * dw - pl
                if col < 0 or col >= wid:
                    continue
                for i in range(kh):
                    tap = wk[kh - 1 - i if flip else i, kw - 1 - j if flip else j]
                    reach = np.uint64(ow + i * dh * wid + j * dw)
                    for oh in range(ho):
                        at = np.uint64(oh * wid)
                        plane[at + np.uint64(ow)] += tap * flat[at + reach]


def _same_width(spec: ConvSpec) -> bool:
    return spec.stride == (1, 1) and spec.out_size[1] == spec.w


def supports(spec: ConvSpec) -> bool:
    return spec.depthwise


def _shapes(spec: ConvSpec) -> tuple[tuple[int, int, int], tuple[int, int]]:
    """Per-thread staged plane (rows of pitch Wp, one spare row for the wide taps' reach) and
    the wide accumulator row: the stride-1 result's rows up to the last one sampled."""
    threads = numba.config.NUMBA_NUM_THREADS
    ho, _ = spec.out_size
    hp, pitch = spec.padded_size
    rows1 = (ho - 1) * spec.stride[0] + 1
    return (threads, hp + 1, pitch), (threads, rows1 * pitch)


def _same_width_stage(spec: ConvSpec) -> tuple[int, int]:
    """Per thread: the plane with its padding rows, pitch W, and the side reach at both ends."""
    hp, _ = spec.padded_size
    return numba.config.NUMBA_NUM_THREADS, hp * spec.w + (spec.kw - 1) * spec.dilation[1]


def depthwise_workspace_bytes(spec: ConvSpec) -> int:
    """Per thread: the staged plane, and the wide accumulator row unless the layer keeps its
    width."""
    if _same_width(spec):
        return workspace.nbytes(_same_width_stage(spec), spec.dtype)
    stage, acc = _shapes(spec)
    return workspace.nbytes(stage, spec.dtype) + workspace.nbytes(acc, spec.dtype)


def depthwise_conv2d(x: np.ndarray, w: np.ndarray, spec: ConvSpec,
                     b: np.ndarray | None = None) -> np.ndarray:
    """Depthwise convolution, the bias added as the accumulators' start."""
    out = np.empty(spec.out_shape, dtype=x.dtype)
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    b = kernel_bias(b, x.dtype)
    if _same_width(spec):
        stage = workspace.empty(_same_width_stage(spec), x.dtype)
        _depthwise_same_width(x, w, out, spec.pad[0], spec.pad[2], dh, dw, spec.flip, b, stage)
        return out
    stage_shape, acc_shape = _shapes(spec)
    stage = workspace.empty(stage_shape, x.dtype)
    acc = workspace.empty(acc_shape, x.dtype)
    _depthwise(x, w, out, sh, sw, spec.pad[0], spec.pad[2], dh, dw, spec.flip, b, stage, acc)
    return out


def depthwise_cost_features(spec: ConvSpec) -> list[float]:
    """Planes (a fixed cost each), values staged, multiply-adds over the wide rows, outputs
    read out (more of them skipped when strided), edge outputs recomputed."""
    ho, wo = spec.out_size
    planes = spec.n * spec.k
    taps = spec.kh * spec.kw
    if _same_width(spec):
        edges = (spec.pad[2] + spec.pad[3]) * ho
        return [1.0, planes, planes * _same_width_stage(spec)[1], planes * taps * ho * wo,
                0.0, 0.0, planes * taps * edges]
    stage, acc = _shapes(spec)
    return [1.0, planes, planes * stage[1] * stage[2], planes * taps * acc[1],
            planes * ho * wo, planes * ho * wo if spec.stride != (1, 1) else 0.0, 0.0]


register(Algorithm(
    name="depthwise", op="conv2d", device="cpu", run=depthwise_conv2d,
    workspace_bytes=depthwise_workspace_bytes, supports=supports,
    limits="depthwise layers only (groups = C)", cost_features=depthwise_cost_features,
    rough_cost=lambda spec: 4.0 * spec.min_bytes, fused_bias=True, bound_by="memory",
    description="depthwise: one plane per task, the plane as one wide row per tap"))
