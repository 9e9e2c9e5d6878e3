"""Implicit GEMM on the GPU: the im2col GEMM without the unfolded matrix.

out[n, k, oh, ow] = sum_r w[k, r] x(r, (n, oh, ow)) is a GEMM of the weights (K x C*kh*kw) and
the unfolded input ((C*kh*kw) x (N*Ho*Wo)), but the unfolded operand is never written: each
block gathers its slice of it straight from the input through the im2col index map. One launch
covers the whole batch (the pixel axis runs over N*Ho*Wo) and every group (grid z).

A block of ty x tx threads computes a (ty*rm) x (tx*rn) tile of outputs (128 x 128 by default:
16 x 16 threads, 8 x 8 outputs each in registers), walking the reduction in slices of ``depth``
(8) staged in shared memory, double-buffered: while the block multiplies one slice, each thread
holds its loads of the next in registers and stores them to the other buffer afterwards, so one
barrier per slice suffices and global loads overlap arithmetic. A thread's columns are
tx + v*tx_count (consecutive threads, consecutive pixels: coalesced gathers and stores,
conflict-free shared reads). The reduction index r is split into (channel, row offset, column
offset) by a small per-shape table (cached on the device), not by integer division per load:
Numba's integer arithmetic is 64-bit, and a 64-bit division costs dozens of instructions.
Any stride, padding, dilation, flip, groups; the bias is added in the output write.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from numba import cuda

from ..arith import ceil_div
from ..registry import Algorithm, register
from ..spec import ConvSpec
from . import launch
from .arrays import device_empty, host_or_device, numba_type
from .bias import device_bias


@lru_cache(maxsize=None)
def _make_kernel(dtype_name: str, tx_count: int, ty_count: int, rm: int, rn: int, depth: int,
                 has_bias: bool):
    zero = np.dtype(dtype_name).type(0)
    nb_type = numba_type(dtype_name)
    threads = tx_count * ty_count
    bm, bn = ty_count * rm, tx_count * rn  # the block's output tile: channels x pixels
    a_loads = ceil_div(depth * bm, threads)  # weight values each thread stages per slice
    b_loads = ceil_div(depth * bn, threads)  # input values each thread gathers per slice
    if threads % bn:  # then a thread's gathered column would change from load to load
        raise ValueError(f"implicit GEMM: {threads} threads per block must be a multiple of "
                         f"the tile's {bn} pixels")

    @cuda.jit(device=True)
    def gather(x, w2, table, k0, me, q_ok, n_c, ih0, iw0, g, kg, row0, a_next, b_next):
        """This thread's loads of the slice at k0: input values through the index table,
        weights along the reduction (coalesced)."""
        h, wid = x.shape[2], x.shape[3]
        reduction = w2.shape[1]
        for t in range(b_loads):
            kk = (me + t * threads) // bn
            r = k0 + kk
            value = zero
            if q_ok and kk < depth and r < reduction:
                ih = ih0 + table[r, 1]
                iw = iw0 + table[r, 2]
                if 0 <= ih < h and 0 <= iw < wid:
                    value = x[n_c[0], n_c[1] + table[r, 0], ih, iw]
            b_next[t] = value
        for t in range(a_loads):
            idx = me + t * threads
            kk = idx % depth
            m = idx // depth
            r = k0 + kk
            row = row0 + m
            a_next[t] = w2[g * kg + row, r] if m < bm and row < kg and r < reduction else zero

    @cuda.jit(device=True)
    def stage(a_s, b_s, buf, me, col, a_next, b_next):
        for t in range(b_loads):
            kk = (me + t * threads) // bn
            if kk < depth:
                b_s[buf, kk, col] = b_next[t]
        for t in range(a_loads):
            idx = me + t * threads
            m = idx // depth
            if m < bm:
                a_s[buf, idx % depth, m] = a_next[t]

    @cuda.jit
    def implicit_gemm(x, w2, table, bias, out, kg, cg, ho, wo, sh, sw, pt, pl):
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        me = ty * tx_count + tx
        g = cuda.blockIdx.z
        row0 = cuda.blockIdx.y * bm  # first output channel (within the group)
        col0 = cuda.blockIdx.x * bn  # first pixel of the batch
        reduction = w2.shape[1]
        pixels = ho * wo
        total = x.shape[0] * pixels
        a_s = cuda.shared.array((2, depth, bm), nb_type)
        b_s = cuda.shared.array((2, depth, bn), nb_type)
        acc = cuda.local.array((rm, rn), nb_type)
        af = cuda.local.array(rm, nb_type)
        bf = cuda.local.array(rn, nb_type)
        a_next = cuda.local.array(a_loads, nb_type)
        b_next = cuda.local.array(b_loads, nb_type)
        n_c = cuda.local.array(2, np.int64)  # the gathered column's image and first channel
        for u in range(rm):
            for v in range(rn):
                acc[u, v] = zero
        # this thread's gathered column is the same in every slice: decompose it once
        col = me % bn
        q = col0 + col
        q_ok = q < total
        n = q // pixels if q_ok else 0
        p = q - n * pixels
        ih0 = (p // wo) * sh - pt
        iw0 = (p % wo) * sw - pl
        n_c[0] = n
        n_c[1] = g * cg
        gather(x, w2, table, 0, me, q_ok, n_c, ih0, iw0, g, kg, row0, a_next, b_next)
        stage(a_s, b_s, 0, me, col, a_next, b_next)
        cuda.syncthreads()
        buf = 0
        for k0 in range(0, reduction, depth):
            more = k0 + depth < reduction
            if more:  # the next slice's global loads are in flight while this one multiplies
                gather(x, w2, table, k0 + depth, me, q_ok, n_c, ih0, iw0, g, kg, row0,
                       a_next, b_next)
            for kk in range(depth):
                for u in range(rm):
                    af[u] = a_s[buf, kk, ty + u * ty_count]
                for v in range(rn):
                    bf[v] = b_s[buf, kk, tx + v * tx_count]
                for u in range(rm):
                    for v in range(rn):
                        acc[u, v] += af[u] * bf[v]
            if more:
                stage(a_s, b_s, 1 - buf, me, col, a_next, b_next)  # read after the barrier
            cuda.syncthreads()
            buf = 1 - buf
        for v in range(rn):
            qv = col0 + tx + v * tx_count
            if qv < total:
                nv = qv // pixels
                pv = qv - nv * pixels
                for u in range(rm):
                    row = row0 + ty + u * ty_count
                    if row < kg:
                        k = g * kg + row
                        value = acc[u, v]
                        if has_bias:
                            value += bias[k]
                        out[nv, k, pv // wo, pv % wo] = value

    return implicit_gemm


@lru_cache(maxsize=64)
def _offsets(cg: int, kh: int, kw: int, dh: int, dw: int, flip: bool):
    """Device table: for each reduction index r = (c, i, j), the channel and the row and column
    offsets of its tap (flip applied). Cached per shape: 12 bytes per r, made once."""
    c, i, j = np.unravel_index(np.arange(cg * kh * kw), (cg, kh, kw))
    if flip:
        i, j = kh - 1 - i, kw - 1 - j
    return cuda.to_device(np.stack([c, i * dh, j * dw], axis=1).astype(np.int32))


def implicit_gemm_conv2d(x, w, spec: ConvSpec, b=None):
    """One launch: a tile of output channels x batch pixels per block, every group in grid z."""
    g = launch.current()
    tx_count, ty_count = g.igemm_threads
    rm, rn = g.igemm_register_tile
    ho, wo = spec.out_size
    out = device_empty(spec.out_shape, np.dtype(spec.dtype))
    if spec.n == 0:
        return out
    kg, cg = spec.kg, spec.cg
    kernel = _make_kernel(spec.dtype, tx_count, ty_count, rm, rn, g.igemm_depth, b is not None)
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    table = _offsets(cg, spec.kh, spec.kw, dh, dw, spec.flip)
    bias = device_bias(b, spec.dtype)
    blocks = (ceil_div(spec.n * ho * wo, tx_count * rn), ceil_div(kg, ty_count * rm),
              spec.groups)
    kernel[blocks, (tx_count, ty_count)](x, w.reshape(spec.k, cg * spec.kh * spec.kw), table,
                                         bias, out, kg, cg, ho, wo, sh, sw, spec.pad[0],
                                         spec.pad[2])
    return out


def implicit_gemm_cost_features(spec: ConvSpec) -> list[float]:
    """FLOPs of the padded tiles (a tile computes whole even when it overhangs), input values
    gathered (once per output-channel tile), and blocks."""
    g = launch.DEFAULT
    tile_m = g.igemm_threads[1] * g.igemm_register_tile[0]
    tile_n = g.igemm_threads[0] * g.igemm_register_tile[1]
    ho, wo = spec.out_size
    cols = ceil_div(spec.n * ho * wo, tile_n)
    rows = ceil_div(spec.kg, tile_m)
    depth = spec.cg * spec.kh * spec.kw
    blocks = cols * rows * spec.groups
    return [1.0, 2.0 * blocks * tile_m * tile_n * depth, blocks * tile_n * depth, blocks]


register(Algorithm(
    name="implicit_gemm", op="conv2d", device="cuda",
    run=host_or_device(implicit_gemm_conv2d), workspace_bytes=lambda spec: 0,
    cost_features=implicit_gemm_cost_features, rough_cost=lambda s: 1.2 * s.flops,
    bound_by="blas", fused_bias=True,
    description="implicit GEMM: im2col gathered into shared memory, 8x8 register tiles, "
                "double-buffered slices, one launch"))
